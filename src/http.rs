//! The HTTP side: metrics, liveness, readiness, status (JSON and a page), webhooks.
//!
//! One axum router with shared state. `/healthz` answers while the process runs its loop,
//! whatever AWS or git do; `/readyz` is true only after every environment has completed a
//! pass and while the source reads.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::source::SourceStatus;
use crate::status::{Board, StatusReport};

/// Source failures in a row after which the daemon stops calling itself ready.
pub const SOURCE_FAILURES_NOT_READY: u32 = 3;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub board: Board,
    pub source: watch::Receiver<SourceStatus>,
    /// Environments this daemon manages (known once the source is first read).
    pub environments: watch::Receiver<Vec<String>>,
}

impl AppState {
    pub fn report(&self) -> StatusReport {
        let source = self.source.borrow().clone();
        let envs = self.environments.borrow().clone();
        let environments = self.board.snapshot();
        let ready = source.snapshot.is_some()
            && source.failures < SOURCE_FAILURES_NOT_READY
            && envs
                .iter()
                .all(|e| environments.iter().any(|s| &s.name == e && s.passes > 0));
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
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/", get(page))
        .route("/hooks/github", post(github_hook))
        .with_state(state)
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

async fn github_hook() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        "GitHub webhooks are not built yet; the source is polled every --interval\n",
    )
        .into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(s): State<AppState>) -> Html<String> {
    let r = s.report();
    let short = |x: &Option<String>| {
        x.as_deref()
            .map(|v| v.chars().take(7).collect::<String>())
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = String::new();
    for e in &r.environments {
        rows.push_str(&format!(
            "<tr><td>{}</td><td class=\"phase {}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&e.name),
            esc(&e.phase),
            esc(&e.phase),
            esc(&short(&e.desired_release)),
            esc(&short(&e.running_release)),
            esc(&short(&e.last_good_release)),
            esc(&short(&e.rejected_release)),
            esc(e.since.as_deref().unwrap_or("-")),
            esc(e.error.as_deref().unwrap_or(&e.message)),
        ));
    }
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>ecs-gitops</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.InSync{{background:#cfc}}.Blocked{{background:#ffd}}.Deploying,.Baking{{background:#cdf}}.RollingBack,.Rejected{{background:#fcc}}.Drifted{{background:#fdb}}</style></head>
<body><h1>ecs-gitops</h1><p>desired state at {}</p>
<table><tr><th>environment</th><th>phase</th><th>desired</th><th>running</th><th>last good</th><th>rejected</th><th>since</th><th>message</th></tr>
{rows}</table></body></html>"#,
        esc(r.source_revision.as_deref().unwrap_or("(not read yet)"))
    ))
}

/// Serves until cancelled. Returns the bound address through `bound` first.
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
