//! ecs-gitops: a reconciling controller that makes AWS ECS follow git.
//!
//! `desired` reads what git says; `plan` decides (pure); the `aws` layer observes and applies;
//! `reconcile` runs the per-environment loop; `http` and `metrics` make it visible.

pub mod aws;
pub mod cli;
pub mod daemon;
pub mod desired;
pub mod github;
pub mod health;
pub mod http;
pub mod metrics;
pub mod plan;
pub mod promote;
pub mod reconcile;
pub mod record;
pub mod source;
pub mod status;
pub mod validate;
pub mod yaml;
