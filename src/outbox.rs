//! What the best-effort outbound queues (GitHub reports, notifications) share when the daemon
//! stops: a few seconds for what is still queued, one attempt each, then the rest is dropped
//! and counted, so a hanging endpoint never holds the process past its stop timeout.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a stopping daemon gives queued outbound messages.
pub const DRAIN: Duration = Duration::from_secs(3);

/// `interrupted` (the message in flight when the stop came) and whatever is still queued.
pub fn leftovers<T>(mut interrupted: Vec<T>, rx: &mut mpsc::Receiver<T>) -> Vec<T> {
    while let Ok(m) = rx.try_recv() {
        interrupted.push(m);
    }
    interrupted
}

/// The shutdown window, opened when the stop came.
pub struct Window(Instant);

impl Window {
    pub fn open() -> Window {
        Window(Instant::now() + DRAIN)
    }

    /// Runs `f` if time is left, for at most the time left; `None` when it did not finish.
    pub async fn attempt<F: Future>(&self, f: F) -> Option<F::Output> {
        let left = self.0.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        tokio::time::timeout(left, f).await.ok()
    }
}

/// Says how many of `queued` messages of `what` were dropped, if any.
pub fn report_dropped(what: &str, dropped: usize, queued: usize) {
    if dropped > 0 {
        tracing::warn!(
            dropped,
            queued,
            "shutdown: {what} not delivered within {}s were dropped",
            DRAIN.as_secs()
        );
    }
}
