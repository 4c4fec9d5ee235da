//! The one-shot commands: `plan` (decide without acting), `status` (ask a daemon) and
//! `promote` (commit another environment's verified release).

pub mod promote;
pub mod rollback;

use std::fmt::Write;
use std::time::Duration;

use crate::aws::Aws;
use crate::controller::{AwsWorld, pass};
use crate::desired::FileState;
use crate::metrics::Metrics;
use crate::observe::{Observer, health::HealthChecker};
use crate::plan::{Action, UpdateWhy, short_td};
use crate::source::Source;
use crate::status::StatusReport;

/// What the next pass of each environment would do, and why.
pub async fn plan(repo: &str, branch: &str, path: &str, envs: &[String]) -> anyhow::Result<String> {
    let cache = tempfile::Builder::new()
        .prefix("ecs-gitops-plan-")
        .tempdir()?;
    let source = Source::new(repo, branch, path, cache.path());
    let snap = source.load().await?;
    let aws = Aws::from_env(std::sync::Arc::new(Metrics::new())).await;
    let world = AwsWorld {
        observer: Observer::new(aws, HealthChecker::new(Duration::from_secs(5))?),
        leases: None,
    };
    let mut out = String::new();
    writeln!(
        out,
        "desired state: {} at {}",
        source.display(),
        snap.revision
    )?;
    for (env, file) in &snap.files {
        if !envs.is_empty() && !envs.contains(env) {
            continue;
        }
        writeln!(out, "\nenvironment {env}")?;
        let desired = match file {
            FileState::Invalid(problems) => {
                writeln!(out, "  file invalid; nothing would be deployed from it:")?;
                for p in problems {
                    writeln!(out, "    {p}")?;
                }
                continue;
            }
            FileState::Valid(d) => d,
        };
        let upstream = desired.promote_from.as_deref().and_then(|u| snap.valid(u));
        let pass = match pass::decide(
            &world,
            desired,
            upstream,
            &snap.revision,
            &crate::controller::SystemClock,
            Duration::from_secs(10),
            false,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                writeln!(out, "  cannot observe: {e}")?;
                continue;
            }
        };
        let p = &pass.plan;
        let now = match &pass.record {
            Ok(Some(r)) => r.phase.as_str(),
            Ok(None) => "(new: would adopt)",
            Err(_) => "(record unreadable)",
        };
        writeln!(out, "  phase: {now} -> {}", p.phase())?;
        writeln!(out, "  desired release: {}", desired.release)?;
        if let Some(r) = &p.record.last_good {
            writeln!(out, "  last good: {r}")?;
        }
        if let Some((r, why)) = &p.record.rejected {
            writeln!(out, "  rejected: {r} ({why})")?;
        }
        writeln!(out, "  why: {}", p.message)?;
        for (name, s) in &pass.observed.services {
            let ecs = match &s.service_deployment {
                Some(Ok(Some(d))) if d.status.in_flight() || d.status.rolling_back() => format!(
                    "; ECS deployment {} at {}",
                    d.status.as_str(),
                    d.lifecycle_stage.as_deref().unwrap_or("-")
                ),
                _ => String::new(),
            };
            writeln!(
                out,
                "  service {name}: {} deployment{ecs}",
                s.strategy.as_str().to_lowercase().replace('_', "/")
            )?;
        }
        for g in &p.gates {
            writeln!(
                out,
                "  gate {:<9} {}: {}",
                g.name.as_str(),
                if g.passed { "pass" } else { "FAIL" },
                g.detail
            )?;
        }
        for h in &p.hooks {
            writeln!(
                out,
                "  {} {:<12} {}{}",
                h.kind.as_str(),
                h.name,
                h.state,
                h.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )?;
        }
        if p.actions.is_empty() {
            writeln!(out, "  actions: none")?;
        }
        for a in &p.actions {
            match a {
                Action::Deploy {
                    service,
                    base_task_definition,
                    image,
                    ..
                } => writeln!(
                    out,
                    "  action: register a revision of {} with image {image}, update service {service}",
                    short_td(base_task_definition)
                )?,
                Action::Update {
                    service,
                    task_definition,
                    why,
                } => writeln!(
                    out,
                    "  action: update service {service} to {} ({})",
                    short_td(task_definition),
                    match why {
                        UpdateWhy::Rollback => "rollback",
                        UpdateWhy::Drift => "drift correction",
                        UpdateWhy::Restore => "restore last good",
                    }
                )?,
                Action::StopDeployment {
                    service,
                    service_deployment,
                } => writeln!(
                    out,
                    "  action: stop ECS' service deployment {} of {service} with ROLLBACK (traffic back to last good at once)",
                    short_td(service_deployment)
                )?,
                Action::RunTask {
                    hook,
                    kind,
                    base_task_definition,
                    release,
                    command,
                    started_by,
                    ..
                } => writeln!(
                    out,
                    "  action: run {} hook {hook}: `{}` in {}'s revision of {} (startedBy {started_by})",
                    kind.as_str(),
                    command.join(" "),
                    release.short(),
                    short_td(base_task_definition)
                )?,
                Action::StopTask { hook, task_arn, .. } => {
                    writeln!(out, "  action: stop hook {hook}'s task {task_arn}")?
                }
            }
        }
    }
    Ok(out)
}

/// Fetches `/api/v1/status` and renders it as a table (or raw JSON).
pub async fn status(url: &str, json: bool) -> anyhow::Result<String> {
    let endpoint = format!("{}/api/v1/status", url.trim_end_matches('/'));
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(&endpoint)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {endpoint} (--url): {e}"))?;
    let text = resp.text().await?;
    if json {
        return Ok(text + "\n");
    }
    let report: StatusReport = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!("{endpoint} did not answer with ecs-gitops status JSON: {e}")
    })?;
    let short = |x: &Option<String>| {
        x.as_deref()
            .map(|v| v.chars().take(7).collect())
            .unwrap_or_else(|| "-".to_string())
    };
    let mut out = String::new();
    writeln!(
        out,
        "{:<12} {:<12} {:<8} {:<8} {:<9} {:<8} {:<20} MESSAGE",
        "ENVIRONMENT", "PHASE", "DESIRED", "RUNNING", "LAST-GOOD", "REJECTED", "SINCE"
    )?;
    for e in &report.environments {
        writeln!(
            out,
            "{:<12} {:<12} {:<8} {:<8} {:<9} {:<8} {:<20} {}",
            e.name,
            e.phase,
            short(&e.desired_release),
            short(&e.running_release),
            short(&e.last_good_release),
            short(&e.rejected_release),
            e.since.as_deref().unwrap_or("-"),
            e.error.as_deref().unwrap_or(&e.message)
        )?;
    }
    Ok(out)
}
