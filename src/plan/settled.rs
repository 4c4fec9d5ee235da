//! The settled phases (InSync, Blocked, Rejected, Drifted): wait for git to name a new release,
//! hold a rejected one, and put back what someone changed by hand.

use super::{Action, Ctx, Gate, Outcome, Plan, UpdateWhy, Why};
use crate::desired::{DriftMode, Release};
use crate::record::{Phase, Record};

impl Ctx<'_> {
    pub(super) fn settled(&self, r: &Record) -> Plan {
        let d = &self.desired.release;
        let drifted: Vec<(&String, String)> = self
            .services()
            .filter_map(|(n, s)| {
                let good = self.last_good_td(r, n);
                (s.current() != good).then_some((n, good))
            })
            .collect();
        let at_desired = r.last_good.as_ref() == Some(d) && !self.overrides_pending(r);
        let held = r.rejected.as_ref().filter(|(x, _)| x == d);
        if !at_desired && held.is_none() {
            let gates = self.gates(r);
            if gates.iter().all(|g| g.passed) {
                return self.start_deploy(r, gates, Why::NewRelease);
            }
            let failed: Vec<&Gate> = gates.iter().filter(|g| !g.passed).collect();
            let msg = format!(
                "release {} blocked: {}",
                d.short(),
                failed
                    .iter()
                    .map(|g| format!("{} gate: {}", g.name.as_str(), g.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let mut p = self.settle(r, Phase::Blocked, Why::Gate, msg);
            p.outcomes = failed.iter().map(|g| Outcome::Blocked(g.name)).collect();
            p.gates = gates;
            self.correct_drift(&mut p, &drifted);
            return p;
        }
        if !drifted.is_empty() {
            let names: Vec<&str> = drifted.iter().map(|(n, _)| n.as_str()).collect();
            let mut p = self.settle(
                r,
                Phase::Drifted,
                Why::Drift,
                format!(
                    "{} not on the recorded task definition{}",
                    names.join(", "),
                    match self.desired.drift {
                        DriftMode::Correct => "; putting the last good revision back",
                        DriftMode::Report => " (drift: report, not correcting)",
                    }
                ),
            );
            self.correct_drift(&mut p, &drifted);
            return p;
        }
        if let Some((release, reason)) = held {
            let msg = format!(
                "release {} was rolled back ({reason}); holding last good {} until git names a different release",
                release.short(),
                r.last_good
                    .as_ref()
                    .map(Release::short)
                    .unwrap_or("(adopted)")
            );
            let phase = Phase::Rejected {
                release: release.clone(),
                reason: *reason,
            };
            return self.settle(r, phase, Why::RolledBack, msg);
        }
        self.settle(
            r,
            Phase::InSync,
            Why::InSync,
            format!("running {}, verified", d.short()),
        )
    }

    /// A per-service `release:` override changed while the environment's release did not.
    pub(super) fn overrides_pending(&self, r: &Record) -> bool {
        self.services().any(|(n, _)| {
            let want = self.desired.release_of(n);
            let td = self.last_good_td(r, n);
            self.release_of_td(&td).is_some_and(|have| have != want)
        })
    }

    fn correct_drift(&self, p: &mut Plan, drifted: &[(&String, String)]) {
        if drifted.is_empty() || self.desired.drift == DriftMode::Report {
            return;
        }
        for (n, good) in drifted {
            p.actions.push(Action::Update {
                service: (*n).clone(),
                task_definition: good.clone(),
                why: UpdateWhy::Drift,
            });
        }
        p.outcomes.push(Outcome::DriftCorrected);
    }
}
