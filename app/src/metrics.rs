//! Prometheus metrics, in the text exposition format `/metrics` serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BotLabel {
    pub(crate) bot: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabel {
    pub(crate) bot: String,
    pub(crate) kind: String,
}

/// Every metric the app exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) updates: Family<BotLabel, Counter>,
    pub(crate) messages_sent: Family<BotLabel, Counter>,
    pub(crate) errors: Family<ErrorLabel, Counter>,
    pub(crate) poll_latency: Family<BotLabel, Histogram>,
    pub(crate) bot_up: Family<BotLabel, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("app");
        let updates = Family::<BotLabel, Counter>::default();
        registry.register("updates_handled", "Updates handled, by bot", updates.clone());
        let messages_sent = Family::<BotLabel, Counter>::default();
        registry.register("messages_sent", "Replies delivered to the Bot API, by bot", messages_sent.clone());
        let errors = Family::<ErrorLabel, Counter>::default();
        registry.register("api_errors", "Bot API errors, by bot and kind", errors.clone());
        // Long polls take up to the poll timeout when idle: buckets reach 60 s.
        let poll_latency = Family::<BotLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0])
        });
        registry.register("poll_duration_seconds", "Duration of getUpdates calls", poll_latency.clone());
        let bot_up = Family::<BotLabel, Gauge>::default();
        registry.register("bot_healthy", "1 when the bot is polling or on a webhook, else 0", bot_up.clone());
        Metrics { registry, updates, messages_sent, errors, poll_latency, bot_up }
    }

    pub(crate) fn label(bot: &str) -> BotLabel {
        BotLabel { bot: bot.to_owned() }
    }

    pub(crate) fn error(&self, bot: &str, kind: &str) {
        self.errors.get_or_create(&ErrorLabel { bot: bot.to_owned(), kind: kind.to_owned() }).inc();
    }

    /// The exposition text.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
