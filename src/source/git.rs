//! The desired-state source: a git repository read with the `git` CLI.
//!
//! Only what is committed at the head of the branch counts, never the working tree: the
//! controller reads blobs from the commit (`git ls-tree` / `git cat-file`), so an edit that is
//! not committed, or a half-written file, is never seen. A local repository is watched with
//! `notify` (a commit changes a ref under `.git`, which wakes the source at once); a remote one
//! is fetched into a private bare mirror every interval and on demand (webhook).

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::desired::{self};
use crate::desired::{Snapshot, SnapshotBuilder};

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
    #[error(
        "branch `{branch}` of {repo} was rewritten: its head moved from {from} to {to}, which does not contain it; keeping the desired state of {from} (nothing is deployed from the rewritten branch); push a commit on top of {from}, or restart ecs-gitops to accept the new history"
    )]
    Rewritten {
        repo: String,
        branch: String,
        from: String,
        to: String,
    },
    #[error("folder `{path}` not found at {revision} of {repo}; pass the folder with --path")]
    NoFolder {
        repo: String,
        path: String,
        revision: String,
    },
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

    pub fn branch(&self) -> &str {
        &self.branch
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

    /// Whether `new` contains `old` (a fast-forward). `false` when `old` is not in `new`'s
    /// history, including when the history was rewritten and `old` is gone from it.
    pub async fn descends_from(&self, new: &str, old: &str) -> Result<bool, SourceError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.git_dir())
            .args(["merge-base", "--is-ancestor", old, new])
            .kill_on_drop(true)
            .output()
            .await
            .map_err(SourceError::Spawn)?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            // 128: `old` is not in the repository any more (a force-push and a gc).
            _ => Ok(false),
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
            if fields.first() == Some(&"120000") {
                // A link could pull in a file from outside the repository, or change meaning
                // with the machine it is read on.
                let target = self.git(&["cat-file", "blob", fields[2]]).await?;
                snapshot.refuse(
                    rel,
                    format!(
                        "is a symbolic link (to {}); desired-state files must be regular files committed in the repository",
                        String::from_utf8_lossy(&target).trim()
                    ),
                );
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
