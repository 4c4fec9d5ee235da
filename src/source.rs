//! The desired-state source: a git repository read with the `git` CLI.
//!
//! Only what is committed at the head of the branch counts, never the working tree: the
//! controller reads blobs from the commit (`git ls-tree` / `git cat-file`), so an edit that is
//! not committed, or a half-written file, is never seen. A local repository is watched with
//! `notify` (a commit changes a ref under `.git`, which wakes the source at once); a remote one
//! is fetched into a private bare mirror every interval and on demand (webhook).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::desired::{self, DesiredState, Problem};
use crate::metrics::Metrics;
use crate::yaml::{Location, MAX_FILE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("git {args} failed: {stderr}")]
    Git { args: String, stderr: String },
    #[error("could not run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(
        "branch `{branch}` not found in {repo}; pass the branch that holds desired-state/ with --branch"
    )]
    NoBranch { repo: String, branch: String },
    #[error("folder `{path}` not found at {revision} of {repo}; pass the folder with --path")]
    NoFolder {
        repo: String,
        path: String,
        revision: String,
    },
}

/// One environment's file at a revision.
#[derive(Debug, Clone)]
pub enum FileState {
    Valid(Box<DesiredState>),
    Invalid(Vec<Problem>),
}

/// The desired state of every environment at one commit.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: String,
    pub files: BTreeMap<String, FileState>,
}

impl Snapshot {
    pub fn valid(&self, env: &str) -> Option<&DesiredState> {
        match self.files.get(env) {
            Some(FileState::Valid(d)) => Some(d),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum RepoPlace {
    Local(PathBuf),
    Remote { url: String, mirror: PathBuf },
}

/// Not `Debug`: a remote URL may carry a token.
#[derive(Clone)]
pub struct Source {
    loc: RepoPlace,
    pub branch: String,
    pub path: String,
}

/// Text with the credentials of any URL in it removed (`https://user:token@host/x` becomes
/// `https://***@host/x`): `--repo` URLs and git's error messages may carry a token.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

impl Source {
    /// `repo` is a local repository path or a remote URL; remotes are mirrored into
    /// `cache_dir`.
    pub fn new(repo: &str, branch: &str, path: &str, cache_dir: &Path) -> Source {
        let local = Path::new(repo);
        let loc = if local.exists() {
            RepoPlace::Local(local.to_path_buf())
        } else {
            RepoPlace::Remote {
                url: repo.to_string(),
                mirror: cache_dir.join("mirror.git"),
            }
        };
        Source {
            loc,
            branch: branch.to_string(),
            path: path.trim_matches('/').to_string(),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.loc, RepoPlace::Local(_))
    }

    pub fn display(&self) -> String {
        match &self.loc {
            RepoPlace::Local(p) => p.display().to_string(),
            RepoPlace::Remote { url, .. } => redact_url(url),
        }
    }

    fn git_dir(&self) -> &Path {
        match &self.loc {
            RepoPlace::Local(p) => p,
            RepoPlace::Remote { mirror, .. } => mirror,
        }
    }

    async fn git(&self, args: &[&str]) -> Result<Vec<u8>, SourceError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.git_dir())
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(SourceError::Spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(SourceError::Git {
                args: args.first().copied().unwrap_or_default().to_string(),
                stderr: redact_url(stderr.trim()).chars().take(300).collect(),
            });
        }
        Ok(out.stdout)
    }

    /// For a remote: fetch the branch into the mirror (created on first use).
    pub async fn fetch(&self) -> Result<(), SourceError> {
        let RepoPlace::Remote { url, mirror } = &self.loc else {
            return Ok(());
        };
        if !mirror.join("HEAD").exists() {
            tokio::fs::create_dir_all(mirror)
                .await
                .map_err(SourceError::Spawn)?;
            let out = Command::new("git")
                .args(["init", "--bare", "--quiet"])
                .arg(mirror)
                .output()
                .await
                .map_err(SourceError::Spawn)?;
            if !out.status.success() {
                return Err(SourceError::Git {
                    args: "init".into(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        let refspec = format!("+refs/heads/{0}:refs/heads/{0}", self.branch);
        self.git(&[
            "fetch",
            "--quiet",
            "--no-tags",
            "--depth",
            "50",
            url,
            &refspec,
        ])
        .await?;
        Ok(())
    }

    /// The commit at the head of the branch.
    pub async fn revision(&self) -> Result<String, SourceError> {
        let spec = format!("refs/heads/{}^{{commit}}", self.branch);
        match self.git(&["rev-parse", "--verify", "--quiet", &spec]).await {
            Ok(out) => Ok(String::from_utf8_lossy(&out).trim().to_string()),
            Err(SourceError::Git { .. }) => Err(SourceError::NoBranch {
                repo: self.display(),
                branch: self.branch.clone(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Every desired-state file as committed at `revision`, parsed and validated.
    pub async fn read(&self, revision: &str) -> Result<Snapshot, SourceError> {
        let tree = format!("{revision}:{}", self.path);
        let listing = match self.git(&["ls-tree", "-l", "-z", &tree]).await {
            Ok(l) => l,
            Err(SourceError::Git { .. }) => {
                return Err(SourceError::NoFolder {
                    repo: self.display(),
                    path: self.path.clone(),
                    revision: revision.to_string(),
                });
            }
            Err(e) => return Err(e),
        };
        let mut snapshot = SnapshotBuilder::default();
        for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            // "<mode> <type> <object> <size>\t<name>"
            let Some((meta, name)) = entry.split_once('\t') else {
                continue;
            };
            let fields: Vec<&str> = meta.split_whitespace().collect();
            if fields.get(1) != Some(&"blob") {
                continue;
            }
            let rel = PathBuf::from(&self.path).join(name);
            if !desired::is_desired_state_file(&rel) {
                continue;
            }
            let size: usize = fields.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            if snapshot.too_large(&rel, size) {
                continue;
            }
            let blob = self.git(&["cat-file", "blob", fields[2]]).await?;
            snapshot.add(rel, Some(blob));
        }
        Ok(snapshot.finish(revision.to_string()))
    }

    /// One read of the source: fetch (remote), resolve the head, parse.
    pub async fn load(&self) -> Result<Snapshot, SourceError> {
        self.fetch().await?;
        let rev = self.revision().await?;
        self.read(&rev).await
    }

    /// The directory whose changes mean "a commit may have happened" (local repos).
    pub async fn watch_dir(&self) -> Result<PathBuf, SourceError> {
        let out = self.git(&["rev-parse", "--absolute-git-dir"]).await?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out).trim()))
    }
}

/// Collects the files of one revision into a `Snapshot`, with the same checks whatever the
/// source (git or GitHub's contents API).
#[derive(Default)]
pub struct SnapshotBuilder {
    files: BTreeMap<String, FileState>,
    parsed: Vec<(PathBuf, DesiredState)>,
}

impl SnapshotBuilder {
    fn invalid(&mut self, rel: PathBuf, message: String) {
        let env = desired::stem_of(&rel);
        self.files.insert(
            env,
            FileState::Invalid(vec![Problem {
                path: rel,
                at: Location { line: 1, col: 1 },
                message,
            }]),
        );
    }

    /// Records a file over the size limit as invalid, before it is read; true if it was.
    pub fn too_large(&mut self, rel: &Path, size: usize) -> bool {
        if size <= MAX_FILE_BYTES {
            return false;
        }
        self.invalid(
            rel.to_path_buf(),
            format!("file is {size} bytes, over the {MAX_FILE_BYTES} byte limit for a desired-state file"),
        );
        true
    }

    /// Parses and validates one file's bytes (`None`: the source could not decode them).
    pub fn add(&mut self, rel: PathBuf, bytes: Option<Vec<u8>>) {
        let Some(text) = bytes.and_then(|b| String::from_utf8(b).ok()) else {
            return self.invalid(rel, "file is not UTF-8 text; save it as UTF-8".into());
        };
        let env = desired::stem_of(&rel);
        let state = match desired::parse(&rel, &text) {
            Ok(s) => {
                self.parsed.push((rel, s.clone()));
                FileState::Valid(Box::new(s))
            }
            Err(p) => FileState::Invalid(p),
        };
        self.files.insert(env, state);
    }

    /// Promotion problems across files (`desired::check_set`) make the files that have them
    /// invalid.
    pub fn finish(mut self, revision: String) -> Snapshot {
        for problem in desired::check_set(&self.parsed) {
            let env = desired::stem_of(&problem.path);
            match self.files.get_mut(&env) {
                Some(FileState::Invalid(p)) => p.push(problem),
                Some(slot) => *slot = FileState::Invalid(vec![problem]),
                None => {}
            }
        }
        Snapshot {
            revision,
            files: self.files,
        }
    }
}

/// Where snapshots come from: a git repository (local or remote) or GitHub's contents API.
pub enum Origin {
    Git(Source),
    GitHub(Box<crate::github::ContentsSource>),
}

impl Origin {
    pub fn display(&self) -> String {
        match self {
            Origin::Git(s) => s.display(),
            Origin::GitHub(g) => g.display(),
        }
    }

    /// A new snapshot if the head moved since `last_revision`.
    async fn poll(&mut self, last_revision: &str) -> Result<Option<Snapshot>, String> {
        match self {
            Origin::Git(source) => {
                source.fetch().await.map_err(|e| e.to_string())?;
                let rev = source.revision().await.map_err(|e| e.to_string())?;
                if rev == last_revision {
                    return Ok(None);
                }
                source.read(&rev).await.map(Some).map_err(|e| e.to_string())
            }
            Origin::GitHub(g) => g.poll().await.map_err(|e| e.to_string()),
        }
    }
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

fn start_watcher(dir: &Path, trigger: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_removed_wherever_they_appear() {
        assert_eq!(
            redact_url("https://bot:ghp_s3cret@github.com/acme/desired.git"),
            "https://***@github.com/acme/desired.git"
        );
        let err =
            "fatal: unable to access 'https://x-access-token:ghs_abc@github.com/acme/d.git/': 403";
        let red = redact_url(err);
        assert!(
            !red.contains("ghs_abc") && red.contains("github.com/acme/d.git"),
            "{red}"
        );
        assert_eq!(redact_url("/srv/desired-state"), "/srv/desired-state");
        assert_eq!(
            redact_url("ssh://git@host/x and http://h/y"),
            "ssh://***@host/x and http://h/y"
        );
    }
}
