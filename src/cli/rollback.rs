//! `ecs-gitops rollback --env prod [--to SHA]` and `ecs-gitops history --env prod`: a manual
//! rollback is a git commit like any other, and the releases the record verified are shown
//! beside the git log of the file.
//!
//! Like `promote`, the record is read from AWS (what passed its bake), and only the characters
//! of the file's `release:` value change.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::promote::{PromoteError, commit_release, git, load, read_record};
use crate::desired::{self, Release};
use crate::record::Record;

pub struct Rollback {
    /// The release the file named before.
    pub from: Release,
    pub to: Release,
    pub file: PathBuf,
    /// `None` when the file already named `to` (nothing committed).
    pub commit: Option<String>,
}

/// The releases the record vouches for: last good first, then the verified list.
fn verified(r: &Record) -> Vec<Release> {
    let mut out: Vec<Release> = r.last_good.iter().cloned().collect();
    for v in &r.verified {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// Sets `env`'s release to its last good release, or to `to` if the record verified it (any
/// release with `force`), and commits the change.
pub async fn rollback(
    repo: &Path,
    folder: &str,
    env: &str,
    to: Option<&str>,
    force: bool,
) -> Result<Rollback, PromoteError> {
    let path = repo.join(folder).join(format!("{env}.yaml"));
    let (text, desired) = load(&path)?;
    let record = read_record(env, &desired).await?;
    let known = verified(&record);
    let target = match to {
        Some(s) => Release::parse(s).map_err(|e| PromoteError::Invalid(format!("--to: {e}")))?,
        None => record
            .last_good
            .clone()
            .ok_or_else(|| PromoteError::NothingVerified {
                from: env.to_string(),
                cluster: desired.cluster.clone(),
            })?,
    };
    if !force && !known.contains(&target) {
        return Err(PromoteError::Invalid(format!(
            "{} was never verified in {env} (verified: {}); roll back to one of those, or pass --force to commit an unverified release",
            target.short(),
            known
                .iter()
                .map(Release::short)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let from = desired.release.clone();
    if from == target {
        return Ok(Rollback {
            from,
            to: target,
            file: path,
            commit: None,
        });
    }
    let how = if known.contains(&target) {
        format!("{env} verified it")
    } else {
        format!("--force: {env} never verified it")
    };
    let message = format!(
        "{env}: roll back to {} (was {})\n\nSets {env}'s release to {target} ({how}),\nreplacing {from}.",
        target.short(),
        from.short()
    );
    let commit = commit_release(repo, folder, env, &path, &text, &target, &message).await?;
    Ok(Rollback {
        from,
        to: target,
        file: path,
        commit: Some(commit),
    })
}

/// The record's releases beside the git log of the environment's file.
pub async fn history(repo: &Path, folder: &str, env: &str) -> Result<String, PromoteError> {
    let path = repo.join(folder).join(format!("{env}.yaml"));
    let (_, desired) = load(&path)?;
    let record = read_record(env, &desired).await?;
    let known = verified(&record);
    let mut out = String::new();
    let short = |r: Option<&Release>| r.map(Release::short).unwrap_or("-").to_string();
    let _ = writeln!(
        out,
        "{env}: phase {}, last good {}, verified {}{}",
        record.phase,
        short(record.last_good.as_ref()),
        known
            .iter()
            .map(Release::short)
            .collect::<Vec<_>>()
            .join(" "),
        record
            .rejected
            .as_ref()
            .map(|(r, why)| format!(", rejected {} ({why})", r.short()))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:<9} {:<9} {:<9} {:<19} SUBJECT",
        "RELEASE", "VERIFIED", "COMMIT", "DATE"
    );
    let rel = format!("{folder}/{env}.yaml");
    let log = git(
        repo,
        &[
            "log",
            "-n",
            "30",
            "--format=%H%x09%ad%x09%s",
            "--date=format:%Y-%m-%d %H:%M:%S",
            "--",
            &rel,
        ],
    )
    .await?;
    for line in log.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(commit), Some(date), Some(subject)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // The release the file named at that commit (a deleted or invalid file names none).
        let release = git(repo, &["show", &format!("{commit}:{rel}")])
            .await
            .ok()
            .and_then(|text| desired::parse(&path, &text).ok())
            .map(|d| d.release);
        let mark = match &release {
            Some(r) if record.last_good.as_ref() == Some(r) => "last good",
            Some(r) if known.contains(r) => "yes",
            Some(r) if record.rejected.as_ref().is_some_and(|(x, _)| x == r) => "REJECTED",
            Some(_) => "no",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<9} {:<9} {:<9} {:<19} {subject}",
            short(release.as_ref()),
            mark,
            &commit[..7.min(commit.len())],
            date
        );
    }
    Ok(out)
}
