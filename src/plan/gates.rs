//! The gates a new release must pass (image in ECR, no alarm firing, verified upstream) and the
//! checks watched in flight (alarms, health). Unknown is never healthy.

use super::{AlarmState, Check, Ctx, Gate, GateName, Upstream};
use crate::desired::freeze::frozen_until;
use crate::record::Record;

impl Ctx<'_> {
    pub(super) fn gates(&self, r: &Record) -> Vec<Gate> {
        let mut gates = vec![self.image_gate(), self.alarm_gate()];
        if let Some(g) = self.promotion_gate() {
            gates.push(g);
        }
        if let Some(g) = self.freeze_gate(r) {
            gates.push(g);
        }
        gates
    }

    /// No new release inside a freeze window; a hotfix goes through, and so does a release the
    /// environment verified before (a rollback committed to git during the freeze).
    fn freeze_gate(&self, r: &Record) -> Option<Gate> {
        let d = self.desired;
        if d.freeze.is_empty() {
            return None;
        }
        let (passed, detail) = match frozen_until(&d.freeze, self.now) {
            None => (true, "no freeze window covers now".to_string()),
            Some((_, until)) => match &d.hotfix {
                Some(why) => (
                    true,
                    format!("frozen until {until}; skipped for hotfix: {why}"),
                ),
                None if r.verified.contains(&d.release)
                    || r.last_good.as_ref() == Some(&d.release) =>
                {
                    (
                        true,
                        format!(
                            "frozen until {until}; {} was verified here before, so this is a rollback and goes through",
                            d.release.short()
                        ),
                    )
                }
                None => (false, format!("frozen until {until}")),
            },
        };
        Some(Gate {
            name: GateName::Freeze,
            passed,
            detail,
        })
    }

    /// Every service's image must exist before anything is written.
    fn image_gate(&self) -> Gate {
        let d = self.desired;
        let Some(images) = &self.obs.images else {
            return Gate {
                name: GateName::Image,
                passed: false,
                detail: "ECR not checked yet".into(),
            };
        };
        let bad: Vec<String> = d
            .services
            .iter()
            .filter_map(|(n, spec)| {
                let img = format!("{}:{}", spec.repository, d.release_of(n).short());
                match images.get(n) {
                    Some(Check::Ok) => None,
                    Some(Check::Failed(m)) => Some(format!("{img} {m}")),
                    Some(Check::Unknown(m)) => Some(format!("{img} could not be checked: {m}")),
                    None => Some(format!("{img} not checked")),
                }
            })
            .collect();
        Gate {
            name: GateName::Image,
            passed: bad.is_empty(),
            detail: if bad.is_empty() {
                "every image exists in ECR".into()
            } else {
                bad.join("; ")
            },
        }
    }

    fn promotion_gate(&self) -> Option<Gate> {
        let d = self.desired;
        let up = d.promote_from.as_ref()?;
        let (passed, detail) = match (&d.hotfix, &self.obs.upstream) {
            (Some(why), _) => (true, format!("skipped for hotfix: {why}")),
            (None, Some(Upstream::Verified(v))) if v.contains(&d.release) => {
                (true, format!("verified in {up}"))
            }
            (None, Some(Upstream::Verified(_))) => (
                false,
                format!("{} is not verified in {up} yet", d.release.short()),
            ),
            (None, Some(Upstream::Unknown(m))) => {
                (false, format!("could not read {up}'s record: {m}"))
            }
            (None, None) => (false, format!("{up}'s record not read yet")),
        };
        Some(Gate {
            name: GateName::Promotion,
            passed,
            detail,
        })
    }

    fn alarm_gate(&self) -> Gate {
        let (passed, detail) = match self.alarm_check() {
            Check::Ok => (true, "no alarm firing".into()),
            Check::Failed(m) | Check::Unknown(m) => (false, m),
        };
        Gate {
            name: GateName::Alarm,
            passed,
            detail,
        }
    }

    /// `Failed` when an alarm is in ALARM or does not exist; `Unknown` when unreadable.
    pub(super) fn alarm_check(&self) -> Check {
        let names = &self.desired.verify.alarms;
        if names.is_empty() {
            return Check::Ok;
        }
        match &self.obs.alarms {
            None => Check::Unknown("alarms not read".into()),
            Some(Err(m)) => Check::Unknown(format!("alarms could not be read: {m}")),
            Some(Ok(states)) => {
                let firing: Vec<&str> = names
                    .iter()
                    .filter(|n| states.get(*n) == Some(&AlarmState::Alarm))
                    .map(String::as_str)
                    .collect();
                if !firing.is_empty() {
                    return Check::Failed(format!("alarm {} in ALARM", firing.join(", ")));
                }
                let missing: Vec<&str> = names
                    .iter()
                    .filter(|n| matches!(states.get(*n), None | Some(AlarmState::Missing)))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Check::Failed(format!(
                        "alarm {} does not exist in {}; create it or remove it from verify.alarms",
                        missing.join(", "),
                        self.desired.region
                    ));
                }
                Check::Ok
            }
        }
    }

    pub(super) fn health_check(&self) -> Check {
        let checks = &self.desired.verify.health;
        if checks.is_empty() {
            return Check::Ok;
        }
        let Some(results) = &self.obs.health else {
            return Check::Unknown("health not checked".into());
        };
        let mut unknown = None;
        for (c, res) in checks.iter().zip(results) {
            match res {
                Check::Ok => {}
                Check::Failed(m) => return Check::Failed(format!("health check {}: {m}", c.url)),
                Check::Unknown(m) => unknown = Some(format!("health check {}: {m}", c.url)),
            }
        }
        unknown.map(Check::Unknown).unwrap_or(Check::Ok)
    }
}
