//! Prometheus metrics: one struct, registered once, shared by every task.
//!
//! Label values come from fixed sets (phase names, rollback reasons, AWS operation names,
//! outcome classes); never an error's text and never a SHA.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::record::{PhaseKind, Reason};

pub struct Metrics {
    pub registry: Registry,
    pub phase: IntGaugeVec,
    pub rollbacks: IntCounterVec,
    pub deployments: IntCounterVec,
    pub hook_runs: IntCounterVec,
    pub notifications: IntCounterVec,
    pub gate_blocks: IntCounterVec,
    /// With `--events-queue`: events read, by kind and whether they woke an environment.
    pub events: IntCounterVec,
    pub drift_corrections: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub aws_requests: IntCounterVec,
    /// AWS calls that waited for the API budget (`--aws-max-rps`), by service.
    pub aws_budget_waits: IntCounterVec,
    pub git_fetches: IntCounterVec,
    pub github_requests: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub commit_to_verified: HistogramVec,
    pub desired_release: IntGaugeVec,
    pub running_release: IntGaugeVec,
    pub last_good_release: IntGaugeVec,
    /// With `--lease-table`: 1 while this replica holds the environment's lease.
    pub lease_held: IntGaugeVec,
    last_pass_age: GaugeVec,
    build: IntGaugeVec,
    /// Per environment: when its last complete pass ended, and the release label set of each
    /// `_info` metric (so a change removes the old series).
    last_pass: Mutex<HashMap<String, Instant>>,
    info_labels: Mutex<HashMap<(&'static str, String), String>>,
}

/// Which `_info` metric a release belongs to.
#[derive(Debug, Clone, Copy)]
pub enum ReleaseKind {
    Desired,
    Running,
    LastGood,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let phase = gauge(
            "ecs_gitops_environment_phase",
            "1 for the phase each environment is in, 0 for the others.",
            &["environment", "phase"],
        );
        let rollbacks = counter(
            "ecs_gitops_rollbacks_total",
            "Releases rolled back to the last good one, by reason.",
            &["environment", "reason"],
        );
        let hook_runs = counter(
            "ecs_gitops_hook_runs_total",
            "Runs of pre-deploy hooks and verification tasks that ended, by result.",
            &["environment", "hook", "kind", "result"],
        );
        let notifications = counter(
            "ecs_gitops_notifications_total",
            "Notifications to chat and webhook targets, by result (sent, failed, dropped).",
            &["environment", "target", "result"],
        );
        let deployments = counter(
            "ecs_gitops_deployments_total",
            "Rollouts that ended, by result (verified, rolled_back, superseded, rejected).",
            &["environment", "result"],
        );
        let events = counter(
            "ecs_gitops_events_total",
            "EventBridge events read from the events queue, by kind (alarm, ecs, other) and outcome (woke, ignored).",
            &["kind", "outcome"],
        );
        let gate_blocks = counter(
            "ecs_gitops_gate_blocks_total",
            "Passes in which a gate refused a release, by gate.",
            &["environment", "gate"],
        );
        let drift_corrections = counter(
            "ecs_gitops_drift_corrections_total",
            "Times a hand-changed service was put back on its recorded revision.",
            &["environment"],
        );
        let reconcile_errors = counter(
            "ecs_gitops_reconcile_errors_total",
            "Passes that failed, by kind of error.",
            &["environment", "kind"],
        );
        let aws_budget_waits = counter(
            "ecs_gitops_aws_budget_waits_total",
            "AWS calls that waited for a token of the client-side API budget (--aws-max-rps), by service.",
            &["service"],
        );
        let aws_requests = counter(
            "ecs_gitops_aws_requests_total",
            "AWS API requests (each attempt), by service, operation and outcome.",
            &["service", "operation", "outcome"],
        );
        let git_fetches = counter(
            "ecs_gitops_git_fetches_total",
            "Reads of the desired-state repository, by outcome.",
            &["outcome"],
        );
        let github_requests = counter(
            "ecs_gitops_github_requests_total",
            "GitHub API requests and reports, by operation and outcome (best effort: failures never block a rollout).",
            &["operation", "outcome"],
        );
        let webhook_deliveries = counter(
            "ecs_gitops_webhook_deliveries_total",
            "GitHub webhook deliveries received, by event and outcome.",
            &["event", "outcome"],
        );
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "ecs_gitops_reconcile_duration_seconds",
                "Time one reconcile pass of an environment takes (observe, plan, apply).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["environment"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(reconcile_duration.clone()))
            .expect("metric registered once");
        let commit_to_verified = HistogramVec::new(
            HistogramOpts::new(
                "ecs_gitops_commit_to_verified_seconds",
                "Time from a desired-state commit naming a release being seen to that release verified.",
            )
            .buckets(vec![30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0, 7200.0]),
            &["environment"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(commit_to_verified.clone()))
            .expect("metric registered once");
        let desired_release = gauge(
            "ecs_gitops_desired_release_info",
            "The release git names for each environment (value 1).",
            &["environment", "release"],
        );
        let running_release = gauge(
            "ecs_gitops_running_release_info",
            "The release every service of the environment runs (value 1; absent while mixed).",
            &["environment", "release"],
        );
        let last_good_release = gauge(
            "ecs_gitops_last_good_release_info",
            "The last verified release of each environment (value 1).",
            &["environment", "release"],
        );
        let lease_held = gauge(
            "ecs_gitops_lease_held",
            "1 while this replica holds the environment's lease (with --lease-table), else 0.",
            &["environment"],
        );
        let last_pass_age = GaugeVec::new(
            Opts::new(
                "ecs_gitops_last_pass_age_seconds",
                "Seconds since each environment's last complete reconcile pass.",
            ),
            &["environment"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(last_pass_age.clone()))
            .expect("metric registered once");
        let build = gauge(
            "ecs_gitops_build_info",
            "The running ecs-gitops version (value 1).",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            registry,
            phase,
            rollbacks,
            deployments,
            hook_runs,
            notifications,
            gate_blocks,
            events,
            drift_corrections,
            reconcile_errors,
            aws_requests,
            aws_budget_waits,
            git_fetches,
            github_requests,
            webhook_deliveries,
            reconcile_duration,
            commit_to_verified,
            desired_release,
            running_release,
            last_good_release,
            lease_held,
            last_pass_age,
            build,
            last_pass: Mutex::default(),
            info_labels: Mutex::default(),
        }
    }

    /// Sets an `_info` release metric, removing the environment's previous series.
    pub fn set_release(&self, kind: ReleaseKind, environment: &str, release: Option<&str>) {
        let (name, vec) = match kind {
            ReleaseKind::Desired => ("desired", &self.desired_release),
            ReleaseKind::Running => ("running", &self.running_release),
            ReleaseKind::LastGood => ("last_good", &self.last_good_release),
        };
        let mut labels = self.info_labels.lock().unwrap_or_else(|p| p.into_inner());
        let key = (name, environment.to_string());
        let old = labels.get(&key).cloned();
        if old.as_deref() == release {
            return;
        }
        if let Some(old) = old {
            let _ = vec.remove_label_values(&[environment, &old]);
            labels.remove(&key);
        }
        if let Some(r) = release {
            vec.with_label_values(&[environment, r]).set(1);
            labels.insert(key, r.to_string());
        }
    }

    /// Marks a complete pass of `environment` now.
    pub fn pass_completed(&self, environment: &str) {
        self.last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(environment.to_string(), Instant::now());
    }

    /// Sets the phase gauge: 1 for `phase`, 0 for every other phase of the environment.
    pub fn set_phase(&self, environment: &str, phase: PhaseKind) {
        for p in PhaseKind::ALL {
            self.phase
                .with_label_values(&[environment, p.as_str()])
                .set(i64::from(p == phase));
        }
    }

    /// Every metric name this daemon exports.
    pub fn names(&self) -> Vec<String> {
        let collectors: [&dyn Collector; 19] = [
            &self.phase,
            &self.rollbacks,
            &self.deployments,
            &self.hook_runs,
            &self.notifications,
            &self.gate_blocks,
            &self.drift_corrections,
            &self.reconcile_errors,
            &self.aws_requests,
            &self.git_fetches,
            &self.github_requests,
            &self.webhook_deliveries,
            &self.reconcile_duration,
            &self.commit_to_verified,
            &self.desired_release,
            &self.running_release,
            &self.last_good_release,
            &self.last_pass_age,
            &self.build,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    /// Declares an environment's series from their fixed label sets, at 0, so dashboards and
    /// alerts see them before the first event.
    /// `gates` and `error_kinds` are the label sets of the enums that own them
    /// (`plan::GateName`, `apply::ApplyError::KINDS`).
    pub fn init_environment(&self, environment: &str, gates: &[&str], error_kinds: &[&str]) {
        for gate in gates {
            self.gate_blocks.with_label_values(&[environment, gate]);
        }
        self.drift_corrections.with_label_values(&[environment]);
        for kind in error_kinds {
            self.reconcile_errors
                .with_label_values(&[environment, kind]);
        }
        self.reconcile_duration.with_label_values(&[environment]);
        self.commit_to_verified.with_label_values(&[environment]);
        for r in Reason::ALL {
            self.rollbacks.with_label_values(&[environment, r.as_str()]);
        }
        for result in ["verified", "rolled_back", "superseded", "rejected"] {
            self.deployments.with_label_values(&[environment, result]);
        }
    }

    pub fn render(&self) -> String {
        for (env, at) in self
            .last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            self.last_pass_age
                .with_label_values(&[env])
                .set(at.elapsed().as_secs_f64());
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
