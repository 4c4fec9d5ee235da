//! Where desired-state snapshots come from: a git repository (local, watched; or remote,
//! mirrored and fetched) or GitHub's contents API. `run` publishes a new snapshot whenever the
//! branch head moves.

pub mod contents;
pub mod git;
mod watcher;

pub use contents::ContentsSource;
pub use git::{Source, SourceError, redact_url};
use watcher::start_watcher;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::desired::{FileState, Snapshot};
use crate::metrics::Metrics;

/// Where snapshots come from: a git repository (local or remote) or GitHub's contents API.
pub enum Origin {
    Git(Source),
    GitHub(Box<ContentsSource>),
}

impl Origin {
    pub fn display(&self) -> String {
        match self {
            Origin::Git(s) => s.display(),
            Origin::GitHub(g) => g.display(),
        }
    }

    /// A new snapshot if the head moved since `last_revision`.
    async fn poll(&mut self, last_revision: &str) -> Result<Option<Snapshot>, PollError> {
        match self {
            Origin::Git(source) => {
                source.fetch().await?;
                let rev = source.revision().await?;
                if rev == last_revision {
                    return Ok(None);
                }
                // Desired state only moves forward: a force-push to an older or unrelated
                // commit is refused, not deployed.
                if !last_revision.is_empty() && !source.descends_from(&rev, last_revision).await? {
                    return Err(SourceError::Rewritten {
                        repo: source.display(),
                        branch: source.branch().to_string(),
                        from: last_revision.to_string(),
                        to: rev,
                    }
                    .into());
                }
                Ok(Some(source.read(&rev).await?))
            }
            Origin::GitHub(g) => Ok(g.poll().await?),
        }
    }
}

/// Why reading the source failed, with the underlying error as its source.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Git(#[from] SourceError),
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
}

/// State of the source as the rest of the daemon sees it.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    pub snapshot: Option<Arc<Snapshot>>,
    pub error: Option<String>,
    /// Consecutive failed reads.
    pub failures: u32,
}

/// Runs the source: publishes a new snapshot whenever the branch head moves.
/// `trigger` is notified by the file watcher and the webhook; `interval` bounds the wait.
pub async fn run(
    mut origin: Origin,
    interval: Duration,
    trigger: Arc<Notify>,
    tx: watch::Sender<SourceStatus>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    // Keep the watcher alive for the whole loop; dropping it stops watching.
    let _watcher = match &origin {
        Origin::Git(source) if source.is_local() => match source.watch_dir().await {
            Ok(dir) => start_watcher(&dir, trigger.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot find the git directory to watch; polling every interval");
                None
            }
        },
        _ => None,
    };
    let mut last_revision = String::new();
    loop {
        let outcome = origin.poll(&last_revision).await;
        match outcome {
            Ok(Some(snapshot)) => {
                metrics.git_fetches.with_label_values(&["changed"]).inc();
                tracing::info!(revision = %snapshot.revision, environments = snapshot.files.len(), "desired state read");
                for (env, f) in &snapshot.files {
                    if let FileState::Invalid(problems) = f {
                        for p in problems {
                            tracing::warn!(environment = %env, revision = %snapshot.revision, problem = %p, "invalid desired-state file; keeping the last valid state");
                        }
                    }
                }
                last_revision = snapshot.revision.clone();
                tx.send_modify(|s| {
                    s.snapshot = Some(Arc::new(snapshot));
                    s.error = None;
                    s.failures = 0;
                });
            }
            Ok(None) => {
                metrics.git_fetches.with_label_values(&["unchanged"]).inc();
                tx.send_if_modified(|s| {
                    let changed = s.error.is_some();
                    s.error = None;
                    s.failures = 0;
                    changed
                });
            }
            Err(e) => {
                metrics.git_fetches.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "reading the desired-state repository failed; keeping the last state");
                tx.send_modify(|s| {
                    s.error = Some(e.to_string());
                    s.failures += 1;
                });
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = trigger.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
