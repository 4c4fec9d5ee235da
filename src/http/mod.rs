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
    pub environments: watch::Receiver<Vec<String>>,
    pub webhook: Option<Webhook>,
    /// `/healthz` fails when an environment's loop has not gone round for this long.
    pub stall_after: std::time::Duration,
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short(x: &Option<String>) -> String {
    x.as_deref()
        .map(|v| v.chars().take(7).collect())
        .unwrap_or_else(|| "-".into())
}

/// The status page: server-rendered, no JavaScript, refreshes itself every 5 seconds.
async fn page(State(s): State<AppState>) -> Html<String> {
    Html(render_page(&s.report()))
}

pub fn render_page(r: &StatusReport) -> String {
    let mut rows = String::new();
    let mut details = String::new();
    for e in &r.environments {
        let message = e.error.as_deref().unwrap_or(&e.message);
        rows.push_str(&format!(
            "<tr id=\"env-{name}\"><td><a href=\"#detail-{name}\">{name}</a></td><td class=\"phase {phase}\">{phase}</td><td title=\"{dfull}\">{d}</td><td>{run}</td><td>{good}</td><td>{rej}</td><td>{since}</td><td>{msg}</td></tr>\n",
            name = esc(&e.name),
            phase = esc(&e.phase),
            dfull = esc(e.desired_release.as_deref().unwrap_or("")),
            d = esc(&short(&e.desired_release)),
            run = esc(&short(&e.running_release)),
            good = esc(&short(&e.last_good_release)),
            rej = esc(&match (&e.rejected_release, &e.rejected_reason) {
                (Some(r), Some(why)) => format!("{} ({why})", &r[..r.len().min(7)]),
                _ => "-".into(),
            }),
            since = esc(e.since.as_deref().unwrap_or("-")),
            msg = esc(message),
        ));
        let mut services = String::new();
        for svc in &e.services {
            services.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td></tr>",
                esc(&svc.name),
                esc(svc.task_definition.rsplit('/').next().unwrap_or_default()),
                esc(&short(&svc.running_release)),
                svc.running_count,
                svc.desired_count
            ));
        }
        let mut history = String::new();
        for h in e.history.iter().take(5) {
            history.push_str(&format!(
                "<li>{} {} &rarr; {} ({}) {}</li>",
                esc(&h.at),
                esc(h.from.as_deref().unwrap_or("new")),
                esc(&h.to),
                esc(&h.reason),
                esc(&short(&h.release))
            ));
        }
        let mut hooks = String::new();
        for h in &e.hooks {
            let log = match (&h.log_url, &h.log_stream) {
                (Some(url), Some(stream)) => {
                    format!("<a href=\"{}\">{}</a>", esc(url), esc(stream))
                }
                _ => "-".into(),
            };
            hooks.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td class=\"hook {state}\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{log}</td></tr>",
                esc(&h.name),
                esc(&h.kind),
                esc(h.task_arn.as_deref().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or("-")),
                h.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                esc(h.reason.as_deref().unwrap_or("")),
                state = esc(&h.state),
            ));
        }
        let hooks = if hooks.is_empty() {
            String::new()
        } else {
            format!(
                "<h3>hooks and verification tasks</h3><table class=\"hooks\"><tr><th>name</th><th>kind</th><th>state</th><th>task</th><th>exit code</th><th>reason</th><th>log</th></tr>{hooks}</table>"
            )
        };
        let problems: String = e
            .file_problems
            .iter()
            .map(|p| format!("<li class=\"problem\">{}</li>", esc(p)))
            .collect();
        details.push_str(&format!(
            "<section id=\"detail-{name}\"><h2>{name}</h2><table><tr><th>service</th><th>task definition</th><th>running</th><th>tasks</th></tr>{services}</table>{hooks}<ul>{problems}</ul><h3>recent transitions</h3><ul>{history}</ul></section>\n",
            name = esc(&e.name)
        ));
    }
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>ecs-gitops</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.phase{{font-weight:bold}}.InSync{{background:#c8f0c8}}.Blocked{{background:#fff1a8}}.Deploying,.Baking{{background:#c8dcff}}.RollingBack,.Rejected{{background:#ffc8c8}}.Drifted{{background:#ffd9a8}}.problem{{color:#a00}}.hook.succeeded{{background:#c8f0c8}}.hook.failed,.hook.timed_out{{background:#ffc8c8}}.hook.running,.hook.starting{{background:#c8dcff}}</style></head>
<body><h1>ecs-gitops</h1><p>desired state at <code>{rev}</code>{src}</p>
<table><tr><th>environment</th><th>phase</th><th>desired</th><th>running</th><th>last good</th><th>rejected</th><th>since</th><th>message</th></tr>
{rows}</table>
{details}</body></html>"#,
        rev = esc(r.source_revision.as_deref().unwrap_or("(not read yet)")),
        src = r
            .source_error
            .as_deref()
            .map(|e| format!(
                " &mdash; <span class=\"problem\">source failing: {}</span>",
                esc(e)
            ))
            .unwrap_or_default(),
    )
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
