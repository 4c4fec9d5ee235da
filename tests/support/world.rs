//! A world for reconciler tests: the simulator with clusters, services, images and alarms made
//! through the real SDK, a desired-state git repository made with the git CLI, and the real
//! `ecs-gitops` binary running against both (killed on drop).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ecs::types::{
    ContainerDefinition, DeploymentCircuitBreaker, DeploymentConfiguration, KeyValuePair, Tag,
};
use serde_json::Value;

use super::{Sim, http, wait_for};

pub const REGION: &str = "me-south-1";
pub const ACCOUNT: &str = "123456789012";

/// Distinct 40-hex releases for a test whose short forms differ too: `sha(1)` is
/// `0101010101...`, `sha(2)` is `0202020202...`.
pub fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

pub struct World {
    pub sim: Sim,
    pub repo: tempfile::TempDir,
    pub ecs: aws_sdk_ecs::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub cw: aws_sdk_cloudwatch::Client,
}

impl World {
    pub async fn new() -> World {
        let sim = Sim::start();
        sim.config(r#"{"rollout_seconds": 0.5, "task_fail_seconds": 0.2}"#);
        let cfg = super::sdk_config(&sim.url, REGION).await;
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "--quiet", "--initial-branch=main"]);
        World {
            ecs: aws_sdk_ecs::Client::new(&cfg),
            ecr: aws_sdk_ecr::Client::new(&cfg),
            cw: aws_sdk_cloudwatch::Client::new(&cfg),
            sim,
            repo,
        }
    }

    /// The usual world: in each of `clusters` a service `web` steady on sha(1), images
    /// sha(1..=3) of repository `web`, and the alarm `web-5xx` (OK).
    pub async fn with_web(clusters: &[&str]) -> World {
        let w = World::new().await;
        for c in clusters {
            w.cluster(c).await;
            w.service(c, "web", "web", &sha(1), false).await;
        }
        for n in 1..=3 {
            w.image("web", &sha(n)).await;
        }
        w.alarm("web-5xx").await;
        w
    }

    pub async fn cluster(&self, name: &str) {
        self.ecs
            .create_cluster()
            .cluster_name(name)
            .send()
            .await
            .unwrap();
    }

    /// Registers `family` with the given containers (name, image tag) and starts a service on
    /// it, then waits until it is steady. Returns the task definition ARN.
    pub async fn service(
        &self,
        cluster: &str,
        name: &str,
        repo: &str,
        tag: &str,
        breaker: bool,
    ) -> String {
        self.service_with(cluster, name, &[("app", repo, tag)], 2, breaker)
            .await
    }

    /// A Fargate service on awsvpc networking (the simulator's default VPC) whose `app`
    /// container logs to CloudWatch with the awslogs driver; steady on `tag`. Returns the task
    /// definition ARN.
    pub async fn fargate_service(
        &self,
        cluster: &str,
        name: &str,
        repo: &str,
        tag: &str,
    ) -> String {
        use aws_sdk_ecs::types::{
            AwsVpcConfiguration, Compatibility, LaunchType, LogConfiguration, LogDriver,
            NetworkConfiguration, NetworkMode,
        };
        let (subnets, groups) = self.sim.network(REGION);
        let td = self
            .ecs
            .register_task_definition()
            .family(name)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .execution_role_arn(format!("arn:aws:iam::{ACCOUNT}:role/{name}-exec"))
            .container_definitions(
                ContainerDefinition::builder()
                    .name("app")
                    .image(image_uri(repo, tag))
                    .essential(true)
                    .log_configuration(
                        LogConfiguration::builder()
                            .log_driver(LogDriver::Awslogs)
                            .options("awslogs-group", format!("/ecs/{name}"))
                            .options("awslogs-region", REGION)
                            .options("awslogs-stream-prefix", "ecs")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .task_definition()
            .unwrap()
            .task_definition_arn()
            .unwrap()
            .to_string();
        self.ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(&td)
            .desired_count(2)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .set_subnets(Some(subnets[..1].to_vec()))
                            .set_security_groups(Some(groups))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        self.wait_steady(cluster, name, &td).await;
        td
    }

    /// From now on this world's clients act as `role_arn` (in its account), or, with `None`,
    /// with the tests' base credentials again.
    pub async fn act_as(&mut self, role: Option<(&str, Option<&str>)>) {
        let cfg = match role {
            None => super::sdk_config(&self.sim.url, REGION).await,
            Some((arn, id)) => super::role_config(&self.sim.url, REGION, arn, id).await,
        };
        self.ecs = aws_sdk_ecs::Client::new(&cfg);
        self.ecr = aws_sdk_ecr::Client::new(&cfg);
        self.cw = aws_sdk_cloudwatch::Client::new(&cfg);
    }

    /// An ECS client for another region (environments in several regions).
    pub async fn ecs_in(&self, region: &str) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&super::sdk_config(&self.sim.url, region).await)
    }

    pub async fn service_with(
        &self,
        cluster: &str,
        name: &str,
        containers: &[(&str, &str, &str)],
        desired: i32,
        breaker: bool,
    ) -> String {
        self.create_service(cluster, name, containers, desired, breaker, true)
            .await
    }

    async fn create_service(
        &self,
        cluster: &str,
        name: &str,
        containers: &[(&str, &str, &str)],
        desired: i32,
        breaker: bool,
        wait: bool,
    ) -> String {
        let defs: Vec<ContainerDefinition> = containers
            .iter()
            .map(|(c, repo, tag)| {
                ContainerDefinition::builder()
                    .name(*c)
                    .image(image_uri(repo, tag))
                    .memory(256)
                    .environment(KeyValuePair::builder().name("CONTAINER").value(*c).build())
                    .build()
            })
            .collect();
        let td = self
            .ecs
            .register_task_definition()
            .family(name)
            .set_container_definitions(Some(defs))
            .cpu("256")
            .memory("512")
            .execution_role_arn(format!("arn:aws:iam::{ACCOUNT}:role/{name}-exec"))
            .tags(Tag::builder().key("team").value("payments").build())
            .send()
            .await
            .unwrap()
            .task_definition()
            .unwrap()
            .task_definition_arn()
            .unwrap()
            .to_string();
        let mut create = self
            .ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(&td)
            .desired_count(desired);
        if breaker {
            create = create.deployment_configuration(
                DeploymentConfiguration::builder()
                    .deployment_circuit_breaker(
                        DeploymentCircuitBreaker::builder()
                            .enable(true)
                            .rollback(true)
                            .build(),
                    )
                    .build(),
            );
        }
        create.send().await.unwrap();
        if wait {
            self.wait_steady(cluster, name, &td).await;
        }
        td
    }

    /// Sets the service's deployment strategy (UpdateService with only a
    /// deploymentConfiguration: no new deployment), e.g. `BLUE_GREEN` with ECS' own bake.
    pub async fn strategy(&self, cluster: &str, name: &str, config: DeploymentConfiguration) {
        let want = config.strategy().cloned();
        self.ecs
            .update_service()
            .cluster(cluster)
            .service(name)
            .deployment_configuration(config)
            .send()
            .await
            .unwrap();
        let got = self.describe(cluster, name).await;
        assert_eq!(
            got.deployment_configuration().and_then(|c| c.strategy()),
            want.as_ref(),
            "the simulator keeps the strategy"
        );
    }

    /// Creates one-container services on `tag` together and waits until all are steady (their
    /// deployments progress at the same time). Returns their task definition ARNs.
    pub async fn services(
        &self,
        cluster: &str,
        names: &[&str],
        repo: &str,
        tag: &str,
    ) -> Vec<String> {
        let mut tds = Vec::new();
        for name in names {
            tds.push(
                self.create_service(cluster, name, &[("app", repo, tag)], 2, false, false)
                    .await,
            );
        }
        for (name, td) in names.iter().zip(&tds) {
            self.wait_steady(cluster, name, td).await;
        }
        tds
    }

    pub async fn wait_steady(&self, cluster: &str, name: &str, td: &str) {
        super::wait_for_async(Duration::from_secs(20), "service steady", || async {
            let s = self.describe(cluster, name).await;
            (s.deployments().len() == 1
                && s.task_definition() == Some(td)
                && s.running_count() == s.desired_count())
            .then_some(())
        })
        .await
    }

    pub async fn describe(&self, cluster: &str, name: &str) -> aws_sdk_ecs::types::Service {
        self.ecs
            .describe_services()
            .cluster(cluster)
            .services(name)
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send()
            .await
            .unwrap()
            .services()[0]
            .clone()
    }

    pub async fn current_td(&self, cluster: &str, name: &str) -> String {
        self.describe(cluster, name)
            .await
            .task_definition()
            .unwrap()
            .to_string()
    }

    pub async fn tags(
        &self,
        cluster: &str,
        name: &str,
    ) -> std::collections::BTreeMap<String, String> {
        self.describe(cluster, name)
            .await
            .tags()
            .iter()
            .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
            .collect()
    }

    pub async fn image(&self, repo: &str, tag: &str) {
        let _ = self
            .ecr
            .create_repository()
            .repository_name(repo)
            .send()
            .await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7023,"digest":"sha256:{0}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":32654,"digest":"sha256:{0}"}}]}}"#,
            "b".repeat(64)
        );
        self.ecr
            .put_image()
            .repository_name(repo)
            .image_tag(tag)
            .image_manifest(manifest)
            .send()
            .await
            .unwrap();
    }

    pub async fn alarm(&self, name: &str) {
        self.cw
            .put_metric_alarm()
            .alarm_name(name)
            .metric_name("HTTPCode_Target_5XX_Count")
            .namespace("AWS/ApplicationELB")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(5.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold,
            )
            .send()
            .await
            .unwrap();
    }

    pub async fn set_alarm(&self, name: &str, state: &str) {
        self.cw
            .set_alarm_state()
            .alarm_name(name)
            .state_value(aws_sdk_cloudwatch::types::StateValue::from(state))
            .state_reason("set by test")
            .send()
            .await
            .unwrap();
    }

    /// Writes `desired-state/<env>.yaml` and commits it; returns the commit id.
    pub fn commit(&self, env: &str, yaml: &str) -> String {
        let dir = self.repo.path().join("desired-state");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{env}.yaml")), yaml).unwrap();
        git(self.repo.path(), &["add", "-A"]);
        git(
            self.repo.path(),
            &["commit", "--quiet", "-m", &format!("{env}: update")],
        );
        git_out(self.repo.path(), &["rev-parse", "HEAD"])
    }

    pub fn start(&self, extra: &[&str]) -> Daemon {
        Daemon::start(&self.sim.url, self.repo.path().as_os_str(), extra)
    }

    /// Starts the daemon on another `--repo` (a URL, or `github:owner/name`).
    pub fn start_repo(&self, repo: &str, extra: &[&str]) -> Daemon {
        Daemon::start(&self.sim.url, std::ffi::OsStr::new(repo), extra)
    }

    /// A desired-state file for one environment with the usual test settings.
    pub fn yaml(
        env: &str,
        cluster: &str,
        release: &str,
        services: &[(&str, &str)],
        extra: &str,
    ) -> String {
        let mut s = format!(
            "environment: {env}\nregion: {REGION}\ncluster: {cluster}\nrelease: {release}\nservices:\n"
        );
        for (name, repo) in services {
            s.push_str(&format!(
                "  {name}:\n    repository: {repo}\n    container: app\n"
            ));
        }
        s.push_str(extra);
        s
    }
}

/// Registers a one-container (`app`) task definition; returns its ARN.
pub async fn register(ecs: &aws_sdk_ecs::Client, family: &str, image: &str) -> String {
    ecs.register_task_definition()
        .family(family)
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image(image)
                .memory(256)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_string()
}

pub fn image_uri(repo: &str, tag: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repo}:{tag}")
}

/// The identity of commits made by tests (and by `ecs-gitops promote` in tests).
pub const GIT_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "test"),
    ("GIT_AUTHOR_EMAIL", "test@example.invalid"),
    ("GIT_COMMITTER_NAME", "test"),
    ("GIT_COMMITTER_EMAIL", "test@example.invalid"),
];

/// The real `ecs-gitops` binary configured for the simulator at `endpoint`, and for nothing
/// else (no IMDS, no AWS config files of the machine).
pub fn binary(endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecs-gitops"));
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        // Its own key, so a test can aim faults at the daemon's calls alone.
        .env("AWS_ACCESS_KEY_ID", "ecs-gitops-daemon")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    cmd
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(GIT_IDENTITY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The real binary, `ecs-gitops run`, on 127.0.0.1 and a free port.
pub struct Daemon {
    child: Child,
    pub url: String,
    pub logs: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(endpoint: &str, repo: &std::ffi::OsStr, extra: &[&str]) -> Daemon {
        Daemon::start_as(endpoint, repo, extra, "ecs-gitops-daemon")
    }

    /// A daemon signing its AWS calls with its own access key id (a replica the simulator's
    /// faults and call log can tell apart).
    pub fn start_as(
        endpoint: &str,
        repo: &std::ffi::OsStr,
        extra: &[&str],
        access_key: &str,
    ) -> Daemon {
        let mut cmd = binary(endpoint);
        cmd.env("AWS_ACCESS_KEY_ID", access_key);
        cmd.args(["run", "--repo"])
            .arg(repo)
            .args(["--listen", "127.0.0.1:0"])
            .args(if extra.contains(&"--interval") {
                &[][..]
            } else {
                &["--interval", "1s"][..]
            })
            .args(extra)
            .env("RUST_LOG", "info,ecs_gitops=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start ecs-gitops");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon prints its address");
        let url = line.rsplit(' ').next().unwrap().to_string();
        Daemon { child, url, logs }
    }

    pub fn status(&self) -> Value {
        let (code, body) = http("GET", &format!("{}/api/v1/status", self.url), None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn env(&self, name: &str) -> Option<Value> {
        self.status()["environments"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == name).cloned())
    }

    /// Waits until `env` is in `phase`; returns its status entry.
    pub fn wait_phase(&self, env: &str, phase: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(timeout, &format!("{env} in {phase}"), || {
                let e = self.env(env)?;
                last = e.clone();
                (e["phase"] == phase).then_some(e)
            })
        }));
        match found {
            Ok(v) => v,
            Err(_) => panic!(
                "{env} did not reach {phase} within {timeout:?}; last status: {}\n--- daemon log ---\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                self.log_tail(60)
            ),
        }
    }

    pub fn metrics(&self) -> String {
        http("GET", &format!("{}/metrics", self.url), None).1
    }

    pub fn log_tail(&self, n: usize) -> String {
        let l = self.logs.lock().unwrap();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL: no chance to clean up, as when a machine dies.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; returns how long it
    /// took, or `None` if it was still running (then it is killed).
    pub fn terminate(mut self, within: Duration) -> Option<Duration> {
        let start = std::time::Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while start.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_ecs-gitops"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A health endpoint on 127.0.0.1 whose status the test sets; stopped on drop.
pub struct HealthServer {
    pub url: String,
    status: Arc<std::sync::atomic::AtomicU16>,
    hits: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

impl HealthServer {
    pub fn start(status: u16) -> HealthServer {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let code = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, h, s) = (code.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                h.fetch_add(1, Ordering::SeqCst);
                let code = c.load(Ordering::SeqCst);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        HealthServer {
            url: format!("http://{addr}"),
            status: code,
            hits,
            stop,
            addr,
        }
    }

    pub fn set(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}
