//! Several replicas over one DynamoDB lease table (the simulator's, through moto): each
//! environment has exactly one writer, environments spread over the live replicas, a killed
//! replica's environments are taken over and resumed from the record, and a replica that cannot
//! reach the table stops writing before anyone else can take its environments.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::world::{Daemon, World, binary, sha};
use support::{counter, wait_for};

const T: Duration = Duration::from_secs(90);
const TABLE: &str = "ecs-gitops-leases";
/// Short leases for tests: renewed every 1 s, writes stop 1 s before the end.
const TTL: &str = "3s";

fn env_yaml(env: &str, release: &str, bake: &str) -> String {
    World::yaml(
        env,
        env,
        release,
        &[("web", "web")],
        &format!("verify:\n  alarms: [web-5xx]\n  bake: {bake}\n  rollout_timeout: 30s\n"),
    )
}

/// `n` environments `e0..`, each its own cluster with one service on sha(1), images
/// sha(1..=3), the alarm, the lease table made with `ecs-gitops lease-table create`.
async fn world(n: usize) -> (World, Vec<String>) {
    let w = World::new().await;
    let envs: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    for e in &envs {
        w.cluster(e).await;
        w.services(e, &["web"], "web", &sha(1)).await;
    }
    for k in 1..=3 {
        w.image("web", &sha(k)).await;
    }
    w.alarm("web-5xx").await;
    for e in &envs {
        w.commit(e, &env_yaml(e, &sha(1), "1s"));
    }
    let out = binary(&w.sim.url)
        .args(["lease-table", "create", TABLE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created"));
    (w, envs)
}

fn replica(w: &World, id: &str) -> Daemon {
    Daemon::start_as(
        &w.sim.url,
        w.repo.path().as_os_str(),
        &[
            "--lease-table",
            TABLE,
            "--replica-id",
            id,
            "--lease-ttl",
            TTL,
        ],
        &format!("key-{id}"),
    )
}

/// Environment -> replicas whose metrics say they hold its lease.
fn holders(replicas: &[(&str, &Daemon)], envs: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> =
        envs.iter().map(|e| (e.clone(), Vec::new())).collect();
    for (id, d) in replicas {
        let m = d.metrics();
        for e in envs {
            if counter(&m, &format!("ecs_gitops_lease_held{{environment=\"{e}\"}}")) == 1.0 {
                out.get_mut(e).unwrap().push(id.to_string());
            }
        }
    }
    out
}

fn counts(h: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for owners in h.values() {
        for o in owners {
            *c.entry(o.clone()).or_insert(0) += 1;
        }
    }
    c
}

fn in_sync_everywhere(replicas: &[(&str, &Daemon)], envs: &[String], release: &str) -> bool {
    envs.iter().all(|e| {
        replicas.iter().any(|(_, d)| {
            d.env(e).is_some_and(|s| {
                s["owned_elsewhere"] == false
                    && s["phase"] == "InSync"
                    && s["last_good_release"] == release
            })
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_nine_environments_one_writer_each_and_a_fourth_gets_work() {
    let (w, envs) = world(9).await;
    let (a, b, c) = (replica(&w, "a"), replica(&w, "b"), replica(&w, "c"));
    let three = [("a", &a), ("b", &b), ("c", &c)];
    wait_for(T, "3 environments each", || {
        let h = holders(&three, &envs);
        let n = counts(&h);
        (h.values().all(|o| o.len() == 1) && n.values().all(|k| *k == 3) && n.len() == 3)
            .then_some(())
    });
    // Exactly one owner at every sampled instant (30 samples over ~3 s, each replica asked).
    for _ in 0..30 {
        let h = holders(&three, &envs);
        for (e, owners) in &h {
            assert!(owners.len() <= 1, "{e} has two writers: {owners:?}");
        }
        std::thread::sleep(Duration::from_millis(100)); // sampling period, not a wait
    }
    wait_for(T, "every environment adopted", || {
        in_sync_everywhere(&three, &envs, &sha(1)).then_some(())
    });
    // Every replica reports every environment's owner, and is ready.
    let s = a.status();
    for e in &envs {
        let st = s["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == e.as_str())
            .unwrap();
        assert!(st["owner"].is_string(), "{st}");
    }
    for d in [&a, &b, &c] {
        let (code, _) = support::http("GET", &format!("{}/readyz", d.url), None);
        assert_eq!(
            code, 200,
            "a replica is ready though it owns only some environments"
        );
    }
    let (_, page) = support::http("GET", &format!("{}/", a.url), None);
    assert!(
        page.contains("lease held by this replica, <strong>a</strong>")
            && page.contains("(this page's replica does not act on it)"),
        "the page names the owners"
    );

    // A fourth replica joins: each of the three gives one environment up, and the fourth
    // takes them; no environment is without an owner for longer than the TTL.
    let d4 = replica(&w, "d");
    let four = [("a", &a), ("b", &b), ("c", &c), ("d", &d4)];
    let mut unowned_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    wait_for(T, "the fourth replica holds 3", || {
        let h = holders(&four, &envs);
        for (e, owners) in &h {
            assert!(owners.len() <= 1, "{e} has two writers: {owners:?}");
            if owners.is_empty() {
                let since = *unowned_since.entry(e.clone()).or_insert_with(Instant::now);
                longest = longest.max(since.elapsed());
            } else {
                unowned_since.remove(e);
            }
        }
        (counts(&h).get("d") == Some(&3) && h.values().all(|o| o.len() == 1)).then_some(())
    });
    assert!(
        longest < Duration::from_secs(3),
        "an environment was unowned for {longest:?}, longer than the TTL"
    );
    let n = counts(&holders(&four, &envs));
    assert!(n.values().all(|k| *k <= 3), "at most ceil(9/4) each: {n:?}");
    // The moved environments carry on from their record (nothing redeployed).
    assert_eq!(w.sim.call_count("ecs:UpdateService"), 0);
    for d in [a, b, c, d4] {
        d.terminate(Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replica_baking_prod_is_killed_and_another_finishes_that_bake_without_a_second_update()
{
    let (w, envs) = world(3).await;
    let (a, b, c) = (replica(&w, "a"), replica(&w, "b"), replica(&w, "c"));
    let all = [("a", &a), ("b", &b), ("c", &c)];
    wait_for(T, "every environment adopted", || {
        in_sync_everywhere(&all, &envs, &sha(1)).then_some(())
    });
    w.commit("e0", &env_yaml("e0", &sha(2), "20s"));
    let owner = wait_for(T, "e0 baking", || {
        all.iter().find_map(|(id, d)| {
            let s = d.env("e0")?;
            (s["owned_elsewhere"] == false && s["phase"] == "Baking").then_some(id.to_string())
        })
    });
    let since = w.tags("e0", "web").await["ecs-gitops:since"].clone();
    let updates = w.sim.call_count("ecs:UpdateService");
    assert_eq!(updates, 1);
    let killed_at = Instant::now();
    let mut survivors = Vec::new();
    for (id, d) in [("a", a), ("b", b), ("c", c)] {
        if id == owner {
            d.kill();
        } else {
            survivors.push((id, d));
        }
    }
    let (new_owner, took) = wait_for(T, "another replica owns e0", || {
        survivors.iter().find_map(|(id, d)| {
            let s = d.env("e0")?;
            (s["owner"] == *id && s["owned_elsewhere"] == false)
                .then(|| (id.to_string(), killed_at.elapsed()))
        })
    });
    assert_ne!(new_owner, owner);
    println!("takeover after SIGKILL: {took:?} (TTL {TTL})");
    let d = &survivors.iter().find(|(id, _)| *id == new_owner).unwrap().1;
    // Still the same bake: the record's start is unchanged while the new owner bakes.
    let e = d.env("e0").unwrap();
    if e["phase"] == "Baking" {
        assert_eq!(w.tags("e0", "web").await["ecs-gitops:since"], since);
    }
    wait_for(T, "e0 verifies sha(2)", || {
        let e = d.env("e0")?;
        (e["phase"] == "InSync" && e["last_good_release"] == sha(2).as_str()).then_some(())
    });
    let history: Vec<Value> = d.env("e0").unwrap()["history"].as_array().unwrap().clone();
    let bakes = history.iter().filter(|h| h["to"] == "Baking").count();
    assert!(bakes <= 1, "the bake was not started again: {history:?}");
    assert_eq!(
        w.sim.call_count("ecs:UpdateService"),
        updates,
        "no second UpdateService"
    );
    for (_, d) in survivors {
        d.terminate(Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_off_from_dynamodb_stops_writing_before_its_leases_can_be_taken() {
    let (w, envs) = world(2).await;
    let (a, b) = (replica(&w, "a"), replica(&w, "b"));
    let both = [("a", &a), ("b", &b)];
    wait_for(T, "one environment each, adopted", || {
        let n = counts(&holders(&both, &envs));
        (n.get("a") == Some(&1)
            && n.get("b") == Some(&1)
            && in_sync_everywhere(&both, &envs, &sha(1)))
        .then_some(())
    });
    let h = holders(&both, &envs);
    let a_env = h
        .iter()
        .find(|(_, o)| o == &&vec!["a".to_string()])
        .unwrap()
        .0
        .clone();
    // From now on every DynamoDB call of replica a fails; its environment gets a new release,
    // so whoever owns it writes.
    w.sim
        .fault(r#"{"operation": "dynamodb:*", "fault": "http500", "access_key": "key-a"}"#);
    let cut = support::now_epoch();
    w.commit(&a_env, &env_yaml(&a_env, &sha(2), "1s"));
    wait_for(T, "b verifies a's environment", || {
        let e = b.env(&a_env)?;
        (e["owned_elsewhere"] == false
            && e["phase"] == "InSync"
            && e["last_good_release"] == sha(2).as_str())
        .then_some(())
    });
    let log: Vec<Value> = serde_json::from_str(&w.sim.control("GET", "calls/log", None)).unwrap();
    let writes = ["ecs:UpdateService", "ecs:TagResource", "ecs:UntagResource"];
    let on_env = |key: &str| -> Vec<f64> {
        log.iter()
            .filter(|c| c["access_key"] == key && c["cluster"] == a_env.as_str())
            .filter(|c| writes.contains(&c["operation"].as_str().unwrap()))
            .map(|c| c["at"].as_f64().unwrap())
            .collect()
    };
    let (by_a, by_b) = (on_env("key-a"), on_env("key-b"));
    assert!(
        !by_b.is_empty(),
        "b wrote to a's environment after taking it"
    );
    let a_last = by_a.iter().cloned().fold(0.0, f64::max);
    let b_first = by_b.iter().cloned().fold(f64::MAX, f64::min);
    // a's fence closes at most TTL - margin (2 s) after its last renewal, which was before the
    // cut; b can only take the lease once it expired (3 s after that renewal).
    assert!(
        by_a.iter().all(|t| *t < cut + 2.5),
        "a wrote after its fence closed: {by_a:?} (cut at {cut})"
    );
    assert!(
        a_last < b_first,
        "the writers overlap: a's last write {a_last}, b's first {b_first}"
    );
    let m = a.metrics();
    assert_eq!(
        counter(
            &m,
            &format!("ecs_gitops_lease_held{{environment=\"{a_env}\"}}")
        ),
        0.0,
        "a no longer claims the lease"
    );
    a.terminate(Duration::from_secs(10));
    b.terminate(Duration::from_secs(10));
}
