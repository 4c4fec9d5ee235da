//! Wakes the source when a local repository's refs change (a commit), ignoring the daemon's own reads.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Notify;

pub(super) fn start_watcher(
    dir: &Path,
    trigger: Arc<Notify>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let handler = move |res: notify::Result<notify::Event>| {
        // Reads are reported too (inotify's open/access/close-nowrite), and the source's own
        // `git` reads would then wake it again and again: only changes count.
        if let Ok(ev) = res.as_ref()
            && !ev.kind.is_access()
        {
            // Object writes come before the ref update and are many; anything else may be a commit.
            let relevant = ev
                .paths
                .iter()
                .any(|p| !p.to_string_lossy().contains("/objects/"));
            if relevant {
                trigger.notify_one();
            }
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(mut w) => match w.watch(dir, RecursiveMode::Recursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the repository; polling every interval");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; polling every interval");
            None
        }
    }
}
