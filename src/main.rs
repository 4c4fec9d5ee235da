//! The `ecs-gitops` binary: arguments, telemetry, and the shutdown signal. Everything else
//! is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ecs_gitops::desired::parse_duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "ecs-gitops",
    version,
    about = "Makes AWS ECS follow git: gates, bake, automatic rollback"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct SourceArgs {
    /// Desired-state repository: a local path or a remote git URL.
    #[arg(long)]
    repo: String,
    /// Branch whose head is the desired state.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Folder of the desired-state files inside the repository.
    #[arg(long, default_value = "desired-state")]
    path: String,
    /// Only these environments (repeatable); default: every file in the folder.
    #[arg(long = "env", value_name = "NAME")]
    environments: Vec<String>,
}

#[derive(clap::Args)]
struct GitHubArgs {
    /// Report rollouts as GitHub deployments of this repository (owner/name), where the
    /// release SHAs are commits.
    #[arg(long, value_name = "OWNER/NAME")]
    github_repo: Option<String>,
    /// File holding the GitHub token (fine-grained: Deployments and Contents read/write).
    #[arg(long, value_name = "PATH")]
    github_token_file: Option<PathBuf>,
    /// Environment variable holding the GitHub token.
    #[arg(long, value_name = "NAME", conflicts_with = "github_token_file")]
    github_token_env: Option<String>,
    /// GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, default_value = "https://api.github.com")]
    github_api_url: String,
    /// File holding the webhook secret; enables POST /hooks/github.
    #[arg(long, value_name = "PATH")]
    github_webhook_secret_file: Option<PathBuf>,
    /// Environment variable holding the webhook secret; enables POST /hooks/github.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "github_webhook_secret_file"
    )]
    github_webhook_secret_env: Option<String>,
    /// Tag verified releases of this environment vYYYY.MM.DD-<sha7> (repeatable).
    #[arg(long = "tag-releases", value_name = "ENV", requires = "github_repo")]
    tag_releases: Vec<String>,
    /// Also create a GitHub Release for the tag, with notes GitHub generates, when this
    /// environment verifies a release (repeatable).
    #[arg(long = "github-releases", value_name = "ENV", requires = "github_repo")]
    github_releases: Vec<String>,
}

impl GitHubArgs {
    fn options(self, repo: &str) -> anyhow::Result<ecs_gitops::daemon::GitHubOptions> {
        use ecs_gitops::github::{RepoRef, Secret};
        let token = Secret::load(
            self.github_token_file.as_deref(),
            self.github_token_env.as_deref(),
            "GitHub token",
            "--github-token",
        )?;
        let webhook_secret = Secret::load(
            self.github_webhook_secret_file.as_deref(),
            self.github_webhook_secret_env.as_deref(),
            "webhook secret",
            "--github-webhook-secret",
        )?;
        let github_repo = self
            .github_repo
            .as_deref()
            .map(RepoRef::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--github-repo: {e}"))?;
        if github_repo.is_some() && token.is_none() {
            anyhow::bail!(
                "--github-repo needs a token to create deployments: pass --github-token-file or --github-token-env"
            );
        }
        if repo.starts_with("github:") && token.is_none() {
            tracing::warn!(
                "reading a GitHub repository without a token: 60 requests an hour, public repositories only"
            );
        }
        Ok(ecs_gitops::daemon::GitHubOptions {
            repo: github_repo,
            token,
            api_url: self.github_api_url,
            webhook_secret,
            tag_environments: self.tag_releases,
            release_environments: self.github_releases,
        })
    }
}

/// Several replicas: environments are shared out through leases in a DynamoDB table.
#[derive(clap::Args)]
struct LeaseArgs {
    /// DynamoDB table of environment leases (create it with `ecs-gitops lease-table create`);
    /// without it this process owns every environment.
    #[arg(long)]
    lease_table: Option<String>,
    /// This replica's name in the table (default: host name, process id and a random suffix).
    #[arg(long, requires = "lease_table")]
    replica_id: Option<String>,
    /// How long a lease lasts without renewal (renewed every third of it; writes stop a third
    /// before it ends).
    #[arg(long, default_value = "15s", value_parser = duration_arg, requires = "lease_table")]
    lease_ttl: Duration,
    /// Region of the lease table (default: the SDK's region, AWS_REGION).
    #[arg(long, requires = "lease_table")]
    lease_region: Option<String>,
}

#[derive(Subcommand)]
enum LeaseTableAction {
    /// Create the table (key `pk`, on-demand capacity); nothing happens if it exists.
    Create {
        name: String,
        /// Region of the table (default: the SDK's region, AWS_REGION).
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run {
        #[command(flatten)]
        source: SourceArgs,
        /// Address of the HTTP server (metrics, status, webhooks).
        #[arg(long, default_value = "127.0.0.1:9400")]
        listen: SocketAddr,
        /// Longest time between two passes of an environment (e.g. 10s, 1m).
        #[arg(long, default_value = "10s", value_parser = duration_arg)]
        interval: Duration,
        #[command(flatten)]
        github: Box<GitHubArgs>,
        #[command(flatten)]
        lease: LeaseArgs,
        /// SQS queue URL fed by an EventBridge rule (deploy/events-rule.json): alarm and ECS
        /// deployment events wake the environments they concern at once; polling stays as the
        /// fallback and is relaxed while the queue answers.
        #[arg(long)]
        events_queue: Option<String>,
        /// Region of the events queue (default: the SDK's region, AWS_REGION).
        #[arg(long, requires = "events_queue")]
        events_region: Option<String>,
        /// Most AWS calls per second per account, region and service (a client-side token
        /// bucket, burst twice that; AWS' own buckets are shared with everything else the
        /// account runs).
        #[arg(long, default_value_t = ecs_gitops::aws::budget::DEFAULT_MAX_RPS, value_parser = rps_arg)]
        aws_max_rps: f64,
    },
    /// Manage the DynamoDB lease table of several replicas (`lease-table create NAME`).
    LeaseTable {
        #[command(subcommand)]
        action: LeaseTableAction,
    },
    /// Lint desired-state files or folders (default: desired-state/).
    Validate { paths: Vec<PathBuf> },
    /// Show what the next pass would do, and why, without doing it.
    Plan {
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Show what a running daemon reports.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:9400")]
        url: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set an environment's release back to its last good release (or to a release its record
    /// verified), and commit it.
    Rollback {
        /// The environment whose file is changed.
        #[arg(long = "env")]
        env: String,
        /// A release (full SHA) the environment verified; default: its last good release.
        #[arg(long)]
        to: Option<String>,
        /// Commit a release the record never verified.
        #[arg(long)]
        force: bool,
        /// A local checkout of the desired-state repository.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Folder of the desired-state files inside the repository.
        #[arg(long, default_value = "desired-state")]
        path: String,
    },
    /// List the releases an environment's record verified beside the git log of its file.
    History {
        #[arg(long = "env")]
        env: String,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, default_value = "desired-state")]
        path: String,
    },
    /// Set an environment's release to what another has verified (read from AWS), and commit it.
    Promote {
        /// The environment whose verified release is promoted.
        #[arg(long)]
        from: String,
        /// The environment whose file is changed.
        #[arg(long)]
        to: String,
        /// A local checkout of the desired-state repository.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Folder of the desired-state files inside the repository.
        #[arg(long, default_value = "desired-state")]
        path: String,
    },
}

fn rps_arg(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate; give calls per second above 0, e.g. 10 or 2.5"
        )),
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than 0s".into()),
        Err(e) => Err(e),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("desired-state")]
            } else {
                paths
            };
            let report = ecs_gitops::desired::validate::validate_paths(&paths);
            for p in &report.problems {
                println!("{p}");
            }
            if report.problems.is_empty() {
                eprintln!("{} file(s) valid", report.files);
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "{} problem(s) in {} file(s)",
                    report.problems.len(),
                    report.files
                );
                ExitCode::from(1)
            }
        }
        command => {
            init_tracing(cli.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let result = rt.block_on(async_main(command));
            // A DNS lookup runs on a blocking thread that cannot be cancelled; do not let one
            // that hangs keep a stopped daemon alive.
            rt.shutdown_timeout(Duration::from_secs(5));
            match result {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn async_main(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            source,
            listen,
            interval,
            github,
            lease,
            events_queue,
            events_region,
            aws_max_rps,
        } => {
            let github = (*github).options(&source.repo)?;
            let lease = lease
                .lease_table
                .map(|table| ecs_gitops::daemon::LeaseOptions {
                    table,
                    replica_id: lease.replica_id.unwrap_or_else(default_replica_id),
                    timing: ecs_gitops::lease::Timing::with_ttl(lease.lease_ttl),
                    region: lease.lease_region,
                });
            let cancel = CancellationToken::new();
            let c = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutdown requested");
                c.cancel();
            });
            ecs_gitops::daemon::run(
                ecs_gitops::daemon::RunOptions {
                    github,
                    repo: source.repo,
                    branch: source.branch,
                    path: source.path,
                    environments: source.environments,
                    listen,
                    interval,
                    lease,
                    events_queue,
                    events_region,
                    aws_max_rps,
                },
                cancel,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::LeaseTable {
            action: LeaseTableAction::Create { name, region },
        } => {
            let created = ecs_gitops::daemon::create_lease_table(&name, region).await?;
            println!(
                "{}",
                if created {
                    format!("lease table {name} created (key pk, on demand)")
                } else {
                    format!("lease table {name} exists already; nothing changed")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { source } => {
            let out = ecs_gitops::cli::plan(
                &source.repo,
                &source.branch,
                &source.path,
                &source.environments,
            )
            .await?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { url, json } => {
            let out = ecs_gitops::cli::status(&url, json).await?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        // Handled in main without a runtime.
        Command::Promote {
            from,
            to,
            repo,
            path,
        } => {
            let p = ecs_gitops::cli::promote::promote(&repo, &path, &from, &to).await?;
            match p.commit {
                Some(commit) => println!(
                    "{to}: release {} (verified in {from}) committed to {} as {}",
                    p.release,
                    p.file.display(),
                    &commit[..commit.len().min(12)]
                ),
                None => println!(
                    "{to} already names {} ({from}'s verified release); nothing to commit",
                    p.release
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback {
            env,
            to,
            force,
            repo,
            path,
        } => {
            let r = ecs_gitops::cli::rollback::rollback(&repo, &path, &env, to.as_deref(), force)
                .await?;
            match r.commit {
                Some(commit) => println!(
                    "{env}: release {} (was {}) committed to {} as {}",
                    r.to,
                    r.from,
                    r.file.display(),
                    &commit[..commit.len().min(12)]
                ),
                None => println!("{env} already names {}; nothing to commit", r.to),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { env, repo, path } => {
            print!(
                "{}",
                ecs_gitops::cli::rollback::history(&repo, &path, &env).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        // Validate runs in main, without a runtime.
        Command::Validate { .. } => Ok(ExitCode::from(2)),
    }
}

/// `<host>-<pid>-<4 hex>`: unique per process, readable in the status.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{:04x}", std::process::id(), nanos & 0xffff)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
