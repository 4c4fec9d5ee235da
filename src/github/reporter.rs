//! Deployment statuses and release tags, sent from a bounded queue that never blocks a rollout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::desired::Release;
use crate::metrics::Metrics;
use crate::outbox;
use crate::record::Reason;
use crate::status::rfc3339;

use super::{GitHub, GitHubError, RepoRef};

// ---- reporting ---------------------------------------------------------------------------------

/// What happened to a rollout, as GitHub deployments see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        environment: String,
        release: Release,
        revision: String,
    },
    Verified {
        environment: String,
        release: Release,
        revision: String,
    },
    RolledBack {
        environment: String,
        release: Release,
        revision: String,
        reason: Reason,
    },
    Superseded {
        environment: String,
        release: Release,
        revision: String,
    },
}

impl Event {
    fn key(&self) -> (String, Release) {
        match self {
            Event::Started {
                environment,
                release,
                ..
            }
            | Event::Verified {
                environment,
                release,
                ..
            }
            | Event::RolledBack {
                environment,
                release,
                ..
            }
            | Event::Superseded {
                environment,
                release,
                ..
            } => (environment.clone(), release.clone()),
        }
    }

    fn revision(&self) -> &str {
        match self {
            Event::Started { revision, .. }
            | Event::Verified { revision, .. }
            | Event::RolledBack { revision, .. }
            | Event::Superseded { revision, .. } => revision,
        }
    }
}

/// The sending side, held by the reconcile loops: never blocks.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl Reporter {
    pub fn report(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.metrics
                .github_requests
                .with_label_values(&["queue", "dropped"])
                .inc();
            tracing::warn!("GitHub report queue full; event dropped");
        }
    }
}

pub struct ReporterConfig {
    pub repo: RepoRef,
    pub tag_environments: Vec<String>,
    /// Environments whose verified releases also get a GitHub Release (implies the tag).
    pub release_environments: Vec<String>,
}

pub const QUEUE: usize = 1000;

pub fn reporter(
    github: GitHub,
    config: ReporterConfig,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> (Reporter, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let handle = tokio::spawn(run_reporter(github, config, rx, cancel));
    (Reporter { tx, metrics }, handle)
}

async fn run_reporter(
    github: GitHub,
    config: ReporterConfig,
    mut rx: mpsc::Receiver<Event>,
    cancel: CancellationToken,
) {
    let mut deployments: HashMap<(String, Release), u64> = HashMap::new();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(6)
        .with_jitter();
    let mut unsent = Vec::new();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let attempt = || deliver(&github, &config, &deployments, &event);
        let delivery = attempt
            .retry(backoff)
            .when(GitHubError::transient)
            .notify(|e: &GitHubError, after: Duration| {
                tracing::debug!(error = %e, retry_in_ms = after.as_millis() as u64, "retrying GitHub report");
            });
        let result = tokio::select! {
            r = delivery => r,
            _ = cancel.cancelled() => {
                unsent.push(event);
                break;
            }
        };
        match result {
            Ok(id) => {
                deployments.insert(event.key(), id);
            }
            Err(e) => {
                github.count("report", "dropped");
                tracing::warn!(error = %e, outcome = e.outcome(), "GitHub report failed; giving up on this event");
            }
        }
        // Finished rollouts need no id any more.
        if !matches!(event, Event::Started { .. }) {
            deployments.remove(&event.key());
        }
    }
    // Shutting down: a few seconds for what is queued, then drop the rest and say so.
    let unsent = outbox::leftovers(unsent, &mut rx);
    let window = outbox::Window::open();
    let mut dropped = 0usize;
    for event in &unsent {
        let sent = window
            .attempt(deliver(&github, &config, &deployments, event))
            .await;
        if !matches!(sent, Some(Ok(_))) {
            dropped += 1;
            github.count("report", "dropped");
        }
    }
    outbox::report_dropped("GitHub events", dropped, unsent.len());
}

/// The newest deployment of `release` to `environment`, if this event belongs to it: any for
/// an ending event, one still in progress for a start (a release deployed again after it ended
/// gets a new deployment).
async fn find_deployment(
    github: &GitHub,
    repo: &str,
    environment: &str,
    release: &Release,
    event: &Event,
) -> Result<Option<u64>, GitHubError> {
    let body = github
        .get(
            "find_deployment",
            &format!("{repo}/deployments?sha={release}&environment={environment}&per_page=1"),
        )
        .await?;
    let Some(id) = body.get(0).and_then(|d| d["id"].as_u64()) else {
        return Ok(None);
    };
    if !matches!(event, Event::Started { .. }) {
        return Ok(Some(id));
    }
    let state = latest_state(github, repo, id).await?;
    Ok(matches!(state.as_deref(), Some("in_progress" | "queued" | "pending")).then_some(id))
}

async fn latest_state(github: &GitHub, repo: &str, id: u64) -> Result<Option<String>, GitHubError> {
    let body = github
        .get(
            "deployment_statuses",
            &format!("{repo}/deployments/{id}/statuses?per_page=1"),
        )
        .await?;
    Ok(body
        .get(0)
        .and_then(|s| s["state"].as_str())
        .map(str::to_string))
}

/// After a release verified: the environment's earlier deployments that still say `success`
/// become `inactive` (GitHub's `auto_inactive` skips production environments).
async fn inactivate_older(
    github: &GitHub,
    repo: &str,
    environment: &str,
    current: u64,
) -> Result<(), GitHubError> {
    let body = github
        .get(
            "list_deployments",
            &format!("{repo}/deployments?environment={environment}&per_page=10"),
        )
        .await?;
    let ids: Vec<u64> = body
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["id"].as_u64()).collect())
        .unwrap_or_default();
    for id in ids.into_iter().filter(|id| *id != current) {
        if latest_state(github, repo, id).await?.as_deref() == Some("success") {
            post_status(
                github,
                repo,
                id,
                "inactive",
                "a newer release was verified",
                environment,
            )
            .await?;
        }
    }
    Ok(())
}

async fn post_status(
    github: &GitHub,
    repo: &str,
    id: u64,
    state: &str,
    description: &str,
    environment: &str,
) -> Result<(), GitHubError> {
    let body = json!({
        "state": state,
        "description": description,
        "environment": environment,
        "auto_inactive": false,
    });
    github
        .post(
            "create_deployment_status",
            &format!("{repo}/deployments/{id}/statuses"),
            &body,
            &[],
        )
        .await?;
    Ok(())
}

/// Sends one event; returns the id of the deployment it reported on (found or created), for
/// the events of the same rollout that follow. Idempotent enough to retry: a retried creation
/// makes at most one extra deployment, never a wrong status.
async fn deliver(
    github: &GitHub,
    config: &ReporterConfig,
    deployments: &HashMap<(String, Release), u64>,
    event: &Event,
) -> Result<u64, GitHubError> {
    let repo = format!("/repos/{}/{}", config.repo.owner, config.repo.name);
    let (environment, release) = event.key();
    let known = match deployments.get(&(environment.clone(), release.clone())) {
        Some(id) => Some(*id),
        // Not known to this process (it restarted, or the rollout began in another replica):
        // carry on the one GitHub has rather than open a second one.
        None => find_deployment(github, &repo, &environment, &release, event).await?,
    };
    let id = match known {
        Some(id) => id,
        None => {
            let body = json!({
                "ref": release.as_str(),
                "environment": environment,
                "auto_merge": false,
                "required_contexts": [],
                "description": format!("ecs-gitops rollout of {} to {environment}", release.short()),
                "payload": {"desired_state_revision": event.revision()},
                "production_environment": environment == "prod" || environment == "production",
            });
            let r = github
                .post(
                    "create_deployment",
                    &format!("{repo}/deployments"),
                    &body,
                    &[],
                )
                .await?;
            r.body["id"].as_u64().ok_or(GitHubError::Unexpected {
                operation: "create_deployment",
                what: "no deployment id".into(),
            })?
        }
    };
    let (state, description) = match event {
        Event::Started { .. } => ("in_progress", format!("rolling out {}", release.short())),
        Event::Verified { .. } => (
            "success",
            format!("{} verified: rollout and bake passed", release.short()),
        ),
        Event::RolledBack { reason, .. } => (
            "failure",
            format!(
                "{} rolled back ({reason}); last good release restored",
                release.short()
            ),
        ),
        Event::Superseded { .. } => (
            "inactive",
            format!("{} superseded by a newer release", release.short()),
        ),
    };
    post_status(github, &repo, id, state, &description, &environment).await?;
    if matches!(event, Event::Verified { .. }) {
        inactivate_older(github, &repo, &environment, id).await?;
    }
    let release_it = config.release_environments.contains(&environment);
    if matches!(event, Event::Verified { .. })
        && (config.tag_environments.contains(&environment) || release_it)
    {
        let tag = release_tag(&release, SystemTime::now());
        let body = json!({"ref": format!("refs/tags/{tag}"), "sha": release.as_str()});
        // 422: the tag exists already (a second verification of the same release that day).
        github
            .post("create_tag", &format!("{repo}/git/refs"), &body, &[422])
            .await?;
        if release_it {
            // Notes generated by GitHub from the changes since the previous release; 422: the
            // release exists already (a second verification of the same release that day).
            let body = json!({
                "tag_name": tag,
                "name": format!("{tag} ({environment})"),
                "generate_release_notes": true,
            });
            github
                .post("create_release", &format!("{repo}/releases"), &body, &[422])
                .await?;
        }
    }
    Ok(id)
}

/// `vYYYY.MM.DD-<7-char sha>`, dated in UTC.
pub fn release_tag(release: &Release, at: SystemTime) -> String {
    let date = rfc3339(at);
    format!(
        "v{}.{}.{}-{}",
        &date[0..4],
        &date[5..7],
        &date[8..10],
        release.short()
    )
}
