//! Notifications: one message per transition a `notify` target asked for, to a Slack incoming
//! webhook or a generic JSON endpoint.
//!
//! Messages go into a bounded queue drained by one task, in order: a message is retried with
//! backoff before the next one goes, and a slow or failing endpoint never delays a rollout (a
//! full queue drops, and counts, the message). The URL is a secret: it is read from the named
//! environment variable or file when the message is sent, and never appears in a log line, a
//! metric or the status (errors name the target as `slack-0`, `json-1`, ...).

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::desired::{NotifyFormat, NotifyOn, Release, UrlFrom};
use crate::metrics::Metrics;
use crate::outbox;

const QUEUE: usize = 256;

/// What happened, for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: NotifyOn,
    pub environment: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub release: Release,
    pub last_good: Option<Release>,
    pub source_revision: String,
    pub commit_url: Option<String>,
    pub console_url: String,
    pub alarm_url: Option<String>,
}

/// A message for one target.
#[derive(Debug, Clone)]
pub struct Notification {
    /// `slack-0`, `json-1`: the target's format and place in the file (a metric label).
    pub target: String,
    pub url: UrlFrom,
    pub format: NotifyFormat,
    pub message: Message,
}

#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Notification>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Queues a message; never waits.
    pub fn send(&self, n: Notification) {
        let (env, target) = (n.message.environment.clone(), n.target.clone());
        if self.tx.try_send(n).is_err() {
            self.count(&env, &target, "dropped");
            tracing::warn!(environment = %env, target = %target, "notification queue full; message dropped");
        }
    }

    fn count(&self, env: &str, target: &str, result: &str) {
        self.metrics
            .notifications
            .with_label_values(&[env, target, result])
            .inc();
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("answered {0}")]
    Status(u16),
    #[error("no answer ({0})")]
    Network(&'static str),
    /// Named without the variable's or file's content.
    #[error("the webhook URL's variable or file is empty or missing")]
    NoUrl,
}

impl SendError {
    fn transient(&self) -> bool {
        match self {
            SendError::Status(s) => *s >= 500 || *s == 429,
            SendError::Network(_) => true,
            // Retrying in a second does not make a missing secret appear.
            SendError::NoUrl => false,
        }
    }
}

pub fn notifier(
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<(Notifier, tokio::task::JoinHandle<()>), reqwest::Error> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ecs-gitops/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let n = Notifier { tx, metrics };
    let handle = tokio::spawn(run(client, n.clone(), rx, cancel));
    Ok((n, handle))
}

async fn run(
    client: reqwest::Client,
    n: Notifier,
    mut rx: mpsc::Receiver<Notification>,
    cancel: CancellationToken,
) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(4)
        .with_jitter();
    let mut unsent = Vec::new();
    loop {
        let note = tokio::select! {
            _ = cancel.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let attempt = || deliver(&client, &note);
        let result = tokio::select! {
            r = attempt.retry(backoff).when(SendError::transient) => r,
            _ = cancel.cancelled() => { unsent.push(note); break; }
        };
        report(&n, &note, result);
    }
    let unsent = outbox::leftovers(unsent, &mut rx);
    let window = outbox::Window::open();
    let mut dropped = 0;
    for note in &unsent {
        match window.attempt(deliver(&client, note)).await {
            Some(r) => report(&n, note, r),
            None => {
                dropped += 1;
                n.count(&note.message.environment, &note.target, "dropped");
            }
        }
    }
    outbox::report_dropped("notifications", dropped, unsent.len());
}

fn report(n: &Notifier, note: &Notification, result: Result<(), SendError>) {
    let env = &note.message.environment;
    match result {
        Ok(()) => n.count(env, &note.target, "sent"),
        Err(e) => {
            n.count(env, &note.target, "failed");
            tracing::warn!(environment = %env, target = %note.target, kind = note.message.kind.as_str(), error = %e, "notification not delivered");
        }
    }
}

/// The URL, read now (it may be rotated without a restart).
fn url(from: &UrlFrom) -> Option<String> {
    let s = match from {
        UrlFrom::Env(name) => std::env::var(name).ok()?,
        UrlFrom::File(path) => std::fs::read_to_string(path).ok()?,
    };
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

async fn deliver(client: &reqwest::Client, note: &Notification) -> Result<(), SendError> {
    let Some(url) = url(&note.url) else {
        return Err(SendError::NoUrl);
    };
    let resp = client
        .post(&url)
        .json(&body(note.format, &note.message))
        .send()
        .await
        .map_err(|e| {
            SendError::Network(if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "request failed"
            })
        })?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(SendError::Status(status))
    }
}

/// Slack's incoming-webhook JSON (`text` and `blocks`), or a flat JSON object.
pub fn body(format: NotifyFormat, m: &Message) -> Value {
    match format {
        NotifyFormat::Json => json!({
            "kind": m.kind.as_str(),
            "environment": m.environment,
            "from": m.from,
            "to": m.to,
            "reason": m.reason,
            "release": m.release.as_str(),
            "release_short": m.release.short(),
            "last_good_release": m.last_good.as_ref().map(Release::as_str),
            "source_revision": m.source_revision,
            "commit_url": m.commit_url,
            "console_url": m.console_url,
        }),
        NotifyFormat::Slack => {
            let icon = match m.kind {
                NotifyOn::Verified => ":white_check_mark:",
                NotifyOn::RolledBack | NotifyOn::Rejected => ":rotating_light:",
                NotifyOn::Blocked => ":no_entry:",
                NotifyOn::Deploying => ":rocket:",
            };
            let text = format!(
                "{icon} {}: {} -> {} ({}) release {}{}",
                m.environment,
                m.from.as_deref().unwrap_or("new"),
                m.to,
                m.reason,
                m.release.short(),
                m.last_good
                    .as_ref()
                    .map(|g| format!(", last good {}", g.short()))
                    .unwrap_or_default()
            );
            let mut links = vec![format!("<{}|ECS service>", m.console_url)];
            if let Some(u) = &m.commit_url {
                links.push(format!("<{u}|commit {}>", m.release.short()));
            }
            if let Some(u) = &m.alarm_url {
                links.push(format!("<{u}|alarms>"));
            }
            json!({
                "text": text,
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                    {"type": "context", "elements": [
                        {"type": "mrkdwn", "text": format!("desired state `{}` · {}", &m.source_revision[..m.source_revision.len().min(12)], links.join(" · "))}
                    ]}
                ]
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_url_is_not_retried_and_an_unavailable_endpoint_is() {
        assert!(!SendError::NoUrl.transient());
        assert!(SendError::Status(503).transient());
        assert!(SendError::Status(429).transient());
        assert!(!SendError::Status(404).transient());
        assert!(SendError::Network("timed out").transient());
    }
}
