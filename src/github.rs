//! GitHub: push webhooks in, deployment statuses and release tags out, and GitHub's contents
//! API as a desired-state source. All through octocrab.
//!
//! Reporting is best effort by design: events go into a bounded queue that one task drains,
//! retrying with backoff, so GitHub being slow, down or rate-limited never delays a deploy or a
//! rollback. The token and the webhook secret live in `Secret`, whose Debug and Display print
//! `[redacted]`; neither is ever put into a log field, a metric label or an error message.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderValue};
use octocrab::Octocrab;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::desired::{self, Release};
use crate::metrics::Metrics;
use crate::record::Reason;
use crate::source::Snapshot;
use crate::status::rfc3339;

/// A token or webhook secret: never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file (trailing newline removed) or an environment variable.
    pub fn load(
        file: Option<&std::path::Path>,
        env: Option<&str>,
        what: &str,
        flag: &str,
    ) -> Result<Option<Secret>, String> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the {what} from {} ({flag}-file): {e}",
                    path.display()
                )
            })?;
            let value = text.trim_end_matches(['\n', '\r']).to_string();
            if value.is_empty() {
                return Err(format!(
                    "{} ({flag}-file) is empty; put the {what} in it",
                    path.display()
                ));
            }
            return Ok(Some(Secret(value)));
        }
        if let Some(name) = env {
            return match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
                _ => Err(format!(
                    "environment variable {name} ({flag}-env) is not set; export the {what} in it"
                )),
            };
        }
        Ok(None)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

// ---- webhook ---------------------------------------------------------------------------------

/// Verifies `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
pub fn signature_valid(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `sha256=<hex>` for `body`: what GitHub sends (used by tests and tools).
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

// ---- client ----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
}

impl RepoRef {
    pub fn parse(s: &str) -> Result<RepoRef, String> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match s.split_once('/') {
            Some((o, n)) if ok(o) && ok(n) => Ok(RepoRef {
                owner: o.to_string(),
                name: n.to_string(),
            }),
            _ => Err(format!(
                "`{s}` is not a GitHub repository; write it as owner/name"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub {operation} answered {status}")]
    Status {
        operation: &'static str,
        status: u16,
    },
    #[error("GitHub {operation} failed: {kind}")]
    Transport {
        operation: &'static str,
        kind: &'static str,
    },
    #[error("GitHub {operation} answered something unexpected: {what}")]
    Unexpected {
        operation: &'static str,
        what: String,
    },
}

impl GitHubError {
    fn transient(&self) -> bool {
        match self {
            GitHubError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 403
            }
            GitHubError::Transport { .. } => true,
            GitHubError::Unexpected { .. } => false,
        }
    }

    /// A fixed identifier for the `outcome` metric label.
    fn outcome(&self) -> &'static str {
        match self {
            GitHubError::Status { status, .. } if *status == 403 || *status == 429 => {
                "rate_limited"
            }
            GitHubError::Status { status, .. } if *status >= 500 => "server_error",
            GitHubError::Status { .. } => "client_error",
            GitHubError::Transport { .. } => "network_error",
            GitHubError::Unexpected { .. } => "bad_response",
        }
    }
}

/// A small typed layer over octocrab's raw requests: status codes stay visible (304 for an
/// unchanged ETag, 422 for a tag that exists) and every call is counted.
#[derive(Clone)]
pub struct GitHub {
    client: Octocrab,
    metrics: Arc<Metrics>,
}

pub struct Response {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Value,
}

impl GitHub {
    pub fn new(
        api_url: &str,
        token: Option<&Secret>,
        metrics: Arc<Metrics>,
    ) -> Result<GitHub, String> {
        let mut b = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|_| format!("`{api_url}` is not a URL (--github-api-url)"))?
            .set_connect_timeout(Some(Duration::from_secs(5)))
            .set_read_timeout(Some(Duration::from_secs(10)));
        if let Some(t) = token {
            b = b.personal_token(t.expose().to_string());
        }
        let client = b
            .build()
            .map_err(|e| format!("cannot set up the GitHub client: {}", error_kind(&e)))?;
        Ok(GitHub { client, metrics })
    }

    async fn request(
        &self,
        operation: &'static str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: HeaderMap,
    ) -> Result<Response, GitHubError> {
        let result = match method {
            "POST" => self.client._post(path, body).await,
            _ => self.client._get_with_headers(path, Some(headers)).await,
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                self.count(operation, "network_error");
                return Err(GitHubError::Transport {
                    operation,
                    kind: error_kind(&e),
                });
            }
        };
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = self.client.body_to_string(resp).await.unwrap_or_default();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let outcome = match status {
            200..=299 => "ok",
            304 => "not_modified",
            403 | 429 => "rate_limited",
            500.. => "server_error",
            _ => "client_error",
        };
        self.count(operation, outcome);
        Ok(Response { status, etag, body })
    }

    fn count(&self, operation: &str, outcome: &str) {
        self.metrics
            .github_requests
            .with_label_values(&[operation, outcome])
            .inc();
    }

    async fn post(
        &self,
        operation: &'static str,
        path: &str,
        body: &Value,
        accept: &[u16],
    ) -> Result<Response, GitHubError> {
        let r = self
            .request(operation, "POST", path, Some(body), HeaderMap::new())
            .await?;
        if (200..300).contains(&r.status) || accept.contains(&r.status) {
            Ok(r)
        } else {
            Err(GitHubError::Status {
                operation,
                status: r.status,
            })
        }
    }
}

fn error_kind(e: &octocrab::Error) -> &'static str {
    match e {
        octocrab::Error::Hyper { .. } => "connection",
        octocrab::Error::Service { .. } => "connection",
        octocrab::Error::Http { .. }
        | octocrab::Error::Uri { .. }
        | octocrab::Error::InvalidHeaderValue { .. } => "request",
        octocrab::Error::Json { .. } | octocrab::Error::Serde { .. } => "response",
        _ => "other",
    }
}

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
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let attempt = || deliver(&github, &config, &deployments, &event);
        let result = attempt
            .retry(backoff)
            .when(GitHubError::transient)
            .notify(|e: &GitHubError, after: Duration| {
                tracing::debug!(error = %e, retry_in_ms = after.as_millis() as u64, "retrying GitHub report");
            })
            .await;
        match result {
            Ok(Some(id)) => {
                deployments.insert(event.key(), id);
            }
            Ok(None) => {}
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
}

/// Sends one event; returns the deployment id it created, if any. Idempotent enough to
/// retry: a retried creation makes at most one extra deployment, never a wrong status.
async fn deliver(
    github: &GitHub,
    config: &ReporterConfig,
    deployments: &HashMap<(String, Release), u64>,
    event: &Event,
) -> Result<Option<u64>, GitHubError> {
    let repo = format!("/repos/{}/{}", config.repo.owner, config.repo.name);
    let (environment, release) = event.key();
    let mut created = None;
    let id = match deployments.get(&(environment.clone(), release.clone())) {
        Some(id) => *id,
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
            let id = r.body["id"].as_u64().ok_or(GitHubError::Unexpected {
                operation: "create_deployment",
                what: "no deployment id".into(),
            })?;
            created = Some(id);
            id
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
    if matches!(event, Event::Verified { .. }) && config.tag_environments.contains(&environment) {
        let tag = release_tag(&release, SystemTime::now());
        let body = json!({"ref": format!("refs/tags/{tag}"), "sha": release.as_str()});
        // 422: the tag exists already (a second verification of the same release that day).
        github
            .post("create_tag", &format!("{repo}/git/refs"), &body, &[422])
            .await?;
    }
    Ok(created.or(Some(id)))
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

// ---- GitHub as a source -----------------------------------------------------------------------

/// Reads the desired-state files through the contents API; an unchanged branch costs one
/// conditional request (`If-None-Match`), which GitHub does not count against the rate limit.
pub struct ContentsSource {
    github: GitHub,
    repo: RepoRef,
    branch: String,
    path: String,
    etag: Option<String>,
}

impl ContentsSource {
    pub fn new(github: GitHub, repo: RepoRef, branch: &str, path: &str) -> ContentsSource {
        ContentsSource {
            github,
            repo,
            branch: branch.to_string(),
            path: path.trim_matches('/').to_string(),
            etag: None,
        }
    }

    pub fn display(&self) -> String {
        format!("github:{}/{}", self.repo.owner, self.repo.name)
    }

    /// `Ok(None)` when the branch head has not changed since the last call.
    pub async fn poll(&mut self) -> Result<Option<Snapshot>, GitHubError> {
        let repo = format!("/repos/{}/{}", self.repo.owner, self.repo.name);
        let mut headers = HeaderMap::new();
        if let Some(etag) = &self.etag
            && let Ok(v) = HeaderValue::from_str(etag)
        {
            headers.insert(http::header::IF_NONE_MATCH, v);
        }
        let head = self
            .github
            .request(
                "get_commit",
                "GET",
                &format!("{repo}/commits/{}", self.branch),
                None,
                headers,
            )
            .await?;
        if head.status == 304 {
            return Ok(None);
        }
        if head.status != 200 {
            return Err(GitHubError::Status {
                operation: "get_commit",
                status: head.status,
            });
        }
        let sha = head.body["sha"].as_str().ok_or(GitHubError::Unexpected {
            operation: "get_commit",
            what: "no commit sha".into(),
        })?;
        let sha = sha.to_string();
        let listing = self
            .github
            .request(
                "get_contents",
                "GET",
                &format!("{repo}/contents/{}?ref={sha}", self.path),
                None,
                HeaderMap::new(),
            )
            .await?;
        if listing.status != 200 {
            return Err(GitHubError::Status {
                operation: "get_contents",
                status: listing.status,
            });
        }
        let entries = listing.body.as_array().cloned().unwrap_or_default();
        let mut snapshot = crate::source::SnapshotBuilder::default();
        for e in entries {
            let (Some(name), Some("file")) = (e["name"].as_str(), e["type"].as_str()) else {
                continue;
            };
            let rel = std::path::PathBuf::from(&self.path).join(name);
            if !desired::is_desired_state_file(&rel) {
                continue;
            }
            if snapshot.too_large(&rel, e["size"].as_u64().unwrap_or(0) as usize) {
                continue;
            }
            let file = self
                .github
                .request(
                    "get_contents",
                    "GET",
                    &format!("{repo}/contents/{}/{name}?ref={sha}", self.path),
                    None,
                    HeaderMap::new(),
                )
                .await?;
            if file.status != 200 {
                return Err(GitHubError::Status {
                    operation: "get_contents",
                    status: file.status,
                });
            }
            let encoded: String = file.body["content"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            use base64::Engine;
            snapshot.add(
                rel,
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok(),
            );
        }
        self.etag = head.etag;
        Ok(Some(snapshot.finish(sha)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_the_same_secret_and_body() {
        let secret = Secret::new("It's a Secret to Everybody".into());
        // The example from GitHub's documentation on validating webhook deliveries.
        let sig = sign(&secret, b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(signature_valid(&secret, b"Hello, World!", &sig));
        assert!(!signature_valid(&secret, b"Hello, World?", &sig));
        assert!(!signature_valid(
            &Secret::new("other".into()),
            b"Hello, World!",
            &sig
        ));
        assert!(!signature_valid(&secret, b"Hello, World!", "sha1=757107ea"));
        assert!(!signature_valid(&secret, b"Hello, World!", "sha256=zz"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn release_tags_are_dated_and_short() {
        let r = Release::parse("3f9c2a1e0b7d4c5a6f8e9d0c1b2a3f4e5d6c7b8a").unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_776_000);
        assert_eq!(release_tag(&r, at), "v2026.11.27-3f9c2a1");
    }

    #[test]
    fn repositories_are_owner_slash_name() {
        assert_eq!(
            RepoRef::parse("acme/desired-state").unwrap().name,
            "desired-state"
        );
        assert!(RepoRef::parse("acme").is_err());
        assert!(RepoRef::parse("acme/x/y").is_err());
    }
}
