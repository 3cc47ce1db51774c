//! A small Telegram Bot API client: the few methods the runner needs, with
//! errors classified the way the runner must react to them, and the token
//! kept out of every message.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Token;

/// What went wrong with a call, classified by what the caller must do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// 429: wait this many seconds.
    #[error("rate limited: retry after {0} s")]
    RetryAfter(u64),
    /// 409: another getUpdates consumer, or a webhook is set.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 401 or 404: the token is wrong or revoked. Retrying does not help.
    #[error("token rejected ({code}): {description}")]
    Rejected { code: u16, description: String },
    /// Other 4xx: the request itself is wrong.
    #[error("request refused ({code}): {description}")]
    BadRequest { code: u16, description: String },
    /// 5xx: the server's problem; retry with backoff.
    #[error("server error ({code}): {description}")]
    Server { code: u16, description: String },
    /// No connection (refused, DNS, TLS handshake, connect timeout): the
    /// request never reached the server. Retry with backoff.
    #[error("network error: {0}")]
    Unsent(String),
    /// The connection was dropped or timed out after the request was
    /// written: the server may have carried it out. Retry with backoff,
    /// if retrying is safe.
    #[error("network error: {0}")]
    Network(String),
    /// The answer was not the JSON the Bot API sends. With a 2xx status
    /// the server said it carried the call out, so like `Network` the call
    /// may have taken effect.
    #[error("malformed answer: {detail}")]
    Malformed { status: u16, detail: String },
}

impl ApiError {
    /// A short label for metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ApiError::RetryAfter(_) => "rate_limited",
            ApiError::Conflict(_) => "conflict",
            ApiError::Rejected { .. } => "rejected",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Server { .. } => "server",
            ApiError::Unsent(_) | ApiError::Network(_) => "network",
            ApiError::Malformed { .. } => "malformed",
        }
    }

    /// Whether the call may have been carried out although it failed: the
    /// request was written and no answer said otherwise. Only these are
    /// ambiguous for a send; a refused connection, a 429 or a 5xx answer
    /// says the message was not sent.
    pub(crate) fn may_have_arrived(&self) -> bool {
        match self {
            ApiError::Network(_) => true,
            ApiError::Malformed { status, .. } => (200..300).contains(status),
            _ => false,
        }
    }
}

/// The envelope of every Bot API answer.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    ok: bool,
    result: Option<T>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Debug, Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
}

/// An update, with the parts the runner reads.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Update {
    pub(crate) update_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<Message>,
}

/// A message.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Message {
    pub(crate) message_id: i64,
    pub(crate) chat: Chat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
}

/// A chat.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Chat {
    pub(crate) id: i64,
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
}

/// A user.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct User {
    pub(crate) id: i64,
    #[serde(default)]
    pub(crate) first_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) username: Option<String>,
}

impl User {
    /// How the dashboard names a user.
    pub(crate) fn display(&self) -> String {
        match &self.username {
            Some(u) => format!("@{u}"),
            None => self.first_name.clone(),
        }
    }
}

/// `getMe`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Me {
    #[serde(default)]
    pub(crate) username: Option<String>,
}

/// One bot's connection to the Bot API.
#[derive(Debug)]
pub(crate) struct BotApi {
    http: reqwest::Client,
    /// `<base>/bot<token>/`: holds the token, so it is never printed.
    method_base: Token,
    token: Token,
}

impl BotApi {
    pub(crate) fn new(http: reqwest::Client, base: &reqwest::Url, token: &Token) -> BotApi {
        let base = base.as_str().trim_end_matches('/');
        BotApi {
            http,
            method_base: Token::new(format!("{base}/bot{}/", token.expose())),
            token: Token::new(token.expose().to_owned()),
        }
    }

    /// Calls `method` with a JSON body; `timeout` bounds the whole call.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let url = format!("{}{method}", self.method_base.expose());
        let response = self.http.post(url).json(body).timeout(timeout).send().await.map_err(|e| {
            let detail = self.redact(&describe(&e));
            if e.is_connect() { ApiError::Unsent(detail) } else { ApiError::Network(detail) }
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| {
            let detail = self.redact(&describe(&e));
            // The status line came: a 5xx says the call failed, cut short or not.
            if status >= 500 {
                ApiError::Server { code: status, description: detail }
            } else {
                ApiError::Network(detail)
            }
        })?;
        let envelope: Envelope<T> = match serde_json::from_slice(&bytes) {
            Ok(envelope) => envelope,
            Err(e) if status >= 500 => {
                // Proxies answer 502 with HTML: that is a server error, not a malformed answer.
                let _ = e;
                return Err(ApiError::Server { code: status, description: format!("HTTP {status}") });
            }
            // serde's message can quote the answer; say where it broke, not what it said.
            Err(e) => {
                return Err(ApiError::Malformed {
                    status,
                    detail: format!(
                        "HTTP {status}: not the Bot API's JSON ({:?} error at line {}, column {})",
                        e.classify(),
                        e.line(),
                        e.column()
                    ),
                });
            }
        };
        if envelope.ok {
            return envelope.result.ok_or_else(|| ApiError::Malformed {
                status,
                detail: format!("HTTP {status}: `ok` without `result`"),
            });
        }
        let code = envelope.error_code.unwrap_or(status);
        let description = self.redact(envelope.description.as_deref().unwrap_or("(no description)"));
        Err(match code {
            429 => ApiError::RetryAfter(envelope.parameters.and_then(|p| p.retry_after).unwrap_or(1)),
            409 => ApiError::Conflict(description),
            401 | 404 => ApiError::Rejected { code, description },
            500..=599 => ApiError::Server { code, description },
            _ => ApiError::BadRequest { code, description },
        })
    }

    /// Removes the token from text that may contain it (URLs in errors,
    /// descriptions echoing the request).
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(text, self.token.expose())
    }
}

/// An error of the HTTP client, without its URL (which holds the token).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the answer"
    } else if e.is_request() {
        "request failed"
    } else {
        "HTTP error"
    };
    // The source chain holds the useful part (refused, reset, TLS…); the
    // top-level message is the one that quotes the URL.
    let mut detail = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { kind.to_owned() } else { format!("{kind}: {detail}") }
}

/// Replaces every occurrence of `token` (and of its secret half, after `:`)
/// in `text`.
pub(crate) fn redact(text: &str, token: &str) -> String {
    let mut out = text.replace(token, "<token>");
    if let Some((_, secret)) = token.split_once(':')
        && secret.len() >= 8
    {
        out = out.replace(secret, "<token>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let token = "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
        assert_eq!(
            redact(&format!("error sending request for url (https://x/bot{token}/getUpdates)"), token),
            "error sending request for url (https://x/bot<token>/getUpdates)"
        );
        assert_eq!(redact("…AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw…", token), "…<token>…");
    }
}
