//! AWS through the real SDK: the clients of each region and the one call wrapper.
//!
//! Every call goes through `Aws::call`, which counts it by service, operation and outcome and
//! retries transient failures (throttling, 5xx, dropped connections, timeouts) with jittered
//! exponential backoff from `backon`; the SDK's own retries are off so each attempt is
//! counted once. An error keeps AWS's error code and message (and the SDK error as its source)
//! so the status and the log say what AWS said. The modules below are thin and typed; what the
//! answers mean is decided in `observe` and `plan`.

pub mod account;
pub mod budget;
pub mod cache;
pub mod cloudwatch;
pub mod deployments;
pub mod dynamodb;
pub mod ecr;
pub mod ecs;
pub mod logs;
pub mod sqs;
pub mod taskdef;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use backon::{ExponentialBuilder, Retryable};

use crate::metrics::Metrics;

/// How an AWS error should be handled (and the `outcome` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Throttled,
    ServerError,
    Network,
    NotFound,
    ClientError,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Throttled,
        ErrorClass::ServerError,
        ErrorClass::Network,
        ErrorClass::NotFound,
        ErrorClass::ClientError,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::ServerError => "server_error",
            ErrorClass::Network => "network_error",
            ErrorClass::NotFound => "not_found",
            ErrorClass::ClientError => "client_error",
        }
    }

    pub fn transient(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled | ErrorClass::ServerError | ErrorClass::Network
        )
    }
}

/// One failed AWS operation, with what AWS said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {operation} failed ({}): {}", class.as_str(), self.said())]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub class: ErrorClass,
    /// AWS's error code (`ThrottlingException`, `ClusterNotFoundException`, ...).
    pub code: Option<String>,
    /// AWS's error message, or what the SDK said when there was no answer.
    pub message: String,
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl AwsError {
    /// `Code: message`, or the message alone when AWS gave no code.
    pub fn said(&self) -> String {
        match &self.code {
            Some(c) => format!("{c}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// Short form for a gate or check that could not be read: `DescribeAlarms ThrottlingException: Rate exceeded`.
    pub fn brief(&self) -> String {
        format!("{} {}", self.operation, self.said())
    }
}

fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> ErrorClass {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Network
        }
        _ => {
            let code = e.code().unwrap_or_default();
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            if code.contains("Throttl") || code == "TooManyRequestsException" || status == 429 {
                ErrorClass::Throttled
            } else if status >= 500 {
                ErrorClass::ServerError
            } else if code.contains("NotFound") {
                ErrorClass::NotFound
            } else {
                ErrorClass::ClientError
            }
        }
    }
}

#[derive(Clone)]
pub(crate) struct Clients {
    /// The region these clients call (the API budget's key).
    pub region: String,
    pub ecs: aws_sdk_ecs::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

/// The AWS clients of all regions the environments use, with a cache of task definitions
/// (revisions are immutable; the controller only tags the ones it registers, at birth).
#[derive(Clone)]
pub struct Aws {
    config: SdkConfig,
    clients: Arc<Mutex<HashMap<String, Clients>>>,
    tds: ecs::TdCache,
    /// What observation needs of every revision seen (small; never thrashes at 10,000 services).
    summaries: cache::Bounded<Arc<ecs::TdSummary>>,
    /// Service revision ARN -> task definition (revisions never change).
    revisions: cache::Bounded<String>,
    metrics: Arc<Metrics>,
    retry: ExponentialBuilder,
    /// Calls per second per (account, region, service), shared by every handle.
    budget: Arc<budget::Budget>,
    /// Set on the handle of an environment in another account: its credentials.
    role: Option<Arc<account::RoleCredentials>>,
    /// Handles per (environment, role, external id), shared by every clone of the base handle.
    accounts: Accounts,
}

/// (environment, role ARN, external id) -> that environment's handle.
type Accounts = Arc<Mutex<HashMap<(String, String, Option<String>), Aws>>>;

impl Aws {
    /// The handle to reach `env`: the base credentials, or for an environment with
    /// `account.role_arn` the role's (one handle, and one credentials cache, per environment
    /// and role).
    pub async fn for_account(
        &self,
        env: &str,
        account: Option<&crate::desired::AccountRole>,
    ) -> Aws {
        let Some(a) = account else {
            return self.clone();
        };
        let key = (env.to_string(), a.role_arn.clone(), a.external_id.clone());
        if let Some(h) = self
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return h.clone();
        }
        let role = Arc::new(
            account::RoleCredentials::new(
                &self.config,
                env,
                &a.role_arn,
                a.external_id.as_deref(),
                self.metrics.clone(),
            )
            .await,
        );
        let config = self
            .config
            .to_builder()
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                account::SharedRole(role.clone()),
            ))
            // RoleCredentials caches and refreshes; the SDK's cache would only hide that.
            .identity_cache(aws_sdk_ecs::config::IdentityCache::no_cache())
            .build();
        let handle = Aws {
            config,
            clients: Arc::default(),
            role: Some(role),
            accounts: Arc::default(),
            ..self.clone()
        };
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(handle)
            .clone()
    }

    /// Credentials for this handle's calls can be had: always for the base credentials (the
    /// SDK reports its own problems per call); for a role, AssumeRole succeeded (or cached
    /// credentials are still good), else what STS said, before anything is read or written.
    pub async fn credentials_ready(&self) -> Result<(), AwsError> {
        match &self.role {
            None => Ok(()),
            Some(r) => r.get().await.map(|_| ()),
        }
    }

    /// This handle (and every environment's handle made from it) keeps to `rps` calls per
    /// second per account, region and service (`--aws-max-rps`).
    pub fn with_max_rps(mut self, rps: f64) -> Aws {
        self.budget = Arc::new(budget::Budget::new(rps));
        self
    }

    /// The region of the base configuration (`AWS_REGION`), where the lease table lives by
    /// default.
    pub fn default_region(&self) -> Option<String> {
        self.config.region().map(|r| r.to_string())
    }

    /// The role this handle assumes, if any.
    pub fn role_arn(&self) -> Option<&str> {
        self.role.as_deref().map(|r| r.role_arn.as_str())
    }
    /// Loads the standard SDK configuration (credential chain, `AWS_ENDPOINT_URL`, ...).
    pub async fn from_env(metrics: Arc<Metrics>) -> Aws {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            )
            .load()
            .await;
        Aws {
            config,
            clients: Arc::default(),
            tds: ecs::TdCache::new(ecs::TD_CACHE_MAX),
            summaries: cache::Bounded::new(ecs::SUMMARY_CACHE_MAX),
            revisions: cache::Bounded::new(deployments::REVISION_CACHE_MAX),
            role: None,
            accounts: Arc::default(),
            budget: Arc::new(budget::Budget::new(budget::DEFAULT_MAX_RPS)),
            metrics,
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(3))
                .with_max_times(3)
                .with_jitter(),
        }
    }

    pub(crate) fn clients(&self, region: &str) -> Clients {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(region.to_string())
            .or_insert_with(|| {
                let r = Region::new(region.to_string());
                Clients {
                    region: region.to_string(),
                    ecs: aws_sdk_ecs::Client::from_conf(
                        aws_sdk_ecs::config::Builder::from(&self.config)
                            .region(r.clone())
                            .build(),
                    ),
                    ecr: aws_sdk_ecr::Client::from_conf(
                        aws_sdk_ecr::config::Builder::from(&self.config)
                            .region(r.clone())
                            .build(),
                    ),
                    cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
                        aws_sdk_cloudwatch::config::Builder::from(&self.config)
                            .region(r.clone())
                            .build(),
                    ),
                    logs: aws_sdk_cloudwatchlogs::Client::from_conf(
                        aws_sdk_cloudwatchlogs::config::Builder::from(&self.config)
                            .region(r.clone())
                            .build(),
                    ),
                    dynamodb: aws_sdk_dynamodb::Client::from_conf(
                        aws_sdk_dynamodb::config::Builder::from(&self.config)
                            .region(r.clone())
                            .build(),
                    ),
                    sqs: aws_sdk_sqs::Client::from_conf(
                        aws_sdk_sqs::config::Builder::from(&self.config)
                            .region(r)
                            .build(),
                    ),
                }
            })
            .clone()
    }

    /// One AWS operation in `region`: each attempt takes a token from the API budget, is
    /// counted, and is retried while the failure is transient.
    pub(crate) async fn call<T, E, F, Fut>(
        &self,
        region: &str,
        service: &'static str,
        operation: &'static str,
        f: F,
    ) -> Result<T, AwsError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let key = format!("{}/{region}/{service}", self.role_arn().unwrap_or("base"));
        let attempt = || async {
            if !self.budget.take(&key).await.is_zero() {
                self.metrics
                    .aws_budget_waits
                    .with_label_values(&[service])
                    .inc();
            }
            match f().await {
                Ok(v) => {
                    self.metrics
                        .aws_requests
                        .with_label_values(&[service, operation, "ok"])
                        .inc();
                    Ok(v)
                }
                Err(e) => {
                    let class = classify(&e);
                    self.metrics
                        .aws_requests
                        .with_label_values(&[service, operation, class.as_str()])
                        .inc();
                    Err(AwsError {
                        service,
                        operation,
                        class,
                        code: e.code().map(str::to_string),
                        message: e
                            .message()
                            .map(str::to_string)
                            .unwrap_or_else(|| DisplayErrorContext(&e).to_string()),
                        source: Some(Arc::new(e)),
                    })
                }
            }
        };
        attempt
            .retry(self.retry)
            .when(|e: &AwsError| e.class.transient())
            .notify(|e: &AwsError, after: Duration| {
                tracing::debug!(
                    service,
                    operation,
                    class = e.class.as_str(),
                    code = e.code.as_deref().unwrap_or(""),
                    retry_in_ms = after.as_millis() as u64,
                    "retrying AWS call"
                );
            })
            .await
    }
}
