//! Prometheus metrics: one struct, registered once, shared by every task.
//!
//! Label values come from fixed sets (phase names, rollback reasons, AWS operation names,
//! outcome classes); never an error's text and never a SHA.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::record::{Phase, Reason};

pub struct Metrics {
    pub registry: Registry,
    pub phase: IntGaugeVec,
    pub rollbacks: IntCounterVec,
    pub deployments: IntCounterVec,
    pub gate_blocks: IntCounterVec,
    pub drift_corrections: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub aws_requests: IntCounterVec,
    pub git_fetches: IntCounterVec,
    pub reconcile_duration: HistogramVec,
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
        let deployments = counter(
            "ecs_gitops_deployments_total",
            "Rollouts that ended, by result (verified, rolled_back, superseded).",
            &["environment", "result"],
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
        Metrics {
            registry,
            phase,
            rollbacks,
            deployments,
            gate_blocks,
            drift_corrections,
            reconcile_errors,
            aws_requests,
            git_fetches,
            reconcile_duration,
        }
    }

    /// Sets the phase gauge: 1 for `phase`, 0 for every other phase of the environment.
    pub fn set_phase(&self, environment: &str, phase: Phase) {
        for p in Phase::ALL {
            self.phase
                .with_label_values(&[environment, p.as_str()])
                .set(i64::from(p == phase));
        }
    }

    /// Makes the rollback counters of an environment visible at 0 before the first rollback.
    pub fn init_environment(&self, environment: &str) {
        for r in Reason::ALL {
            self.rollbacks.with_label_values(&[environment, r.as_str()]);
        }
        for result in ["verified", "rolled_back", "superseded"] {
            self.deployments.with_label_values(&[environment, result]);
        }
    }

    pub fn render(&self) -> String {
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
