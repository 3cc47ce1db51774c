//! Prometheus metrics, served by `/metrics` in the Prometheus text format
//! (version 0.0.4), the format its content type announces.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of `render`'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BotLabel {
    pub(crate) bot: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabel {
    pub(crate) bot: String,
    pub(crate) kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ActionLabel {
    pub(crate) bot: String,
    pub(crate) action: String,
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
    pub(crate) replies_queued: Family<BotLabel, Gauge>,
    uncertain: Family<ActionLabel, Counter>,
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
        let replies_queued = Family::<BotLabel, Gauge>::default();
        registry.register("replies_queued", "Replies waiting to be sent or in flight, by bot", replies_queued.clone());
        let uncertain = Family::<ActionLabel, Counter>::default();
        registry.register(
            "replies_uncertain",
            "Replies that may or may not have arrived (request written, no answer), by bot and what the \
             delivery policy did: resent or dropped",
            uncertain.clone(),
        );
        Metrics { registry, updates, messages_sent, errors, poll_latency, bot_up, replies_queued, uncertain }
    }

    pub(crate) fn label(bot: &str) -> BotLabel {
        BotLabel { bot: bot.to_owned() }
    }

    pub(crate) fn error(&self, bot: &str, kind: &str) {
        self.errors.get_or_create(&ErrorLabel { bot: bot.to_owned(), kind: kind.to_owned() }).inc();
    }

    /// Counts `n` replies that may have arrived, by what became of them (`resent` or `dropped`).
    pub(crate) fn uncertain(&self, bot: &str, action: &str, n: u64) {
        self.uncertain.get_or_create(&ActionLabel { bot: bot.to_owned(), action: action.to_owned() }).inc_by(n);
    }

    /// The exposition text, in the format `CONTENT_TYPE` names.
    pub(crate) fn render(&self) -> String {
        let mut open = String::new();
        prometheus_client::encoding::text::encode(&mut open, &self.registry).expect("writing to a String cannot fail");
        prometheus_text(&open)
    }
}

/// The Prometheus text format (0.0.4) of what prometheus-client writes,
/// which is OpenMetrics: a 0.0.4 reader takes `# TYPE x counter` to describe
/// samples named `x`, so counters' HELP and TYPE lines name the samples'
/// `x_total` instead; `# UNIT` and the closing `# EOF` are OpenMetrics only.
/// Sample lines are the same in both.
fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes HELP before TYPE: hold it until TYPE says the kind.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (family, kind) = match kind {
                "counter" => (format!("{name}_total"), kind),
                "unknown" => (name.to_owned(), "untyped"),
                _ => (name.to_owned(), kind),
            };
            if let Some((help_name, text)) = help.take().and_then(|h| h.split_once(' '))
                && help_name == name
            {
                out.push_str(&format!("# HELP {family} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
        } else if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_their_samples_and_openmetrics_lines_go() {
        let m = Metrics::new();
        m.updates.get_or_create(&Metrics::label("alpha")).inc_by(3);
        m.replies_queued.get_or_create(&Metrics::label("alpha")).set(2);
        m.poll_latency.get_or_create(&Metrics::label("alpha")).observe(0.2);
        let text = m.render();
        assert!(
            text.contains(
                "# HELP app_updates_handled_total Updates handled, by bot.\n\
             # TYPE app_updates_handled_total counter\n\
             app_updates_handled_total{bot=\"alpha\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE app_replies_queued gauge\napp_replies_queued{bot=\"alpha\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE app_poll_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("app_poll_duration_seconds_bucket{le=\"0.25\",bot=\"alpha\"} 1\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        // Every HELP and TYPE line names a family whose samples follow it.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(text.lines().any(|l| !l.starts_with('#') && l.starts_with(name)), "no samples of {name}:\n{text}");
        }
    }
}
