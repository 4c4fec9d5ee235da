//! Rolling back: every service of the environment back on its last good revision, then the
//! release is held as Rejected until git names another.

use super::managed::EcsPutsBack;
use super::{Action, Ctx, Plan, UpdateWhy, Why};
use crate::desired::Release;
use crate::record::{Phase, Reason, Record};

impl Ctx<'_> {
    pub(super) fn start_rollback(
        &self,
        r: &Record,
        release: &Release,
        reason: Reason,
        detail: String,
    ) -> Plan {
        let mut p = self.base(
            r,
            format!(
                "release {} failed ({reason}): {detail}; rolling back to last good",
                release.short()
            ),
        );
        p.record.rejected = Some((release.clone(), reason));
        self.restore_last_good(&mut p, r, UpdateWhy::Rollback);
        let phase = Phase::RollingBack {
            release: release.clone(),
            reason,
        };
        self.go(p, phase, Why::Failed(reason))
    }

    /// Points every service that is not on its last good revision back at it: a service
    /// deployment in flight from last good is stopped with ROLLBACK (ECS moves production
    /// traffic back at once), one ECS is already rolling back is waited for; every other
    /// service gets one UpdateService.
    pub(super) fn restore_last_good(&self, p: &mut Plan, r: &Record, why: UpdateWhy) {
        for (n, s) in self.services() {
            let good = self.last_good_td(r, n);
            match self.ecs_puts_back(s, &good) {
                EcsPutsBack::Stop(arn) => {
                    p.actions.push(Action::StopDeployment {
                        service: n.clone(),
                        service_deployment: arn.to_string(),
                    });
                    continue;
                }
                EcsPutsBack::Wait => continue,
                EcsPutsBack::No => {}
            }
            if s.current() != good {
                p.actions.push(Action::Update {
                    service: n.clone(),
                    task_definition: good,
                    why,
                });
            }
        }
    }

    pub(super) fn rolling_back(&self, r: &Record, release: &Release, reason: Reason) -> Plan {
        let mut p = self.base(r, String::new());
        self.restore_last_good(&mut p, r, UpdateWhy::Rollback);
        let pending: Vec<String> = self
            .services()
            .filter(|(n, s)| !s.steady_on(&self.last_good_td(r, n)))
            .map(|(n, s)| format!("{n}: {}/{} running", s.running, s.desired))
            .collect();
        if pending.is_empty() && p.actions.is_empty() {
            let mut done = self.base(
                r,
                format!(
                    "release {} rolled back ({reason}); held on last good {}",
                    release.short(),
                    r.last_good
                        .as_ref()
                        .map(Release::short)
                        .unwrap_or("(adopted)")
                ),
            );
            for s in done.record.services.values_mut() {
                s.target_task_definition = None;
            }
            let phase = Phase::Rejected {
                release: release.clone(),
                reason,
            };
            return self.go(done, phase, Why::Failed(reason));
        }
        p.message = format!(
            "rolling back {} ({reason}): {}",
            release.short(),
            pending.join(", ")
        );
        p
    }
}
