//! Several replicas, one writer per environment: environment leases in a DynamoDB table (see
//! `aws::dynamodb` for the conditional writes), spread over the live replicas. `decide` is the
//! pure part (what this replica takes, renews and gives up); `manager` runs it every renewal
//! tick and tells the environment loops whether they may write.
//!
//! Why our own conditional writes rather than a lease crate: the fencing DESIGN asks for
//! (every renewal checks and bumps a version; a replica stops writing the moment a renewal
//! fails, and before its lease could expire) and the spreading (at most ceil(environments /
//! replicas) each) are the whole point, and the maintained crates (`dynamodb-lease`, AWS' Java
//! lock client) provide a lock, not a version the writer checks, nor spreading; each is a few
//! lines over `UpdateItem` with a condition.

pub mod manager;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use manager::Leases;

/// Lease timing: a lease lasts `ttl` from its last renewal; it is renewed every `renew_every`;
/// its holder writes only while more than `margin` of it is left (by its own monotonic clock,
/// counted from when the renewal was sent), so it has stopped before anyone can take it over.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: Duration,
    pub renew_every: Duration,
    pub margin: Duration,
}

impl Timing {
    /// DESIGN's defaults: TTL 15 s, renewal every 5 s, a third of the TTL as margin.
    pub fn with_ttl(ttl: Duration) -> Timing {
        Timing {
            ttl,
            renew_every: ttl / 3,
            margin: ttl / 3,
        }
    }
}

/// A lease as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub owner: String,
    pub version: u64,
    pub expires_at_ms: u64,
}

/// What this replica does this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Renew { env: String, version: u64 },
    Take { env: String },
    Release { env: String, version: u64 },
}

/// The most environments one replica should own: ceil(environments / live replicas).
pub fn share(environments: usize, replicas: usize) -> usize {
    environments.div_ceil(replicas.max(1))
}

/// This tick's steps for replica `me`, holding `held` (environment -> version), given the
/// table's leases, the live replicas (`me` included) and the managed environments at `now_ms`.
///
/// Held leases are renewed. Above its share (ceil(environments / replicas)) a replica gives up
/// the surplus; when another live replica has fewer than floor(environments / replicas), a
/// replica above that floor gives one up per tick, so a replica that joins gets work. Below its
/// share a replica takes free or expired leases, except that one at or above the floor leaves
/// them to a replica below it. Given up are its last environments by name (a stable choice);
/// taken are free ones in an order of its own (a hash of replica and environment), so replicas
/// starting together do not all race for the same one.
pub fn decide(
    me: &str,
    now_ms: u64,
    environments: &BTreeSet<String>,
    replicas: &BTreeSet<String>,
    leases: &BTreeMap<String, LeaseRow>,
    held: &BTreeMap<String, u64>,
) -> Vec<Step> {
    let live = replicas.len().max(1);
    let quota = share(environments.len(), live);
    let floor = environments.len() / live;
    // Live leases per live replica (replicas with none count as 0).
    let mut counts: BTreeMap<&str, usize> = replicas.iter().map(|r| (r.as_str(), 0)).collect();
    for l in leases.values().filter(|l| l.expires_at_ms >= now_ms) {
        if let Some(c) = counts.get_mut(l.owner.as_str()) {
            *c += 1;
        }
    }
    let starving = counts.iter().any(|(r, c)| *r != me && *c < floor);
    let mine: Vec<(&String, &u64)> = held
        .iter()
        .filter(|(e, _)| environments.contains(*e))
        .collect();
    let keep = if mine.len() > quota {
        quota
    } else if starving && mine.len() > floor {
        mine.len() - 1
    } else {
        mine.len()
    };
    let mut steps = Vec::new();
    for (i, (env, version)) in mine.iter().enumerate() {
        let (env, version) = ((*env).clone(), **version);
        steps.push(if i < keep {
            Step::Renew { env, version }
        } else {
            Step::Release { env, version }
        });
    }
    // Leases of environments no longer managed are given up too.
    for (env, version) in held.iter().filter(|(e, _)| !environments.contains(*e)) {
        steps.push(Step::Release {
            env: env.clone(),
            version: *version,
        });
    }
    let want = if starving && keep >= floor {
        keep
    } else {
        quota
    };
    if keep == mine.len() && keep < want {
        let mut free: Vec<&String> = environments
            .iter()
            .filter(|e| !held.contains_key(*e))
            .filter(|e| leases.get(*e).is_none_or(|l| l.expires_at_ms < now_ms))
            .collect();
        free.sort_by_key(|e| (order(me, e), (*e).clone()));
        for env in free.into_iter().take(want - keep) {
            steps.push(Step::Take { env: env.clone() });
        }
    }
    steps
}

/// FNV-1a of `replica/environment`: a stable, per-replica order of environments.
fn order(me: &str, env: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in me.bytes().chain([b'/']).chain(env.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("env{i}")).collect()
    }

    fn live(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn row(owner: &str, exp: u64) -> LeaseRow {
        LeaseRow {
            owner: owner.into(),
            version: 1,
            expires_at_ms: exp,
        }
    }

    #[test]
    fn the_share_is_the_ceiling_of_environments_over_replicas() {
        assert_eq!(share(9, 3), 3);
        assert_eq!(share(9, 4), 3);
        assert_eq!(share(10, 4), 3);
        assert_eq!(share(2, 3), 1);
        assert_eq!(share(5, 0), 5);
    }

    #[test]
    fn a_lone_replica_takes_every_free_environment_and_renews_what_it_holds() {
        let e = envs(3);
        let held = BTreeMap::from([("env1".to_string(), 7)]);
        let steps = decide("a", 1000, &e, &live(&["a"]), &BTreeMap::new(), &held);
        assert!(steps.contains(&Step::Renew {
            env: "env1".into(),
            version: 7
        }));
        let takes: BTreeSet<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Take { env } => Some(env.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(takes, BTreeSet::from(["env0".into(), "env2".into()]));
    }

    #[test]
    fn live_leases_of_others_are_never_taken_and_expired_ones_are() {
        let e = envs(2);
        let leases = BTreeMap::from([
            ("env0".to_string(), row("b", 2000)),
            ("env1".to_string(), row("b", 500)),
        ]);
        let steps = decide("a", 1000, &e, &live(&["a"]), &leases, &BTreeMap::new());
        assert_eq!(steps, vec![Step::Take { env: "env1".into() }]);
    }

    #[test]
    fn above_its_share_a_replica_gives_up_the_surplus_and_takes_nothing() {
        let e = envs(9);
        let held: BTreeMap<String, u64> = e.iter().map(|x| (x.clone(), 1)).collect();
        let steps = decide("a", 0, &e, &live(&["a", "b", "c"]), &BTreeMap::new(), &held);
        let renews = steps
            .iter()
            .filter(|s| matches!(s, Step::Renew { .. }))
            .count();
        let releases: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Release { env, .. } => Some(env.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(renews, 3);
        assert_eq!(releases, ["env3", "env4", "env5", "env6", "env7", "env8"]);
        assert!(!steps.iter().any(|s| matches!(s, Step::Take { .. })));
    }

    #[test]
    fn below_its_share_a_replica_takes_only_up_to_it() {
        let e = envs(9);
        let steps = decide(
            "a",
            0,
            &e,
            &live(&["a", "b", "c"]),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(steps.len(), 3);
        assert!(steps.iter().all(|s| matches!(s, Step::Take { .. })));
        // Another replica tries another order first.
        let other = decide(
            "b",
            0,
            &e,
            &live(&["a", "b", "c"]),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_ne!(steps, other);
    }

    #[test]
    fn a_replica_that_joins_gets_one_environment_from_each_replica_above_the_floor() {
        // 9 environments, 3 each on a, b, c; d joins: floor 2, share 3.
        let e = envs(9);
        let mut leases = BTreeMap::new();
        for (i, env) in e.iter().enumerate() {
            leases.insert(env.clone(), row(["a", "b", "c"][i % 3], 10_000));
        }
        let r = live(&["a", "b", "c", "d"]);
        let held_by = |who: &str| -> BTreeMap<String, u64> {
            leases
                .iter()
                .filter(|(_, l)| l.owner == who)
                .map(|(e, _)| (e.clone(), 1))
                .collect()
        };
        for who in ["a", "b", "c"] {
            let steps = decide(who, 0, &e, &r, &leases, &held_by(who));
            let released = steps
                .iter()
                .filter(|s| matches!(s, Step::Release { .. }))
                .count();
            assert_eq!(released, 1, "{who} gives one up: {steps:?}");
            assert!(!steps.iter().any(|s| matches!(s, Step::Take { .. })));
        }
        // Once given up, d takes them (up to its share) and nobody gives up more.
        let mut after = leases.clone();
        for env in ["env6", "env7", "env8"] {
            after.remove(env);
        }
        let steps = decide("d", 0, &e, &r, &after, &BTreeMap::new());
        assert_eq!(
            steps
                .iter()
                .filter(|s| matches!(s, Step::Take { .. }))
                .count(),
            3
        );
        for env in ["env6", "env7", "env8"] {
            after.insert(env.into(), row("d", 10_000));
        }
        let a_held: BTreeMap<String, u64> = after
            .iter()
            .filter(|(_, l)| l.owner == "a")
            .map(|(e, _)| (e.clone(), 1))
            .collect();
        let steps = decide("a", 0, &e, &r, &after, &a_held);
        assert!(
            steps.iter().all(|s| matches!(s, Step::Renew { .. })),
            "{steps:?}"
        );
    }

    #[test]
    fn an_environment_no_longer_managed_is_released() {
        let held = BTreeMap::from([("gone".to_string(), 4)]);
        let steps = decide("a", 0, &envs(1), &live(&["a"]), &BTreeMap::new(), &held);
        assert!(steps.contains(&Step::Release {
            env: "gone".into(),
            version: 4
        }));
    }
}
