//! `ecs-gitops run`: wires the source, one task per environment, and the HTTP server, and
//! shuts them all down on one cancellation signal.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::aws::Aws;
use crate::controller::{self, AwsWorld, Shared, SystemClock};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::observe::{Observer, health::HealthChecker};
use crate::source::{self, ContentsSource, Origin, Source, SourceStatus};
use crate::status::Board;

/// GitHub settings of `run` (all optional).
#[derive(Default)]
pub struct GitHubOptions {
    /// The application repository that deployments and tags are reported to.
    pub repo: Option<crate::github::RepoRef>,
    pub token: Option<crate::github::Secret>,
    pub api_url: String,
    pub webhook_secret: Option<crate::github::Secret>,
    pub tag_environments: Vec<String>,
    pub release_environments: Vec<String>,
}

pub struct RunOptions {
    pub github: GitHubOptions,
    pub repo: String,
    pub branch: String,
    pub path: String,
    pub environments: Vec<String>,
    pub listen: SocketAddr,
    pub interval: Duration,
    /// `--lease-table`: share the environments with other replicas.
    pub lease: Option<LeaseOptions>,
    /// `--events-queue`: the SQS queue an EventBridge rule feeds.
    pub events_queue: Option<String>,
    /// Region of the queue (default: the SDK's region).
    pub events_region: Option<String>,
    /// `--aws-max-rps`: the API budget per account, region and service.
    pub aws_max_rps: f64,
}

pub struct LeaseOptions {
    pub table: String,
    pub replica_id: String,
    pub timing: crate::lease::Timing,
    /// Default: the SDK's region.
    pub region: Option<String>,
}

/// `ecs-gitops lease-table create NAME`: `Ok(false)` when the table exists already.
pub async fn create_lease_table(name: &str, region: Option<String>) -> anyhow::Result<bool> {
    let aws = Aws::from_env(Arc::new(Metrics::new())).await;
    let region = region_or_default(&aws, region, "the lease table", "--region")?;
    Ok(aws.create_lease_table(&region, name).await?)
}

/// The region a flag names, else the SDK's (`AWS_REGION`); an error naming the flag when
/// there is neither.
fn region_or_default(
    aws: &Aws,
    flag_value: Option<String>,
    what: &str,
    flag: &str,
) -> anyhow::Result<String> {
    flag_value
        .or_else(|| aws.default_region())
        .ok_or_else(|| anyhow::anyhow!("no region for {what}: pass {flag} or set AWS_REGION"))
}

pub async fn run(opts: RunOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let board = Board::default();
    let aws = Aws::from_env(metrics.clone())
        .await
        .with_max_rps(opts.aws_max_rps);
    let cache = tempfile::Builder::new().prefix("ecs-gitops-").tempdir()?;
    let gh = &opts.github;
    let github_client = || {
        crate::github::GitHub::new(&gh.api_url, gh.token.as_ref(), metrics.clone())
            .map_err(|e| anyhow::anyhow!(e))
    };
    let origin = match opts.repo.strip_prefix("github:") {
        Some(name) => {
            let repo =
                crate::github::RepoRef::parse(name).map_err(|e| anyhow::anyhow!("--repo: {e}"))?;
            Origin::GitHub(Box::new(ContentsSource::new(
                github_client()?,
                repo,
                &opts.branch,
                &opts.path,
            )))
        }
        None => Origin::Git(Source::new(
            &opts.repo,
            &opts.branch,
            &opts.path,
            cache.path(),
        )),
    };
    let trigger = Arc::new(Notify::new());
    let (source_tx, source_rx) = watch::channel(SourceStatus::default());
    // The environments managed, with the revision whose files named them.
    let (envs_tx, envs_rx) = watch::channel((String::new(), Vec::<String>::new()));
    let envs_rx_for_leases = envs_rx.clone();

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen): {e}", opts.listen))?;
    let addr = http::local_addr(&listener).unwrap_or(opts.listen);
    // Tests and scripts read the bound address (with --listen 127.0.0.1:0) from this line.
    println!("ecs-gitops listening on http://{addr}");
    tracing::info!(%addr, repo = %origin.display(), branch = %opts.branch, "ecs-gitops started");

    // Three intervals, as the liveness rule says, but never less than one pass can take when
    // AWS is slow (four attempts of up to 10 s each, with backoff).
    let stall_after = (opts.interval * 3).max(Duration::from_secs(60));
    let state = AppState {
        stall_after,
        metrics: metrics.clone(),
        board: board.clone(),
        source: source_rx.clone(),
        environments: envs_rx.clone(),
        webhook: gh
            .webhook_secret
            .clone()
            .map(|secret| crate::http::Webhook {
                secret,
                branch: opts.branch.clone(),
                trigger: trigger.clone(),
            }),
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(http::serve(listener, state, cancel.clone()));
    {
        let cancel = cancel.clone();
        tasks.spawn(async move {
            crate::memory::run(cancel).await;
            Ok(())
        });
    }
    {
        let (metrics, cancel, trigger) = (metrics.clone(), cancel.clone(), trigger.clone());
        tasks.spawn(async move {
            source::run(origin, opts.interval, trigger, source_tx, metrics, cancel).await;
            Ok(())
        });
    }
    let github = match &gh.repo {
        Some(repo) => {
            let (reporter, handle) = crate::github::reporter(
                github_client()?,
                crate::github::ReporterConfig {
                    repo: repo.clone(),
                    tag_environments: gh.tag_environments.clone(),
                    release_environments: gh.release_environments.clone(),
                },
                metrics.clone(),
                cancel.clone(),
            );
            tasks.spawn(async move {
                let _ = handle.await;
                Ok(())
            });
            Some(reporter)
        }
        None => None,
    };
    let health = HealthChecker::new(Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client for health checks: {e}"))?;
    let leases = match &opts.lease {
        None => None,
        Some(l) => {
            let region =
                region_or_default(&aws, l.region.clone(), "--lease-table", "--lease-region")?;
            tracing::info!(table = %l.table, replica = %l.replica_id, %region, ttl_ms = l.timing.ttl.as_millis() as u64, "sharing environments through leases");
            Some(crate::lease::Leases::new(
                aws.clone(),
                metrics.clone(),
                crate::aws::dynamodb::LeaseTable {
                    region,
                    name: l.table.clone(),
                    me: l.replica_id.clone(),
                },
                l.timing,
            ))
        }
    };
    let wakers = crate::events::Wakers::default();
    let events = match &opts.events_queue {
        None => None,
        Some(url) => {
            let region = region_or_default(
                &aws,
                opts.events_region.clone(),
                "--events-queue",
                "--events-region",
            )?;
            let health = crate::events::QueueHealth::default();
            tracing::info!(queue = %url, %region, "reacting to events from the queue; polling stays as the fallback");
            let run = crate::events::run(
                crate::events::Queue {
                    aws: aws.clone(),
                    region,
                    url: url.clone(),
                },
                source_rx.clone(),
                wakers.clone(),
                health.clone(),
                metrics.clone(),
                cancel.clone(),
            );
            tasks.spawn(async move {
                run.await;
                Ok(())
            });
            Some(health)
        }
    };
    let world = Arc::new(AwsWorld {
        observer: Observer::new(aws, health),
        leases: leases.clone(),
    });
    let (notifier, notify_task) = crate::notify::notifier(metrics.clone(), cancel.clone())
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client for notifications: {e}"))?;
    tasks.spawn(async move {
        let _ = notify_task.await;
        Ok(())
    });
    let github_repo = gh.repo.as_ref().map(|r| format!("{}/{}", r.owner, r.name));
    let shared = Shared {
        notifier: Some(notifier),
        github_repo,
        observe: world.clone(),
        apply: world,
        clock: Arc::new(SystemClock),
        metrics,
        board,
        interval: opts.interval,
        github,
        leases: leases.clone(),
        wakers,
        events,
    };
    if let Some(l) = leases {
        let (envs, cancel) = (envs_rx_for_leases, cancel.clone());
        tasks.spawn(async move {
            l.run(envs, cancel).await;
            Ok(())
        });
    }
    let filter: BTreeSet<String> = opts.environments.iter().cloned().collect();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut rx = source_rx;
    loop {
        let snapshot = rx.borrow_and_update().snapshot.clone();
        if let Some(snap) = snapshot {
            for env in snap.files.keys() {
                if (!filter.is_empty() && !filter.contains(env)) || started.contains(env) {
                    continue;
                }
                started.insert(env.clone());
                tasks.spawn(reconcile_task(
                    env.clone(),
                    shared.clone(),
                    rx.clone(),
                    cancel.clone(),
                ));
            }
            for missing in filter.difference(&started) {
                tracing::warn!(environment = %missing, "--env names an environment with no file in the desired-state folder");
            }
            envs_tx.send_replace((snap.revision.clone(), started.iter().cloned().collect()));
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
        }
    }
    while let Some(res) = tasks.join_next().await {
        if let Ok(Err(e)) = res {
            tracing::warn!(error = %e, "task ended with an error");
        }
    }
    tracing::info!("ecs-gitops stopped");
    Ok(())
}

async fn reconcile_task(
    env: String,
    shared: Shared,
    rx: watch::Receiver<SourceStatus>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    controller::run_environment(env, shared, rx, cancel).await;
    Ok(())
}
