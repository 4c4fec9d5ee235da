//! Crash storm: the daemon is killed with SIGKILL at random instants of deploy -> bake ->
//! (verify | rollback) and started again at once, 1 to 3 times a run. Every run must end in
//! the right phase, never lose or rewind last good, bake for at least `bake`, and send one
//! UpdateService per target (the deploy, and for a bad release the rollback).
//!
//! `CHAOS_RUNS` (default 10) runs, seeded from `CHAOS_SEED` (default 1) plus the run number;
//! a failure names its seed, and `CHAOS_SEED=<seed> CHAOS_RUNS=1` replays it.
//! `scripts/chaos` runs 100.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::wait_for;
use support::world::{Daemon, World, sha};

const T: Duration = Duration::from_secs(40);
const BAKE_MS: u64 = 2000;
const PARALLEL: usize = 4;

/// xorshift64*: small, seeded, good enough to place kills.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn prod(release: &str) -> String {
    World::yaml(
        "prod",
        "c",
        release,
        &[("web", "web")],
        &format!(
            "verify:\n  alarms: [web-5xx]\n  bake: {}s\n  rollout_timeout: 20s\n",
            BAKE_MS / 1000
        ),
    )
}

fn since_ms(tags: &BTreeMap<String, String>) -> Option<u64> {
    let s = tags.get("ecs-gitops:since")?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    Some(secs.parse::<u64>().ok()? * 1000 + format!("{frac:0<3}")[..3].parse::<u64>().ok()?)
}

#[derive(Debug)]
struct Outcome {
    seed: u64,
    bad: bool,
    kills: usize,
    bake_ms: Option<u64>,
}

/// One run; panics with its seed on any violation.
fn run(seed: u64) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng::new(seed);
    let bad = rng.below(2) == 1;
    let release = if bad { sha(3) } else { sha(2) };
    let fail = |what: String| -> ! {
        panic!(
            "seed {seed} ({}): {what}",
            if bad { "bad release" } else { "good release" }
        )
    };
    let w = rt.block_on(World::with_web(&["c"]));
    let td1 = rt.block_on(w.current_td("c", "web"));
    w.commit("prod", &prod(&sha(1)));
    let d = w.start(&[]);
    d.wait_phase("prod", "InSync", T);
    w.sim.reset_calls();
    // 1 to 3 kills at instants within the first 6 s after the commit.
    let mut kills: Vec<u64> = (0..1 + rng.below(3)).map(|_| rng.below(6000)).collect();
    kills.sort_unstable();
    let start = Instant::now();
    w.commit("prod", &prod(&release));
    let mut d: Option<Daemon> = Some(d);
    let mut alarm_fired = false;
    let mut baking_since: Option<u64> = None;
    let mut next_kill = 0;
    let deadline = start + T;
    loop {
        let elapsed = start.elapsed().as_millis() as u64;
        if next_kill < kills.len() && elapsed >= kills[next_kill] {
            d.take().unwrap().kill();
            d = Some(w.start(&[]));
            next_kill += 1;
        }
        let tags = rt.block_on(w.tags("c", "web"));
        // Last good is never lost, never rewound, never the bad release.
        match tags.get("ecs-gitops:last-good-release").map(String::as_str) {
            Some(g) if g == sha(1) || (!bad && g == release) => {}
            other => fail(format!("last good is {other:?} in {tags:?}")),
        }
        let phase = tags.get("ecs-gitops:phase").cloned().unwrap_or_default();
        if phase == "Baking" && baking_since.is_none() {
            baking_since = since_ms(&tags);
        }
        if bad && !alarm_fired && phase == "Baking" {
            rt.block_on(w.set_alarm("web-5xx", "ALARM"));
            alarm_fired = true;
        }
        let done = next_kill == kills.len()
            && if bad {
                phase == "Rejected"
            } else {
                phase == "InSync" && tags["ecs-gitops:last-good-release"] == release
            };
        if done {
            break;
        }
        if Instant::now() > deadline {
            fail(format!("not settled after {T:?}: {tags:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = d.unwrap();
    // The last daemon started may not have finished its first pass yet.
    let want = if bad { "Rejected" } else { "InSync" };
    let reported = wait_for(T, "the daemon to report the phase", || {
        let e = d.env("prod")?;
        (e["phase"] == want).then_some(e)
    });
    let tags = rt.block_on(w.tags("c", "web"));
    let current = rt.block_on(w.current_td("c", "web"));
    let updates = w.sim.call_count("ecs:UpdateService");
    let mut bake_ms = None;
    if bad {
        if tags.get("ecs-gitops:rejected-reason").map(String::as_str) != Some("alarm") {
            fail(format!("rejected for another reason: {tags:?}"));
        }
        if current != td1 {
            fail(format!("not back on last good: runs {current}"));
        }
        if updates != 2 {
            fail(format!(
                "{updates} UpdateService calls; want the deploy and the rollback"
            ));
        }
    } else {
        if current == td1 {
            fail("the good release does not run".into());
        }
        if updates != 1 {
            fail(format!("{updates} UpdateService calls for one target"));
        }
        let (Some(b), Some(v)) = (baking_since, since_ms(&tags)) else {
            fail(format!(
                "no bake seen (baking since {baking_since:?}, tags {tags:?})"
            ));
        };
        if v < b + BAKE_MS {
            fail(format!(
                "verified {} ms after the bake began (bake {BAKE_MS} ms)",
                v - b
            ));
        }
        bake_ms = Some(v - b);
    }
    if w.sim.call_count("ecs:RegisterTaskDefinition") > 1 {
        fail("the release's revision was registered twice".into());
    }
    if reported["last_good_release"].as_str()
        != tags.get("ecs-gitops:last-good-release").map(String::as_str)
    {
        fail(format!("the status and the record disagree: {reported}"));
    }
    d.kill();
    Outcome {
        seed,
        bad,
        kills: kills.len(),
        bake_ms,
    }
}

#[test]
fn killed_at_random_instants_every_run_ends_right_and_keeps_its_record() {
    let runs: u64 = std::env::var("CHAOS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let base: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    println!("crash storm: {runs} runs, seeds {base}..{}", base + runs);
    let seeds: Vec<u64> = (base..base + runs).collect();
    let mut outcomes = Vec::new();
    for chunk in seeds.chunks(PARALLEL) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|&s| std::thread::spawn(move || run(s)))
            .collect();
        for h in handles {
            match h.join() {
                Ok(o) => outcomes.push(o),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    }
    let kills: usize = outcomes.iter().map(|o| o.kills).sum();
    let bad = outcomes.iter().filter(|o| o.bad).count();
    let bakes: Vec<u64> = outcomes.iter().filter_map(|o| o.bake_ms).collect();
    println!(
        "crash storm: {} runs ({} good, {bad} bad), {kills} SIGKILLs, every run ended right; shortest bake {} ms of {BAKE_MS}; seeds {:?}",
        outcomes.len(),
        outcomes.len() - bad,
        bakes.iter().min().copied().unwrap_or(0),
        outcomes.iter().map(|o| o.seed).collect::<Vec<_>>()
    );
    assert_eq!(outcomes.len() as u64, runs);
}
