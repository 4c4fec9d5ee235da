//! `ecs-gitops promote --from staging --to prod`: set one environment's release to what
//! another has verified, and commit it.
//!
//! The verified release is read from AWS (the upstream environment's record), not from its
//! file: a file says what was asked for, the record says what passed its bake. The target
//! file is edited in place, changing only the characters of the `release:` value, so its
//! comments and layout stay as the people who wrote it left them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::process::Command;

use crate::aws::Aws;
use crate::desired::yaml::{self, Node};
use crate::desired::{self, DesiredState, Release};
use crate::metrics::Metrics;
use crate::observe::{Observer, health::HealthChecker};
use crate::record::Record;

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{from} has no verified release yet (no ecs-gitops record on its services in cluster {cluster}); let a release pass its bake there first"
    )]
    NothingVerified { from: String, cluster: String },
    #[error("cannot read {from}'s record from AWS: {0}", from = .1)]
    Aws(#[source] Box<crate::aws::AwsError>, String),
    #[error("git {args} failed: {stderr}")]
    Git { args: String, stderr: String },
}

pub struct Promotion {
    pub release: Release,
    pub file: PathBuf,
    /// `None` when the target already had the release (nothing committed).
    pub commit: Option<String>,
}

pub(crate) fn load(path: &Path) -> Result<(String, DesiredState), PromoteError> {
    let text = std::fs::read_to_string(path).map_err(|source| PromoteError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let state = desired::parse(path, &text).map_err(|problems| {
        PromoteError::Invalid(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    Ok((text, state))
}

/// Replaces the top-level `release:` value in `text`, keeping everything else byte for byte.
pub fn set_release(path: &Path, text: &str, release: &Release) -> Result<String, PromoteError> {
    let bad = |m: &str| PromoteError::Invalid(format!("{}: {m}", path.display()));
    let root = yaml::parse(text)
        .map_err(|e| bad(&e.message))?
        .ok_or_else(|| bad("file is empty"))?;
    let Node::Map { entries, .. } = root else {
        return Err(bad("not a mapping"));
    };
    let Some((_, _, Node::Scalar { at, .. })) = entries.iter().find(|(k, _, _)| k == "release")
    else {
        return Err(bad("no top-level `release:` to change"));
    };
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    let line = lines
        .get(at.line - 1)
        .ok_or_else(|| bad("release line out of range"))?;
    let start = line
        .char_indices()
        .nth(at.col - 1)
        .map(|(i, _)| i)
        .ok_or_else(|| bad("release column out of range"))?;
    let rest = &line[start..];
    let len = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => rest[1..].find(q).map(|i| i + 2).unwrap_or(rest.len()),
        _ => rest
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(rest.len()),
    };
    let new_line = format!("{}{}{}", &line[..start], release, &rest[len..]);
    lines[at.line - 1] = &new_line;
    let out: String = lines.concat();
    // The edit must leave a valid file that names the new release.
    let check = desired::parse(path, &out)
        .map_err(|p| bad(&format!("edited file is invalid: {}", p[0])))?;
    if &check.release != release {
        return Err(bad("edit did not change the release"));
    }
    Ok(out)
}

pub(crate) async fn git(repo: &Path, args: &[&str]) -> Result<String, PromoteError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .await
        .map_err(|e| PromoteError::Git {
            args: args.join(" "),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(PromoteError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Sets the release of `env`'s file (at `path`, holding `text`) and commits only that file.
pub(crate) async fn commit_release(
    repo: &Path,
    folder: &str,
    env: &str,
    path: &Path,
    text: &str,
    release: &Release,
    message: &str,
) -> Result<String, PromoteError> {
    let edited = set_release(path, text, release)?;
    std::fs::write(path, edited).map_err(|source| PromoteError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let rel = format!("{folder}/{env}.yaml");
    git(repo, &["add", "--", &rel]).await?;
    git(repo, &["commit", "--quiet", "-m", message, "--", &rel]).await?;
    git(repo, &["rev-parse", "HEAD"]).await
}

pub async fn promote(
    repo: &Path,
    folder: &str,
    from: &str,
    to: &str,
) -> Result<Promotion, PromoteError> {
    let dir = repo.join(folder);
    let (_, upstream) = load(&dir.join(format!("{from}.yaml")))?;
    let to_path = dir.join(format!("{to}.yaml"));
    let (text, target) = load(&to_path)?;
    if target.promote_from.as_deref().is_some_and(|p| p != from) {
        return Err(PromoteError::Invalid(format!(
            "{}: `promote_from: {}` names another environment than --from {from}; promote from {0} or change the file",
            to_path.display(),
            target.promote_from.as_deref().unwrap_or_default()
        )));
    }
    let release = read_record(from, &upstream)
        .await?
        .last_good
        .ok_or_else(|| PromoteError::NothingVerified {
            from: from.to_string(),
            cluster: upstream.cluster.clone(),
        })?;
    if target.release == release {
        return Ok(Promotion {
            release,
            file: to_path,
            commit: None,
        });
    }
    let message = format!(
        "{to}: promote {} from {from}\n\nSets {to}'s release to {release}, the release {from} verified\n(was {}).",
        release.short(),
        target.release
    );
    let commit = commit_release(repo, folder, to, &to_path, &text, &release, &message).await?;
    Ok(Promotion {
        release,
        file: to_path,
        commit: Some(commit),
    })
}

/// An environment's record, read from AWS (its services' tags); an environment with no record
/// has verified nothing.
pub(super) async fn read_record(env: &str, desired: &DesiredState) -> Result<Record, PromoteError> {
    let aws = Aws::from_env(Arc::new(Metrics::new())).await;
    let observer = Observer::new(
        aws,
        HealthChecker::new(std::time::Duration::from_secs(5))
            .map_err(|e| PromoteError::Invalid(format!("cannot build an HTTP client: {e}")))?,
    );
    let tags = observer
        .service_tags(desired)
        .await
        .map_err(|e| PromoteError::Aws(Box::new(e), env.to_string()))?;
    Record::from_tags(&tags)
        .map_err(|e| PromoteError::Invalid(format!("{env}: {e}")))?
        .ok_or_else(|| PromoteError::NothingVerified {
            from: env.to_string(),
            cluster: desired.cluster.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Production: only what staging verified.\nenvironment: prod\nregion: me-south-1\ncluster: c\nrelease: 3f9c2a1e0b7d4c5a6f8e9d0c1b2a3f4e5d6c7b8a   # the image tag\npromote_from: staging\nservices:\n  web:\n    repository: web\n    release: 1111111111111111111111111111111111111111  # pinned\n";

    #[test]
    fn only_the_top_level_release_value_changes() {
        let new = Release::parse(&"a".repeat(40)).unwrap();
        let out = set_release(Path::new("desired-state/prod.yaml"), FILE, &new).unwrap();
        let expected = FILE.replace("3f9c2a1e0b7d4c5a6f8e9d0c1b2a3f4e5d6c7b8a", &"a".repeat(40));
        assert_eq!(out, expected);
        assert!(
            out.contains("# the image tag")
                && out.contains("1111111111111111111111111111111111111111  # pinned")
        );
    }

    #[test]
    fn a_quoted_release_stays_quoted() {
        let text = FILE.replace(
            "release: 3f9c2a1e0b7d4c5a6f8e9d0c1b2a3f4e5d6c7b8a   #",
            "release: \"3f9c2a1e0b7d4c5a6f8e9d0c1b2a3f4e5d6c7b8a\"   #",
        );
        let new = Release::parse(&"b".repeat(40)).unwrap();
        let out = set_release(Path::new("desired-state/prod.yaml"), &text, &new).unwrap();
        assert!(
            out.contains(&format!("release: {}   # the image tag", "b".repeat(40))),
            "{out}"
        );
    }
}
