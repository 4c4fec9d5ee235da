//! Scenarios several test binaries drive.
#![allow(dead_code)]

use std::time::Duration;

use super::wait_for;
use super::world::{Daemon, World, sha};

const T: Duration = Duration::from_secs(30);

pub fn prod(release: &str, bake: &str) -> String {
    World::yaml(
        "prod",
        "c",
        release,
        &[("web", "web")],
        &format!("verify:\n  alarms: [web-5xx]\n  bake: {bake}\n  rollout_timeout: 20s\n"),
    )
}

/// prod deploys sha(2) and verifies it, then sha(3) is rolled back on its alarm.
pub async fn rolled_back(extra: &[&str]) -> (World, Daemon) {
    let w = World::with_web(&["c"]).await;
    w.commit("prod", &prod(&sha(1), "1s"));
    let d = w.start(extra);
    d.wait_phase("prod", "InSync", T);
    w.commit("prod", &prod(&sha(2), "1s"));
    wait_for(T, "sha(2) verified", || {
        let e = d.env("prod")?;
        (e["phase"] == "InSync" && e["last_good_release"] == sha(2).as_str()).then_some(())
    });
    w.commit("prod", &prod(&sha(3), "30s"));
    d.wait_phase("prod", "Baking", T);
    w.set_alarm("web-5xx", "ALARM").await;
    d.wait_phase("prod", "Rejected", T);
    (w, d)
}
