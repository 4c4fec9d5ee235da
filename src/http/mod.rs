//! The HTTP side: metrics, liveness, readiness, status (JSON and a page), webhooks.
//!
//! One axum router with shared state. `/healthz` answers while the process runs its loop,
//! whatever AWS or git do; `/readyz` is true only after every environment has completed a
//! pass and while the source reads.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::github::{self, Secret};
use crate::metrics::Metrics;
use crate::source::SourceStatus;
use crate::status::{Board, StatusReport};

pub mod page;

/// Source failures in a row after which the daemon stops calling itself ready.
pub const SOURCE_FAILURES_NOT_READY: u32 = 3;
/// Webhook bodies larger than this are refused (a push event is a few KiB).
pub const WEBHOOK_MAX_BYTES: usize = 1024 * 1024;

/// What the webhook endpoint needs: the secret, the watched branch, and the source's trigger.
#[derive(Clone)]
pub struct Webhook {
    pub secret: Secret,
    pub branch: String,
    pub trigger: Arc<Notify>,
}

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub board: Board,
    pub source: watch::Receiver<SourceStatus>,
    /// Environments this daemon manages (known once the source is first read).
    /// The environments this daemon manages, with the revision that named them.
    pub environments: watch::Receiver<(String, Vec<String>)>,
    pub webhook: Option<Webhook>,
    /// `/healthz` fails when an environment's loop has not gone round for this long.
    pub stall_after: std::time::Duration,
}

impl AppState {
    pub fn report(&self) -> StatusReport {
        let source = self.source.borrow().clone();
        let (envs_revision, envs) = self.environments.borrow().clone();
        let environments = self.board.snapshot();
        // The list must have been made from a snapshot, or "every environment has passed"
        // would hold of the empty list in the moment between the source's first read and the
        // daemon's.
        let ready = source.snapshot.is_some()
            && !envs_revision.is_empty()
            && source.failures < SOURCE_FAILURES_NOT_READY
            && envs.iter().all(|e| {
                environments
                    .iter()
                    .any(|s| &s.name == e && (s.passes > 0 || s.owned_elsewhere))
            });
        StatusReport {
            environments: environments
                .into_iter()
                .filter(|s| envs.contains(&s.name))
                .collect(),
            source_revision: source.snapshot.as_ref().map(|s| s.revision.clone()),
            source_error: source.error.clone(),
            ready,
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/", get(page))
        .route(
            "/hooks/github",
            post(github_hook).layer(DefaultBodyLimit::disable()),
        )
        .with_state(state)
}

/// Liveness: every environment's loop keeps going round (a pass that fails because AWS or git
/// is down still counts; a loop that is stuck or dead does not).
async fn healthz(State(s): State<AppState>) -> Response {
    let stalled = s.board.stalled(s.stall_after);
    if stalled.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "environment loop(s) stalled for over {}s: {}\n",
                s.stall_after.as_secs(),
                stalled.join(", ")
            ),
        )
            .into_response()
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    let r = s.report();
    if r.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let why = match (&r.source_error, r.source_revision.is_some()) {
            (Some(e), _) => format!("not ready: desired-state source failing: {e}\n"),
            (None, false) => "not ready: desired state not read yet\n".to_string(),
            (None, true) => "not ready: first pass of every environment not complete\n".to_string(),
        };
        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn status(State(s): State<AppState>) -> Response {
    axum::Json(s.report()).into_response()
}

/// `POST /hooks/github`: a signed push to the watched branch wakes the source at once. Every
/// check comes before any work; a refused delivery changes nothing.
async fn github_hook(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let event = match headers.get("x-github-event").and_then(|v| v.to_str().ok()) {
        Some("push") => "push",
        Some("ping") => "ping",
        Some(_) => "other",
        None => "unknown",
    };
    let refuse = |outcome: &'static str, status: StatusCode, why: &'static str| {
        s.metrics
            .webhook_deliveries
            .with_label_values(&[event, outcome])
            .inc();
        tracing::info!(event, outcome, "webhook delivery refused");
        (status, why).into_response()
    };
    let Some(hook) = &s.webhook else {
        return refuse(
            "not_configured",
            StatusCode::NOT_FOUND,
            "webhooks are not configured; start ecs-gitops with --github-webhook-secret-file or --github-webhook-secret-env\n",
        );
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == "application/json");
    if !json {
        return refuse(
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "set the webhook's content type to application/json\n",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, WEBHOOK_MAX_BYTES).await else {
        return refuse(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "webhook body over 1 MiB\n",
        );
    };
    let Some(signature) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
    else {
        return refuse(
            "unsigned",
            StatusCode::UNAUTHORIZED,
            "missing X-Hub-Signature-256; set the webhook's secret\n",
        );
    };
    if !github::signature_valid(&hook.secret, &bytes, signature) {
        return refuse(
            "bad_signature",
            StatusCode::FORBIDDEN,
            "X-Hub-Signature-256 does not match\n",
        );
    }
    let accept = |outcome: &'static str, status: StatusCode, what: &'static str| {
        s.metrics
            .webhook_deliveries
            .with_label_values(&[event, outcome])
            .inc();
        (status, what).into_response()
    };
    match event {
        "ping" => accept("pong", StatusCode::OK, "pong\n"),
        "push" => {
            let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return refuse(
                    "bad_request",
                    StatusCode::BAD_REQUEST,
                    "push payload is not JSON\n",
                );
            };
            if payload["ref"].as_str() == Some(&format!("refs/heads/{}", hook.branch)) {
                hook.trigger.notify_one();
                tracing::info!(
                    event,
                    "push to the watched branch; reading the desired state now"
                );
                accept(
                    "accepted",
                    StatusCode::ACCEPTED,
                    "reading the desired state\n",
                )
            } else {
                accept(
                    "ignored",
                    StatusCode::ACCEPTED,
                    "not the watched branch; ignored\n",
                )
            }
        }
        _ => accept("ignored", StatusCode::ACCEPTED, "event ignored\n"),
    }
}

async fn page(State(s): State<AppState>) -> Html<String> {
    let now_ms = crate::status::unix_ms(std::time::SystemTime::now());
    Html(page::render_page(&s.report(), now_ms))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

pub fn local_addr(listener: &tokio::net::TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Snapshot;

    fn state(envs: (String, Vec<String>), board: Board) -> (AppState, watch::Sender<SourceStatus>) {
        let (source_tx, source) = watch::channel(SourceStatus {
            snapshot: Some(Arc::new(Snapshot {
                revision: "r1".into(),
                files: Default::default(),
            })),
            ..SourceStatus::default()
        });
        let (_envs_tx, environments) = watch::channel(envs);
        let s = AppState {
            metrics: Arc::new(Metrics::new()),
            board,
            source,
            environments,
            webhook: None,
            stall_after: std::time::Duration::from_secs(60),
        };
        (s, source_tx)
    }

    #[test]
    fn not_ready_before_the_daemon_has_taken_its_environments_from_a_snapshot() {
        // The source has read r1, but the daemon has not yet said which environments it
        // manages: an empty list must not count as "every environment has passed".
        let (s, _keep) = state((String::new(), Vec::new()), Board::default());
        assert!(!s.report().ready);
        let board = Board::default();
        let (s, _keep) = state(("r1".into(), vec!["prod".into()]), board.clone());
        assert!(!s.report().ready, "prod has not passed yet");
        board.update("prod", |e| e.passes = 1);
        assert!(s.report().ready);
    }
}
