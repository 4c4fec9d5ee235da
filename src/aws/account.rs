//! Other AWS accounts: an environment with `account.role_arn` is reached with credentials from
//! STS AssumeRole on the base credentials (aws-config's `AssumeRoleProvider`, session name
//! `ecs-gitops-<env>`, the external id when given), cached here and refreshed before they
//! expire, so a pass never starts with credentials that run out under it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};

use super::{AwsError, ErrorClass};
use crate::metrics::Metrics;

/// Credentials are refreshed once less than this share of their lifetime is left (and never
/// later than `REFRESH_BEFORE` before they expire).
const REFRESH_AT_REMAINING: f64 = 0.25;
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// One role's credentials for one environment.
pub struct RoleCredentials {
    pub role_arn: String,
    provider: AssumeRoleProvider,
    cached: Mutex<Option<(Credentials, SystemTime)>>,
    /// Serialises refreshes: one AssumeRole at a time per role.
    refresh: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl RoleCredentials {
    pub async fn new(
        base: &aws_config::SdkConfig,
        env: &str,
        role_arn: &str,
        external_id: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> RoleCredentials {
        let mut b = AssumeRoleProvider::builder(role_arn)
            .session_name(format!("ecs-gitops-{env}"))
            .configure(base);
        if let Some(id) = external_id {
            b = b.external_id(id);
        }
        RoleCredentials {
            role_arn: role_arn.to_string(),
            provider: b.build().await,
            cached: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    fn fresh(&self, now: SystemTime) -> Option<Credentials> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let (creds, fetched) = cached.as_ref()?;
        let Some(expiry) = creds.expiry() else {
            return Some(creds.clone());
        };
        let lifetime = expiry.duration_since(*fetched).unwrap_or_default();
        let margin = lifetime.mul_f64(REFRESH_AT_REMAINING).min(REFRESH_BEFORE);
        (expiry.duration_since(now).unwrap_or_default() > margin).then(|| creds.clone())
    }

    /// The role's credentials: the cached ones while enough of their lifetime is left, else a
    /// new AssumeRole.
    pub async fn get(&self) -> Result<Credentials, AwsError> {
        if let Some(c) = self.fresh(SystemTime::now()) {
            return Ok(c);
        }
        let _one = self.refresh.lock().await;
        if let Some(c) = self.fresh(SystemTime::now()) {
            return Ok(c);
        }
        let fetched = SystemTime::now();
        let got = self.provider.provide_credentials().await;
        let outcome = match &got {
            Ok(_) => "ok",
            Err(e) => class_of(e).as_str(),
        };
        self.metrics
            .aws_requests
            .with_label_values(&["sts", "AssumeRole", outcome])
            .inc();
        match got {
            Ok(c) => {
                *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((c.clone(), fetched));
                Ok(c)
            }
            Err(e) => Err(AwsError {
                service: "sts",
                operation: "AssumeRole",
                class: class_of(&e),
                code: None,
                message: format!("cannot assume {}: {}", self.role_arn, innermost(&e)),
                source: Some(Arc::new(e)),
            }),
        }
    }
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials themselves.
        f.debug_struct("RoleCredentials")
            .field("role_arn", &self.role_arn)
            .finish_non_exhaustive()
    }
}

/// The SDK clients' credentials provider for a role.
#[derive(Debug, Clone)]
pub struct SharedRole(pub Arc<RoleCredentials>);

impl ProvideCredentials for SharedRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.0
                .get()
                .await
                .map_err(|e| CredentialsError::provider_error(e.message))
        })
    }
}

fn class_of(e: &CredentialsError) -> ErrorClass {
    match e {
        CredentialsError::ProviderTimedOut(_) => ErrorClass::Network,
        CredentialsError::ProviderError(_) => {
            let text = innermost(e);
            if text.contains("Throttl") {
                ErrorClass::Throttled
            } else if text.contains("dispatch failure") || text.contains("io error") {
                ErrorClass::Network
            } else {
                ErrorClass::ClientError
            }
        }
        _ => ErrorClass::ClientError,
    }
}

/// What STS (or the connection) said: the message at the bottom of the error chain, with
/// STS' code when the chain names one.
fn innermost(e: &CredentialsError) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        chain.push(err.to_string());
        cur = err.source();
    }
    // The SDK's service error renders as `unhandled error (AccessDenied)` a level above
    // STS' own message; keep both.
    let code = chain.iter().find_map(|m| {
        m.split_once("error (")
            .map(|(_, c)| c.trim_end_matches(')'))
    });
    let last = chain.last().cloned().unwrap_or_default();
    match code {
        Some(c) if !last.contains(c) => format!("{c}: {last}"),
        _ => last,
    }
}
