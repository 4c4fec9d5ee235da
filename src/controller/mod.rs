//! The per-environment loop: observe, plan, apply, report; then wait for a new commit or the
//! requeue delay, whichever comes first.
//!
//! Each environment runs in its own task, so a slow or failing environment never stalls
//! another. A failed pass keeps the environment's state (it lives in AWS) and is retried with
//! exponential backoff and jitter, reset by the next successful pass (the error policy of
//! kube-runtime's controller). The world is reached through three small seams (`Observe`,
//! `Apply`, `Clock`), so the loop is tested with in-memory fakes and a paused clock, and runs
//! against AWS through `AwsWorld`.

pub mod pass;
pub mod report;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applied, ApplyError};
use crate::aws::Aws;
use crate::desired::{DesiredState, FileState, Release};
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::plan::{GateName, Observed, Outcome, Plan, RecordRead};
use crate::record::PhaseKind;
use crate::source::SourceStatus;
use crate::status::{Board, rfc3339};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Reads the world for one environment (`observe::Observer` against AWS).
pub trait Observe: Send + Sync {
    fn observe<'a>(
        &'a self,
        desired: &'a DesiredState,
        upstream: Option<&'a DesiredState>,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<(Observed, RecordRead), ApplyError>>;
}

/// Carries out a plan (`apply::apply` against AWS).
pub trait Apply: Send + Sync {
    fn apply<'a>(
        &'a self,
        desired: &'a DesiredState,
        observed: &'a Observed,
        plan: &'a Plan,
    ) -> BoxFuture<'a, Result<Applied, ApplyError>>;
}

/// The time `plan` is given.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real world: AWS through the SDK.
#[derive(Clone)]
pub struct AwsWorld {
    pub observer: Observer,
    /// With `--lease-table`: this replica's leases, asked before every write.
    pub leases: Option<crate::lease::Leases>,
}

impl AwsWorld {
    pub fn aws(&self) -> &Aws {
        &self.observer.aws
    }
}

impl Observe for AwsWorld {
    fn observe<'a>(
        &'a self,
        desired: &'a DesiredState,
        upstream: Option<&'a DesiredState>,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<(Observed, RecordRead), ApplyError>> {
        Box::pin(async move {
            Ok(self
                .observer
                .observe(desired, upstream, Some(revision.to_string()))
                .await?)
        })
    }
}

impl Apply for AwsWorld {
    fn apply<'a>(
        &'a self,
        desired: &'a DesiredState,
        observed: &'a Observed,
        plan: &'a Plan,
    ) -> BoxFuture<'a, Result<Applied, ApplyError>> {
        Box::pin(async move {
            let env = desired.environment.as_str();
            let may_write = || self.leases.as_ref().is_none_or(|l| l.may_write(env));
            crate::apply::apply(self.aws(), desired, observed, plan, &may_write).await
        })
    }
}

/// Everything the environment tasks share.
#[derive(Clone)]
pub struct Shared {
    pub observe: Arc<dyn Observe>,
    pub apply: Arc<dyn Apply>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub board: Board,
    pub interval: Duration,
    /// GitHub deployment statuses and tags, when configured (best effort, never blocks).
    pub github: Option<crate::github::Reporter>,
    /// Chat and webhook notifications (best effort, never blocks).
    pub notifier: Option<crate::notify::Notifier>,
    /// `owner/name` of the application repository, for commit links.
    pub github_repo: Option<String>,
    /// With `--lease-table`: a pass runs only while this replica holds the environment's lease.
    pub leases: Option<crate::lease::Leases>,
    /// Wake-ups of environment loops (from the events queue).
    pub wakers: crate::events::Wakers,
    /// With `--events-queue`: whether the queue answers (polling is relaxed while it does).
    pub events: Option<crate::events::QueueHealth>,
}

/// kube-runtime's defaults: 800 ms doubling to 30 s, with jitter, reset on success.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
}

/// The `kind` of the reconcile error metric for an environment loop that panicked.
pub const PANIC: &str = "panic";

/// Runs one environment until cancelled. Its loop runs in a task of its own: if it panics,
/// the panic is logged, counted (`kind="panic"`), shown in the status, and the loop is
/// started again with backoff, so one environment's bug never silently stops it.
pub async fn run_environment(
    env: String,
    shared: Shared,
    rx: watch::Receiver<SourceStatus>,
    cancel: CancellationToken,
) {
    let gates = GateName::ALL.map(GateName::as_str);
    let mut kinds = ApplyError::KINDS.to_vec();
    kinds.push(PANIC);
    shared.metrics.init_environment(&env, &gates, &kinds);
    let mut retry = backoff().build();
    loop {
        let task = tokio::spawn(environment_loop(
            env.clone(),
            shared.clone(),
            rx.clone(),
            cancel.clone(),
        ));
        let panic = match task.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into())
            }
            Err(_) => return,
        };
        let wait = retry.next().unwrap_or(Duration::from_secs(30));
        tracing::error!(environment = %env, panic = %panic, restart_in_ms = wait.as_millis() as u64, "environment loop panicked; restarting it");
        shared
            .metrics
            .reconcile_errors
            .with_label_values(&[env.as_str(), PANIC])
            .inc();
        shared.board.update(&env, |s| {
            s.error = Some(format!(
                "the environment's loop panicked ({panic}); restarting it in {} ms",
                wait.as_millis()
            ))
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn environment_loop(
    env: String,
    shared: Shared,
    mut rx: watch::Receiver<SourceStatus>,
    cancel: CancellationToken,
) {
    let mut last_valid: Option<(Arc<DesiredState>, String)> = None;
    let mut retry = backoff().build();
    // When this process first saw git name the current release, until it is verified.
    let mut seen: Option<(Release, Instant)> = None;
    // The phase this loop last reported: a Blocked pass writes nothing, so the record still
    // names the phase before it, and the transition would otherwise be news every pass.
    let mut reported: Option<PhaseKind> = None;
    loop {
        let status = rx.borrow_and_update().clone();
        let snapshot = status.snapshot.clone();
        if let Some(snap) = &snapshot {
            match snap.files.get(&env) {
                Some(FileState::Valid(d)) => {
                    last_valid = Some((Arc::new((**d).clone()), snap.revision.clone()));
                    shared.board.update(&env, |s| s.file_problems.clear());
                }
                Some(FileState::Invalid(problems)) => {
                    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    shared.board.update(&env, |s| s.file_problems = lines);
                }
                None => {
                    // The file was deleted: the environment is no longer managed. Nothing is
                    // changed in AWS (its services keep running what they run, its record
                    // stays for a later return), and no pass runs until the file is back.
                    if last_valid.take().is_some() {
                        tracing::warn!(environment = %env, revision = %snap.revision, "desired-state file deleted; no longer managing the environment, nothing changed in AWS");
                    }
                    shared.board.update(&env, |s| {
                        s.message = format!(
                            "desired-state/{env}.yaml was deleted at {}: not managed any more; nothing was changed in AWS",
                            snap.revision
                        );
                        s.file_problems = vec![format!(
                            "desired-state/{env}.yaml is not in revision {}; restore it to manage the environment again",
                            snap.revision
                        )];
                    });
                }
            }
        }
        shared.board.loop_alive(&env);
        if let Some(l) = &shared.leases {
            if !l.may_write(&env) {
                let owner = l.owner(&env);
                let mine = owner.as_deref() == Some(l.me());
                shared.board.update(&env, |s| {
                    s.owned_elsewhere = owner.is_some() && !mine;
                    s.message = match &owner {
                        Some(_) if mine => format!(
                            "this replica ({}) could not renew its lease with time to spare: writes stopped until a renewal succeeds (or another replica takes over)",
                            l.me()
                        ),
                        Some(o) => format!(
                            "owned by replica {o}; this replica ({}) does not act on it",
                            l.me()
                        ),
                        None => format!(
                            "no replica holds its lease right now; this replica ({}) takes it when its share allows",
                            l.me()
                        ),
                    };
                    s.owner = owner.clone();
                });
                // Whoever acts next reports from the record; this loop starts afresh if the
                // lease comes back.
                reported = None;
                let mut changed = l.subscribe();
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = changed.changed() => {}
                    _ = tokio::time::sleep(shared.interval) => {}
                }
                continue;
            }
            shared.board.update(&env, |s| {
                s.owner = Some(l.me().to_string());
                s.owned_elsewhere = false;
            });
        }
        let delay = match &last_valid {
            None => shared.interval,
            Some((desired, revision)) => {
                let upstream = desired
                    .promote_from
                    .as_deref()
                    .and_then(|u| snapshot.as_ref().and_then(|s| s.valid(u)));
                let timer = shared
                    .metrics
                    .reconcile_duration
                    .with_label_values(&[env.as_str()])
                    .start_timer();
                if seen.as_ref().map(|s| &s.0) != Some(&desired.release) {
                    seen = Some((desired.release.clone(), Instant::now()));
                }
                let urgent = shared.wakers.take_urgent(&env);
                let result = crate::aws::budget::urgent_if(
                    urgent,
                    pass::reconcile_once(&shared, desired, upstream, revision, &mut reported),
                )
                .await;
                timer.observe_duration();
                match result {
                    Ok(plan) => {
                        retry = backoff().build();
                        if plan.outcomes.contains(&Outcome::Verified)
                            && let Some((_, at)) =
                                seen.take_if(|s| Some(&s.0) == plan.record.last_good.as_ref())
                        {
                            shared
                                .metrics
                                .commit_to_verified
                                .with_label_values(&[env.as_str()])
                                .observe(at.elapsed().as_secs_f64());
                        }
                        match &shared.events {
                            Some(q) if q.healthy() => {
                                let phase = plan.phase();
                                let bake_left = (phase == PhaseKind::Baking).then(|| {
                                    let end = plan.record.since + desired.verify.bake;
                                    end.duration_since(shared.clock.now()).unwrap_or_default()
                                });
                                crate::events::relaxed_requeue(
                                    plan.requeue,
                                    crate::plan::IN_FLIGHT_REQUEUE.min(shared.interval),
                                    phase,
                                    desired,
                                    bake_left,
                                )
                            }
                            _ => plan.requeue,
                        }
                    }
                    Err(e) if report::assume_role_failed(&e) => {
                        report::blocked_on_role(&shared, &env, &e);
                        retry.next().unwrap_or(Duration::from_secs(30))
                    }
                    Err(e) => {
                        shared
                            .metrics
                            .reconcile_errors
                            .with_label_values(&[env.as_str(), e.kind()])
                            .inc();
                        tracing::warn!(environment = %env, error = %e, "reconcile pass failed; state kept, retrying with backoff");
                        shared.board.update(&env, |s| {
                            s.error = Some(e.to_string());
                            s.passes += 1;
                            s.last_pass_at = Some(rfc3339(shared.clock.now()));
                        });
                        retry.next().unwrap_or(Duration::from_secs(30))
                    }
                }
            }
        };
        let waker = shared.wakers.get(&env);
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            // An event about this environment (alarm, deployment): look now.
            _ = waker.notified() => {
                tracing::debug!(environment = %env, "woken by an event; passing now");
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
