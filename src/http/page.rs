//! The status page: server-rendered HTML, no JavaScript. A pipeline of environments in
//! promotion order, then each environment with its bake progress, services, hooks, an SVG
//! timeline of its recent transitions and links to GitHub and the AWS console. Phases are
//! written out, never shown by colour alone; a dark scheme follows the browser's preference;
//! the layout narrows to a phone.

use std::collections::BTreeMap;

use crate::status::{EnvironmentStatus, StatusReport};

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

fn link(url: &Option<String>, text: &str) -> String {
    match url {
        Some(u) => format!("<a href=\"{}\">{}</a>", esc(u), esc(text)),
        None => esc(text),
    }
}

/// Environments in promotion order: each after the one it promotes from (then by name).
fn pipeline_order(envs: &[EnvironmentStatus]) -> Vec<&EnvironmentStatus> {
    let by_name: BTreeMap<&str, &EnvironmentStatus> =
        envs.iter().map(|e| (e.name.as_str(), e)).collect();
    let depth = |e: &EnvironmentStatus| {
        let mut d = 0;
        let mut cur = e;
        while let Some(up) = cur.promote_from.as_deref().and_then(|u| by_name.get(u)) {
            d += 1;
            cur = up;
            if d > envs.len() {
                break;
            }
        }
        d
    };
    let mut out: Vec<&EnvironmentStatus> = envs.iter().collect();
    out.sort_by_key(|e| (depth(e), e.name.clone()));
    out
}

/// Between an environment and the one it promotes from: is there a verified release upstream
/// that this one does not run yet, and what holds it.
fn promotion(up: &EnvironmentStatus, e: &EnvironmentStatus) -> (&'static str, String) {
    let upstream = up.last_good_release.as_deref();
    if upstream.is_none() || upstream == e.last_good_release.as_deref() {
        return ("current", "up to date".into());
    }
    let waiting = format!("{} verified in {}", short(&up.last_good_release), up.name);
    let failed: Vec<&str> = e
        .gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| g.name.as_str())
        .collect();
    if e.desired_release.as_deref() == upstream && !failed.is_empty() {
        return (
            "blocked",
            format!("{waiting}; blocked by {}", failed.join(", ")),
        );
    }
    if e.desired_release.as_deref() == upstream {
        return ("moving", format!("{waiting}; promoting"));
    }
    ("pending", format!("{waiting}; promotion pending"))
}

fn bake_bar(e: &EnvironmentStatus, now_ms: u64) -> String {
    let (Some(start), Some(secs)) = (e.bake_started_ms, e.bake_seconds) else {
        return String::new();
    };
    let total = (secs * 1000).max(1);
    let done = now_ms.saturating_sub(start).min(total);
    let pct = done * 100 / total;
    let left = (total - done).div_ceil(1000);
    format!(
        "<div class=\"bake\"><span>bake: {left}s left of {secs}s</span><div class=\"track\" role=\"progressbar\" aria-label=\"bake of {name}\" aria-valuemin=\"0\" aria-valuemax=\"100\" aria-valuenow=\"{pct}\"><div class=\"bar\" style=\"width:{pct}%\"></div></div></div>",
        name = esc(&e.name)
    )
}

/// The last transitions, oldest on the left, one segment each in the phase's colour with its
/// name, and rollbacks and blocks marked with their reason.
fn timeline(e: &EnvironmentStatus) -> String {
    let entries: Vec<_> = e
        .history
        .iter()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if entries.is_empty() {
        return String::new();
    }
    let w = 78;
    let width = w * entries.len();
    let mut svg = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {width} 64\" width=\"{width}\" height=\"64\" role=\"img\" aria-label=\"last {} transitions of {}\"><title>transitions of {}</title>",
        entries.len(),
        esc(&e.name),
        esc(&e.name)
    );
    for (i, h) in entries.iter().enumerate() {
        let x = i * w;
        svg.push_str(&format!(
            "<g class=\"seg {to}\"><rect x=\"{x}\" y=\"4\" width=\"{}\" height=\"24\"><title>{at}: {from} to {to} ({reason}) {rel}</title></rect><text x=\"{}\" y=\"20\">{abbr}</text>",
            w - 2,
            x + 4,
            to = esc(&h.to),
            at = esc(&h.at),
            from = esc(h.from.as_deref().unwrap_or("new")),
            reason = esc(&h.reason),
            rel = esc(&short(&h.release)),
            abbr = esc(&h.to),
        ));
        let mark = match h.to.as_str() {
            "RollingBack" | "Rejected" => Some(("rollback", format!("↩ {}", h.reason))),
            "Blocked" => Some(("blocked", format!("⛔ {}", h.reason))),
            _ => None,
        };
        if let Some((class, text)) = mark {
            svg.push_str(&format!(
                "<text class=\"mark {class}\" x=\"{}\" y=\"44\">{}</text>",
                x + 4,
                esc(&text)
            ));
        }
        svg.push_str(&format!(
            "<text class=\"rel\" x=\"{}\" y=\"58\">{}</text></g>",
            x + 4,
            esc(&short(&h.release))
        ));
    }
    svg.push_str("</svg>");
    svg
}

pub fn render_page(r: &StatusReport, now_ms: u64) -> String {
    let order = pipeline_order(&r.environments);
    let by_name: BTreeMap<&str, &EnvironmentStatus> = r
        .environments
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut pipeline = String::new();
    for e in &order {
        if let Some(up) = e.promote_from.as_deref().and_then(|u| by_name.get(u)) {
            let (state, text) = promotion(up, e);
            pipeline.push_str(&format!(
                "<li class=\"arrow {state}\" aria-label=\"from {} to {}: {}\">&rarr; {}</li>",
                esc(&up.name),
                esc(&e.name),
                esc(&text),
                esc(&text)
            ));
        }
        pipeline.push_str(&format!(
            "<li class=\"stage\" id=\"stage-{name}\"><h2>{name}</h2><p class=\"phase {phase}\">{phase}</p><dl><dt>running</dt><dd>{run}</dd><dt>last good</dt><dd>{good}</dd></dl></li>",
            name = esc(&e.name),
            phase = esc(&e.phase),
            run = link(&e.commit_url, &short(&e.running_release)),
            good = esc(&short(&e.last_good_release)),
        ));
    }
    let mut rows = String::new();
    let mut details = String::new();
    for e in &order {
        let message = e.error.as_deref().unwrap_or(&e.message);
        rows.push_str(&format!(
            "<tr id=\"env-{name}\"><th scope=\"row\"><a href=\"#detail-{name}\">{name}</a></th><td class=\"phase {phase}\">{phase}</td><td title=\"{dfull}\">{d}</td><td>{run}</td><td>{good}</td><td>{rej}</td><td>{since}</td><td>{msg}</td></tr>\n",
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
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td><meter min=\"0\" max=\"{}\" value=\"{}\" aria-label=\"{} of {} tasks running\"></meter> {}/{}</td><td class=\"ecs-deployment\">{}</td></tr>",
                esc(&svc.name),
                esc(svc.task_definition.rsplit('/').next().unwrap_or_default()),
                esc(&short(&svc.running_release)),
                svc.desired_count.max(1),
                svc.running_count,
                svc.running_count,
                svc.desired_count,
                svc.running_count,
                svc.desired_count,
                esc(&ecs_deployment(svc)),
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
                "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"hook {state}\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{log}</td></tr>",
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
                "<h3>hooks and verification tasks</h3><table class=\"hooks\"><tr><th scope=\"col\">name</th><th scope=\"col\">kind</th><th scope=\"col\">state</th><th scope=\"col\">task</th><th scope=\"col\">exit code</th><th scope=\"col\">reason</th><th scope=\"col\">log</th></tr>{hooks}</table>"
            )
        };
        let gates: String = e
            .gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| {
                format!(
                    "<li class=\"gate\">gate {}: {}</li>",
                    esc(&g.name),
                    esc(&g.detail)
                )
            })
            .collect();
        let problems: String = e
            .file_problems
            .iter()
            .map(|p| format!("<li class=\"problem\">{}</li>", esc(p)))
            .collect();
        let mut links = vec![link(&e.console_url, "ECS services")];
        if e.alarms_url.is_some() {
            links.push(link(&e.alarms_url, "alarms"));
        }
        if e.commit_url.is_some() {
            links.push(link(&e.commit_url, "release commit"));
        }
        if e.source_url.is_some() {
            links.push(link(&e.source_url, "desired-state commit"));
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
        details.push_str(&format!(
            "<section id=\"detail-{name}\" aria-labelledby=\"title-{name}\"><h2 id=\"title-{name}\">{name} <span class=\"phase {phase}\">{phase}</span></h2><p class=\"message\">{msg}</p>{owner}<p class=\"links\">{links}</p>{bake}<ul class=\"gates\">{gates}</ul><table class=\"services\"><tr><th scope=\"col\">service</th><th scope=\"col\">task definition</th><th scope=\"col\">running</th><th scope=\"col\">tasks</th><th scope=\"col\">ECS deployment</th></tr>{services}</table>{hooks}<ul>{problems}</ul><h3>timeline</h3>{timeline}<h3>recent transitions</h3><ul>{history}</ul></section>\n",
            name = esc(&e.name),
            phase = esc(&e.phase),
            msg = esc(e.error.as_deref().unwrap_or(&e.message)),
            owner = match &e.owner {
                Some(o) if e.owned_elsewhere => format!(
                    "<p class=\"owner\">lease held by replica <strong>{}</strong> (this page's replica does not act on it)</p>",
                    esc(o)
                ),
                Some(o) => format!(
                    "<p class=\"owner\">lease held by this replica, <strong>{}</strong></p>",
                    esc(o)
                ),
                None => String::new(),
            },
            links = links.join(" · "),
            bake = bake_bar(e, now_ms),
            timeline = timeline(e),
        ));
    }
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark"><meta http-equiv="refresh" content="5"><title>ecs-gitops</title>
<style>
:root{{--fg:#1b1b1b;--bg:#fff;--muted:#555;--line:#c8c8c8;--ok:#c8f0c8;--info:#c8dcff;--warn:#fff1a8;--bad:#ffc8c8;--drift:#ffd9a8;--link:#0645ad}}
@media (prefers-color-scheme: dark){{:root{{--fg:#e8e8e8;--bg:#16181c;--muted:#b0b0b0;--line:#444;--ok:#1f5130;--info:#1d3a66;--warn:#5c4d00;--bad:#6b2020;--drift:#6b4010;--link:#8ab4f8}}}}
body{{font-family:system-ui,sans-serif;margin:1.5em;color:var(--fg);background:var(--bg)}}a{{color:var(--link)}}
table{{border-collapse:collapse;margin-bottom:1em;max-width:100%}}td,th{{border:1px solid var(--line);padding:4px 8px;text-align:left}}
.pipeline ol{{display:flex;flex-wrap:wrap;align-items:center;gap:.5em;list-style:none;padding:0}}
.stage{{border:1px solid var(--line);border-radius:6px;padding:.5em 1em;min-width:11em}}.stage h2{{margin:0;font-size:1.1em}}.stage dl{{margin:.3em 0;display:grid;grid-template-columns:auto auto;gap:0 .6em}}.stage dd{{margin:0}}
.arrow{{font-size:.9em;color:var(--muted);max-width:14em}}.arrow.pending,.arrow.blocked{{font-weight:bold;color:var(--fg)}}
.phase{{font-weight:bold;padding:0 .3em}}.InSync{{background:var(--ok)}}.Blocked{{background:var(--warn)}}.Deploying,.Baking{{background:var(--info)}}.RollingBack,.Rejected{{background:var(--bad)}}.Drifted,.Suspended{{background:var(--drift)}}
.problem{{color:#c00}}.hook.succeeded{{background:var(--ok)}}.hook.failed,.hook.timed_out{{background:var(--bad)}}.hook.running,.hook.starting{{background:var(--info)}}
.bake .track{{border:1px solid var(--line);height:.8em;width:min(30em,100%)}}.bake .bar{{height:100%;background:#3a7bd5}}
svg.timeline{{max-width:100%;height:auto}}svg.timeline rect{{fill:var(--line)}}svg.timeline .InSync rect{{fill:var(--ok)}}svg.timeline .Blocked rect{{fill:var(--warn)}}svg.timeline .Deploying rect,svg.timeline .Baking rect{{fill:var(--info)}}svg.timeline .RollingBack rect,svg.timeline .Rejected rect{{fill:var(--bad)}}svg.timeline .Drifted rect,svg.timeline .Suspended rect{{fill:var(--drift)}}svg.timeline text{{font-size:10px;fill:var(--fg)}}svg.timeline .mark{{font-weight:bold}}
@media (max-width:600px){{body{{margin:.6em}}.summary{{display:block;overflow-x:auto}}.summary td:nth-child(n+6),.summary th:nth-child(n+6){{display:none}}.stage{{min-width:0;width:100%}}}}
</style></head>
<body><h1>ecs-gitops</h1><p>desired state at <code>{rev}</code>{src}</p>
<nav class="pipeline" aria-label="promotion pipeline"><ol>{pipeline}</ol></nav>
<table class="summary"><tr><th scope="col">environment</th><th scope="col">phase</th><th scope="col">desired</th><th scope="col">running</th><th scope="col">last good</th><th scope="col">rejected</th><th scope="col">since</th><th scope="col">message</th></tr>
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

/// `BLUE_GREEN IN_PROGRESS at PRODUCTION_TRAFFIC_SHIFT, 50% traffic, paused (hook-0)`; the
/// strategy alone when ECS has no deployment in flight.
fn ecs_deployment(svc: &crate::status::ServiceStatus) -> String {
    let mut out = if svc.strategy.is_empty() {
        "ROLLING".to_string()
    } else {
        svc.strategy.clone()
    };
    if let Some(st) = &svc.service_deployment_status {
        out.push_str(&format!(" {st}"));
    }
    if let Some(stage) = &svc.lifecycle_stage {
        out.push_str(&format!(" at {stage}"));
    }
    if let Some(t) = svc.production_traffic_percent {
        out.push_str(&format!(", {t}% traffic"));
    }
    if let Some(h) = &svc.paused_by_hook {
        out.push_str(&format!(", paused ({h})"));
    }
    out
}
