//! Test support shared by the integration tests: the local AWS simulator (one per test, forked
//! from one warm process per test binary, on a free port, stopped on drop), a small loopback HTTP client, SDK clients pointed at the
//! simulator, and polling with a deadline.
#![allow(dead_code)]

pub mod github_mock;
pub mod scenario;
pub mod world;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the simulator's virtualenv once per test binary (a no-op when present).
fn ensure_installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/aws-sim"))
            .arg("install")
            .status()
            .expect("run scripts/aws-sim install");
        assert!(status.success(), "scripts/aws-sim install failed");
    });
}

/// The fork server of this test binary: imports moto once, then forks one isolated simulator
/// per test (see `sim.py --zygote`). It exits, killing its children, when this binary exits
/// (its stdin closes).
struct Zygote {
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    _child: Child,
}

fn zygote() -> &'static std::sync::Mutex<Zygote> {
    static Z: OnceLock<std::sync::Mutex<Zygote>> = OnceLock::new();
    Z.get_or_init(|| {
        ensure_installed();
        let python = root().join(".aws-sim/venv/bin/python");
        let mut child = Command::new(python)
            .arg(root().join("scripts/aws_sim/sim.py"))
            .arg("--zygote")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator's fork server");
        let stdin = child.stdin.take().expect("zygote stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("zygote stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read from the zygote");
        assert_eq!(
            line.trim(),
            "ready",
            "the simulator's fork server did not start"
        );
        std::sync::Mutex::new(Zygote {
            stdin,
            stdout,
            _child: child,
        })
    })
}

/// One simulator process of its own on 127.0.0.1 and a free port; killed when dropped.
pub struct Sim {
    pid: u32,
    pub url: String,
}

impl Sim {
    pub fn start() -> Sim {
        let mut z = zygote().lock().unwrap_or_else(|p| p.into_inner());
        z.stdin
            .write_all(b"fork\n")
            .expect("ask the zygote for a simulator");
        z.stdin.flush().unwrap();
        let mut line = String::new();
        z.stdout
            .read_line(&mut line)
            .expect("read the simulator's URL");
        let (pid, url) = line
            .trim()
            .split_once(' ')
            .unwrap_or_else(|| panic!("unexpected zygote output {line:?}"));
        let url = url.to_string();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "unexpected simulator output {url:?}"
        );
        Sim {
            pid: pid.parse().expect("simulator pid"),
            url,
        }
    }

    pub fn control(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let (status, text) = http(method, &format!("{}/_sim/{path}", self.url), body);
        assert_eq!(status, 200, "control {method} {path}: {text}");
        text
    }

    pub fn behaviour(&self, tag: &str, kind: &str, seconds: Option<f64>) {
        let body = match seconds {
            Some(s) => format!(r#"{{"tag":"{tag}","kind":"{kind}","seconds":{s}}}"#),
            None => format!(r#"{{"tag":"{tag}","kind":"{kind}"}}"#),
        };
        self.control("POST", "behaviours", Some(&body));
    }

    pub fn config(&self, json: &str) {
        self.control("POST", "config", Some(json));
    }

    pub fn fault(&self, json: &str) {
        self.control("POST", "faults", Some(json));
    }

    pub fn clear_faults(&self) {
        self.control("DELETE", "faults", None);
    }

    /// Calls per operation ("ecs:DescribeServices" -> n).
    pub fn calls(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&self.control("GET", "calls", None)).unwrap()
    }

    pub fn call_count(&self, op: &str) -> u64 {
        self.calls().get(op).and_then(|v| v.as_u64()).unwrap_or(0)
    }

    pub fn reset_calls(&self) {
        self.control("DELETE", "calls", None);
    }

    /// What one-off tasks do, matched by image tag or command (`POST /_sim/tasks`).
    pub fn task_rule(&self, json: &str) {
        self.control("POST", "tasks", Some(json));
    }

    /// Every service deployment the simulator keeps (oldest first), as its control API dumps
    /// them: the public fields plus `serviceArn`, times as epoch seconds.
    pub fn service_deployments(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.control("GET", "service-deployments", None)).unwrap()
    }

    /// Makes ECS roll the service's next deployment back by itself at `stage`.
    pub fn ecs_rollback_at(&self, service: &str, stage: &str, after_seconds: f64, kind: &str) {
        self.control(
            "POST",
            "service-deployments/rollback",
            Some(&format!(
                r#"{{"service": "{service}", "at_stage": "{stage}", "after_seconds": {after_seconds}, "kind": "{kind}", "reason": "simulated {kind} failure at {stage}"}}"#
            )),
        );
    }

    /// Every one-off task started (RunTask), with the request that started it.
    pub fn tasks(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.control("GET", "tasks", None)).unwrap()
    }

    /// Puts log events (epoch milliseconds, message) into a group, creating it if needed.
    pub fn put_logs(&self, region: &str, group: &str, events: &[(i64, &str)]) {
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|(t, m)| serde_json::json!({"timestamp": t, "message": m}))
            .collect();
        let body = serde_json::json!({"region": region, "group": group, "events": events});
        self.control("POST", "logs", Some(&body.to_string()));
    }

    /// Subnets and security groups of the default VPC of `region`.
    pub fn network(&self, region: &str) -> (Vec<String>, Vec<String>) {
        let v: serde_json::Value = serde_json::from_str(&self.control(
            "POST",
            "network",
            Some(&format!(r#"{{"region":"{region}"}}"#)),
        ))
        .unwrap();
        let list = |k: &str| {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        (list("subnets"), list("security_groups"))
    }

    pub fn reset(&self) {
        self.control("POST", "reset", Some("{}"));
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// A minimal HTTP/1.1 client for loopback endpoints: (status, body).
pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    http_with_headers(method, url, body, &[])
}

pub fn http_with_headers(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Now as Unix seconds (the simulator's call log uses the same clock).
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The value of one exact series in Prometheus text (`name{labels}`, labels in the sorted
/// order the exporter prints them), 0 when it is absent.
pub fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of the series of metric `name` whose labels contain every fragment of `with`
/// (e.g. `outcome="throttled"`), whatever their order.
pub fn counter_sum(metrics: &str, name: &str, with: &[&str]) -> f64 {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix) && with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The async flavour, for tests that hold SDK clients.
pub async fn wait_for_async<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SDK configuration for the simulator: fixed test credentials, the given region, no retries
/// (so a test sees each injected fault as the SDK reports it).
pub async fn sdk_config(url: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

/// The SDK configuration of a test acting as `role_arn` (STS AssumeRole on the tests' base
/// credentials, through the simulator): calls land in the role's account.
pub async fn role_config(
    url: &str,
    region: &str,
    role_arn: &str,
    external_id: Option<&str>,
) -> aws_config::SdkConfig {
    let base = sdk_config(url, region).await;
    let mut p = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name("tests")
        .configure(&base);
    if let Some(id) = external_id {
        p = p.external_id(id);
    }
    base.to_builder()
        .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
            p.build().await,
        ))
        .build()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A loopback HTTP endpoint that records every POST body (a Slack or JSON webhook), answering
/// 200, or after `hang` seconds when set.
pub struct WebhookSink {
    pub url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    hang: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hang = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (b, h) = (bodies.clone(), hang.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (b, h) = (b.clone(), h.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut len = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    let _ = reader.read_exact(&mut body);
                    let secs = h.load(Ordering::SeqCst);
                    if secs > 0 {
                        std::thread::sleep(Duration::from_secs(secs));
                    }
                    b.lock().unwrap().push((
                        path,
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    ));
                    let mut conn = conn;
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                });
            }
        });
        WebhookSink { url, bodies, hang }
    }

    /// (path, body) of every delivery, in the order they arrived.
    pub fn bodies(&self) -> Vec<(String, serde_json::Value)> {
        self.bodies.lock().unwrap().clone()
    }

    pub fn hang(&self, secs: u64) {
        self.hang.store(secs, std::sync::atomic::Ordering::SeqCst);
    }
}
