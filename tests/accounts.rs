//! Environments in other AWS accounts: `account.role_arn` makes every call of the environment
//! with credentials from STS AssumeRole (through the simulator, which keeps each account's
//! resources apart as moto does), refreshed before they expire; a role that cannot be assumed
//! blocks the environment without touching anything.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::world::{Daemon, World, sha};
use support::{counter, counter_sum, wait_for};

const T: Duration = Duration::from_secs(60);
const ROLE: &str = "arn:aws:iam::210987654321:role/ecs-gitops-deployer";
const XID: &str = "ecs-gitops-prod";

fn yaml(env: &str, release: &str, extra: &str) -> String {
    World::yaml(
        env,
        env,
        release,
        &[("web", "web")],
        &format!("verify:\n  alarms: [web-5xx]\n  bake: 1s\n  rollout_timeout: 30s\n{extra}"),
    )
}

fn prod(release: &str, bake: &str, role: &str) -> String {
    World::yaml(
        "prod",
        "prod",
        release,
        &[("web", "web")],
        &format!(
            "promote_from: staging\naccount:\n  role_arn: {role}\n  external_id: {XID}\nverify:\n  alarms: [web-5xx]\n  bake: {bake}\n  rollout_timeout: 30s\n"
        ),
    )
}

/// staging (cluster `staging`) in the base account; prod (cluster `prod`) in 210987654321,
/// created with the role's credentials; images sha(1..=2) and the alarm in both accounts.
async fn two_accounts() -> (World, String) {
    let mut w = World::new().await;
    w.sim.control(
        "POST",
        "roles",
        Some(&format!(
            r#"{{"role_arn": "{ROLE}", "external_id": "{XID}"}}"#
        )),
    );
    w.cluster("staging").await;
    w.service("staging", "web", "web", &sha(1), false).await;
    for n in 1..=2 {
        w.image("web", &sha(n)).await;
    }
    w.alarm("web-5xx").await;
    w.act_as(Some((ROLE, Some(XID)))).await;
    w.cluster("prod").await;
    let prod_td = w.service("prod", "web", "web", &sha(1), false).await;
    for n in 1..=2 {
        w.image("web", &sha(n)).await;
    }
    w.alarm("web-5xx").await;
    w.act_as(None).await;
    (w, prod_td)
}

fn verified(d: &Daemon, env: &str, release: &str) {
    wait_for(T, &format!("{env} verifies {release}"), || {
        let e = d.env(env)?;
        (e["phase"] == "InSync" && e["last_good_release"] == release).then_some(())
    });
}

fn call_log(w: &World) -> Vec<Value> {
    serde_json::from_str(&w.sim.control("GET", "calls/log", None)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn staging_in_the_base_account_and_prod_in_its_own_account_deploy_and_promote() {
    let (mut w, prod_td) = two_accounts().await;
    w.commit("staging", &yaml("staging", &sha(1), ""));
    w.commit("prod", &prod(&sha(1), "1s", ROLE));
    let d = w.start(&[]);
    verified(&d, "staging", &sha(1));
    verified(&d, "prod", &sha(1));
    w.commit("staging", &yaml("staging", &sha(2), ""));
    verified(&d, "staging", &sha(2));
    w.commit("prod", &prod(&sha(2), "1s", ROLE));
    verified(&d, "prod", &sha(2));

    // Every call about prod carried the role's credentials; staging's the base ones.
    let log = call_log(&w);
    let updates: Vec<&Value> = log
        .iter()
        .filter(|c| c["operation"] == "ecs:UpdateService")
        .collect();
    assert_eq!(updates.len(), 2, "one update per environment: {updates:?}");
    let keys: Vec<&str> = updates
        .iter()
        .map(|c| c["access_key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"ecs-gitops-daemon"),
        "staging with the base key: {keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("ASIA")),
        "prod with the assumed role's temporary key: {keys:?}"
    );
    assert!(log.iter().any(|c| c["operation"] == "sts:AssumeRole"));

    // prod's services live in the role's account: the base credentials do not see them.
    let base = w
        .ecs
        .describe_services()
        .cluster("prod")
        .services("web")
        .send()
        .await;
    let invisible = match base {
        Err(e) => format!("{e:?}").contains("ClusterNotFound"),
        Ok(o) => o.services().is_empty(),
    };
    assert!(invisible, "prod is invisible to the base credentials");
    w.act_as(Some((ROLE, Some(XID)))).await;
    let now = w.current_td("prod", "web").await;
    assert_ne!(now, prod_td, "prod runs a new revision");
    assert!(now.contains(":210987654321:"), "{now}");
    let tags = w.tags("prod", "web").await;
    assert_eq!(tags["ecs-gitops:last-good-release"], sha(2));
    let m = d.metrics();
    assert!(
        counter_sum(
            &m,
            "ecs_gitops_aws_requests_total",
            &[
                r#"service="sts""#,
                r#"operation="AssumeRole""#,
                r#"outcome="ok""#
            ]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_cannot_be_assumed_blocks_the_environment_and_touches_nothing() {
    let (mut w, _) = two_accounts().await;
    let other = "arn:aws:iam::210987654321:role/not-trusted";
    w.commit("staging", &yaml("staging", &sha(1), ""));
    w.commit("prod", &prod(&sha(2), "1s", other));
    w.sim.reset_calls();
    let d = w.start(&[]);
    let e = wait_for(T, "prod blocked on assume_role", || {
        let e = d.env("prod")?;
        (e["phase"] == "Blocked").then_some(e)
    });
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("blocked (assume_role)"), "{msg}");
    assert!(msg.contains(other), "names the role: {msg}");
    assert!(msg.contains("AccessDenied"), "says what STS said: {msg}");
    assert_eq!(e["gates"][0]["name"], "assume_role");
    verified(&d, "staging", &sha(1));
    // A second attempt (backoff) is denied too, and still nothing is called with any other
    // key than the base one, and nothing at all is written for prod.
    wait_for(T, "a retried AssumeRole", || {
        (w.sim.call_count("sts:AssumeRole") >= 2).then_some(())
    });
    let log = call_log(&w);
    assert!(
        log.iter()
            .all(|c| c["access_key"] == "ecs-gitops-daemon" || c["access_key"].is_null()),
        "no call with assumed credentials: {log:?}"
    );
    // prod's resources are only reachable with the role: nothing there carries a record.
    w.act_as(Some((ROLE, Some(XID)))).await;
    let tags = w.tags("prod", "web").await;
    assert!(
        !tags.keys().any(|k| k.starts_with("ecs-gitops:")),
        "nothing written to prod: {tags:?}"
    );
    let m = d.metrics();
    assert_eq!(
        counter(
            &m,
            r#"ecs_gitops_gate_blocks_total{environment="prod",gate="assume_role"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        counter_sum(
            &m,
            "ecs_gitops_reconcile_errors_total",
            &[r#"environment="prod""#]
        ),
        0.0,
        "a block, not an error"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_expiring_mid_bake_are_refreshed_without_a_failed_pass() {
    let (w, _) = two_accounts().await;
    // The role's credentials last 6 s; the bake lasts 15 s.
    w.sim.config(r#"{"sts_credential_seconds": 6}"#);
    w.commit("staging", &yaml("staging", &sha(2), ""));
    w.commit("prod", &prod(&sha(1), "1s", ROLE));
    let d = w.start(&[]);
    verified(&d, "staging", &sha(2));
    verified(&d, "prod", &sha(1));
    let before = w.sim.call_count("sts:AssumeRole");
    w.commit("prod", &prod(&sha(2), "15s", ROLE));
    d.wait_phase("prod", "Baking", T);
    verified(&d, "prod", &sha(2));
    let after = w.sim.call_count("sts:AssumeRole");
    assert!(
        after >= before + 2,
        "refreshed during the bake: {before} -> {after}"
    );
    let m = d.metrics();
    assert_eq!(
        counter_sum(
            &m,
            "ecs_gitops_reconcile_errors_total",
            &[r#"environment="prod""#]
        ),
        0.0,
        "no pass failed: {m}"
    );
    let with_role = call_log(&w)
        .iter()
        .filter(|c| {
            c["access_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("ASIA"))
        })
        .count();
    assert!(with_role > 0, "prod was read with the role");
}
