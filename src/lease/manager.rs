//! The lease loop of one replica: every `renew_every`, say it is alive, read the table, and
//! renew, take or give up leases as `decide` says. The environment loops ask `may_write`
//! before every write to ECS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{LeaseRow, Step, Timing, decide};
use crate::aws::Aws;
use crate::aws::dynamodb::{LEASE, LeaseTable, REPLICA};
use crate::metrics::Metrics;

/// This replica's leases, shared by its environment loops.
#[derive(Clone)]
pub struct Leases {
    inner: Arc<Inner>,
}

struct Inner {
    table: LeaseTable,
    timing: Timing,
    aws: Aws,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    held: BTreeMap<String, Held>,
    /// Environment -> replica holding it, as last read (and changed by this replica since).
    owners: BTreeMap<String, String>,
}

struct Held {
    version: u64,
    /// Writes stop at this instant: the last renewal was sent at `t`, so the lease lasts at
    /// least until `t + ttl`; `margin` before that, this replica stops.
    valid_until: Instant,
}

fn now_ms() -> u64 {
    crate::status::unix_ms(SystemTime::now())
}

impl Leases {
    pub fn new(aws: Aws, metrics: Arc<Metrics>, table: LeaseTable, timing: Timing) -> Leases {
        Leases {
            inner: Arc::new(Inner {
                table,
                timing,
                aws,
                metrics,
                state: Mutex::new(State::default()),
                changed: watch::channel(0).0,
            }),
        }
    }

    pub fn me(&self) -> &str {
        &self.inner.table.me
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This replica holds `env`'s lease with more than the safety margin left: it may write.
    pub fn may_write(&self, env: &str) -> bool {
        self.state()
            .held
            .get(env)
            .is_some_and(|h| Instant::now() < h.valid_until)
    }

    /// The replica that holds `env`, as far as this one knows.
    pub fn owner(&self, env: &str) -> Option<String> {
        self.state().owners.get(env).cloned()
    }

    /// Ticks whenever ownership may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Runs the lease loop until cancelled, then gives every lease up (so another replica
    /// takes over at once instead of after the TTL) and deregisters.
    pub async fn run(
        self,
        mut envs: watch::Receiver<(String, Vec<String>)>,
        cancel: CancellationToken,
    ) {
        loop {
            let managed: BTreeSet<String> = envs.borrow_and_update().1.iter().cloned().collect();
            self.tick(&managed).await;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.inner.timing.renew_every) => {}
                changed = envs.changed() => if changed.is_err() { break },
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.leave()).await;
    }

    async fn leave(&self) {
        let held: Vec<(String, u64)> = {
            let mut st = self.state();
            let out = st
                .held
                .iter()
                .map(|(e, h)| (e.clone(), h.version))
                .collect();
            st.held.clear();
            out
        };
        let i = &self.inner;
        for (env, version) in held {
            if let Err(e) = i.aws.release_lease(&i.table, &env, version).await {
                tracing::warn!(environment = %env, error = %e, "could not give the lease up on shutdown; it expires after its TTL");
            }
            self.gauge(&env, false);
        }
        let _ = i.aws.heartbeat(&i.table, None).await;
        tracing::info!(replica = %i.table.me, "left the lease table");
    }

    fn gauge(&self, env: &str, held: bool) {
        self.inner
            .metrics
            .lease_held
            .with_label_values(&[env])
            .set(i64::from(held));
    }

    /// Stops writing for every environment until a renewal succeeds again.
    fn close_all(&self) {
        let now = Instant::now();
        for h in self.state().held.values_mut() {
            h.valid_until = h.valid_until.min(now);
        }
    }

    async fn tick(&self, managed: &BTreeSet<String>) {
        let i = &self.inner;
        let ttl_ms = i.timing.ttl.as_millis() as u64;
        let now = now_ms();
        if let Err(e) = i.aws.heartbeat(&i.table, Some(now + ttl_ms)).await {
            self.close_all();
            tracing::warn!(replica = %i.table.me, error = %e, "lease table unreachable; writes stopped until a renewal succeeds");
            self.publish(managed);
            return;
        }
        let rows = match i.aws.lease_rows(&i.table).await {
            Ok(r) => r,
            Err(e) => {
                self.close_all();
                tracing::warn!(replica = %i.table.me, error = %e, "lease table unreadable; writes stopped until a renewal succeeds");
                self.publish(managed);
                return;
            }
        };
        let now = now_ms();
        let mut replicas: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.expires_at_ms > now)
            .filter_map(|r| r.pk.strip_prefix(REPLICA).map(str::to_string))
            .collect();
        replicas.insert(i.table.me.clone());
        let leases: BTreeMap<String, LeaseRow> = rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.pk.strip_prefix(LEASE)?.to_string(),
                    LeaseRow {
                        owner: r.owner.clone()?,
                        version: r.version,
                        expires_at_ms: r.expires_at_ms,
                    },
                ))
            })
            .collect();
        let held: BTreeMap<String, u64> = {
            let mut st = self.state();
            // A lease the table gives to someone else (or at another version) is gone.
            st.held.retain(|env, h| {
                leases
                    .get(env)
                    .is_some_and(|l| l.owner == i.table.me && l.version == h.version)
            });
            st.owners = leases
                .iter()
                .filter(|(_, l)| l.expires_at_ms >= now)
                .map(|(e, l)| (e.clone(), l.owner.clone()))
                .collect();
            st.held
                .iter()
                .map(|(e, h)| (e.clone(), h.version))
                .collect()
        };
        for step in decide(&i.table.me, now, managed, &replicas, &leases, &held) {
            self.step(step, ttl_ms).await;
        }
        self.publish(managed);
    }

    /// `ecs_gitops_lease_held` per environment (1 while this replica may write), and a tick
    /// for the environment loops waiting on ownership.
    fn publish(&self, managed: &BTreeSet<String>) {
        for env in managed {
            let may = self.may_write(env);
            self.gauge(env, may);
        }
        self.inner.changed.send_modify(|v| *v += 1);
    }

    async fn step(&self, step: Step, ttl_ms: u64) {
        let i = &self.inner;
        let valid = |sent: Instant| sent + i.timing.ttl - i.timing.margin;
        match step {
            Step::Renew { env, version } => {
                let sent = Instant::now();
                match i
                    .aws
                    .renew_lease(&i.table, &env, version, now_ms(), ttl_ms)
                    .await
                {
                    Ok(Some(v)) => {
                        if let Some(h) = self.state().held.get_mut(&env) {
                            h.version = v;
                            h.valid_until = valid(sent);
                        }
                    }
                    Ok(None) => {
                        let mut st = self.state();
                        st.held.remove(&env);
                        st.owners.remove(&env);
                        tracing::warn!(environment = %env, replica = %i.table.me, "lease lost (another replica holds it); writes stopped");
                    }
                    Err(e) => {
                        if let Some(h) = self.state().held.get_mut(&env) {
                            h.valid_until = h.valid_until.min(Instant::now());
                        }
                        tracing::warn!(environment = %env, replica = %i.table.me, error = %e, "lease renewal failed; writes stopped until one succeeds");
                    }
                }
            }
            Step::Take { env } => {
                let sent = Instant::now();
                match i.aws.take_lease(&i.table, &env, now_ms(), ttl_ms).await {
                    Ok(Some(v)) => {
                        let mut st = self.state();
                        st.held.insert(
                            env.clone(),
                            Held {
                                version: v,
                                valid_until: valid(sent),
                            },
                        );
                        st.owners.insert(env.clone(), i.table.me.clone());
                        tracing::info!(environment = %env, replica = %i.table.me, version = v, "lease taken");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(environment = %env, error = %e, "could not take a free lease");
                    }
                }
            }
            Step::Release { env, version } => {
                // Writes stop before the lease is given up.
                {
                    let mut st = self.state();
                    st.held.remove(&env);
                    st.owners.remove(&env);
                }
                match i.aws.release_lease(&i.table, &env, version).await {
                    Ok(()) => {
                        tracing::info!(environment = %env, replica = %i.table.me, "lease given up (above this replica's share)");
                    }
                    Err(e) => {
                        tracing::warn!(environment = %env, error = %e, "could not give a lease up; it expires after its TTL");
                    }
                }
            }
        }
    }
}
