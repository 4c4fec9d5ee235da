//! ecs-gitops: a reconciling controller that makes AWS ECS follow git.
//!
//! The arrows point one way: `cli` and `daemon` drive the `controller`, whose pass is
//! `observe` -> `plan` (pure) -> `apply`; those reach AWS through `aws` and git through
//! `source`; everything reads `desired`. `record` is the state kept in AWS tags; `status`,
//! `metrics` and `http` make it visible; `github` reports outward.

pub mod apply;
pub mod aws;
pub mod cli;
pub mod controller;
pub mod daemon;
pub mod desired;
pub mod events;
pub mod github;
pub mod http;
pub mod lease;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod outbox;
pub mod plan;
pub mod record;
pub mod source;
pub mod status;
