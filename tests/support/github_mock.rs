//! A mock of the GitHub REST API on 127.0.0.1 for the endpoints ecs-gitops uses, answering
//! with GitHub's real response shapes and recording every request.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Every request answered 503.
    Down,
    /// Every request waits this long before answering 503 (a hanging GitHub).
    Hang(u64),
    /// Every request answered 403: a missing permission, or (`true`) the rate limit
    /// exhausted (`x-ratelimit-remaining: 0`).
    Forbidden(bool),
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    next_id: u64,
    tags: Vec<String>,
    head: String,
    etag: u64,
    files: BTreeMap<String, String>,
    releases: Vec<String>,
    /// (id, sha, environment, states oldest first)
    deployments: Vec<(u64, String, String, Vec<String>)>,
}

pub struct GitHubMock {
    pub url: String,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl GitHubMock {
    pub fn start() -> GitHubMock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            next_id: 1000,
            ..State::default()
        }));
        let mode = Arc::new(Mutex::new(Mode::Up));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, md, sp) = (state.clone(), mode.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, md) = (st.clone(), md.clone());
                std::thread::spawn(move || handle(conn, &st, &md));
            }
        });
        GitHubMock {
            url: format!("http://{addr}"),
            state,
            mode,
            stop,
            addr,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Deployments made: (id, sha, environment, states oldest first).
    pub fn deployments(&self) -> Vec<(u64, String, String, Vec<String>)> {
        self.state.lock().unwrap().deployments.clone()
    }

    /// Tags of the GitHub Releases made.
    pub fn releases(&self) -> Vec<String> {
        self.state.lock().unwrap().releases.clone()
    }

    pub fn tags(&self) -> Vec<String> {
        self.state.lock().unwrap().tags.clone()
    }

    /// The desired-state branch head and files the contents API serves.
    pub fn set_head(&self, sha: &str, files: &[(&str, &str)]) {
        let mut s = self.state.lock().unwrap();
        s.head = sha.to_string();
        s.etag += 1;
        s.files = files
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect();
    }
}

impl Drop for GitHubMock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn handle(mut conn: TcpStream, state: &Mutex<State>, mode: &Mutex<Mode>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    state.lock().unwrap().requests.push(req.clone());
    let m = *mode.lock().unwrap();
    let (status, extra, out) = match m {
        Mode::Down => (
            503,
            String::new(),
            json!({"message": "Service Unavailable"}),
        ),
        Mode::Hang(secs) => {
            std::thread::sleep(Duration::from_secs(secs));
            (
                503,
                String::new(),
                json!({"message": "Service Unavailable"}),
            )
        }
        Mode::Forbidden(limited) => (
            403,
            format!(
                "x-ratelimit-remaining: {}\r\n",
                if limited { 0 } else { 4999 }
            ),
            json!({"message": if limited { "API rate limit exceeded" } else { "Resource not accessible by integration" }}),
        ),
        Mode::Up => route(&req, state),
    };
    let text = if status == 304 {
        String::new()
    } else {
        out.to_string()
    };
    let reason = match status {
        200 => "OK",
        201 => "Created",
        304 => "Not Modified",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        _ => "Service Unavailable",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{text}",
        text.len()
    );
}

fn route(req: &Request, state: &Mutex<State>) -> (u16, String, Value) {
    let mut s = state.lock().unwrap();
    let path = req.path.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["repos", _, _, "deployments"]) => {
            let query = req.path.split_once('?').map(|q| q.1).unwrap_or("");
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(str::to_string)
            };
            let (sha, env) = (param("sha"), param("environment"));
            let list: Vec<Value> = s
                .deployments
                .iter()
                .rev()
                .filter(|d| sha.as_ref().is_none_or(|x| *x == d.1))
                .filter(|d| env.as_ref().is_none_or(|x| *x == d.2))
                .map(|d| json!({"id": d.0, "sha": d.1, "ref": d.1, "environment": d.2}))
                .collect();
            (200, String::new(), Value::Array(list))
        }
        ("GET", ["repos", _, _, "deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let list: Vec<Value> = s
                .deployments
                .iter()
                .find(|d| d.0 == id)
                .map(|d| d.3.iter().rev().map(|st| json!({"state": st})).collect())
                .unwrap_or_default();
            (200, String::new(), Value::Array(list))
        }
        ("POST", ["repos", o, r, "deployments"]) => {
            s.next_id += 1;
            let id = s.next_id;
            let entry = (
                id,
                req.body["ref"].as_str().unwrap_or("").to_string(),
                req.body["environment"].as_str().unwrap_or("").to_string(),
                Vec::new(),
            );
            s.deployments.push(entry);
            (
                201,
                String::new(),
                json!({
                    "url": format!("https://api.github.com/repos/{o}/{r}/deployments/{id}"),
                    "id": id,
                    "node_id": "MDEwOkRlcGxveW1lbnQx",
                    "sha": req.body["ref"],
                    "ref": req.body["ref"],
                    "task": "deploy",
                    "payload": req.body["payload"],
                    "original_environment": req.body["environment"],
                    "environment": req.body["environment"],
                    "description": req.body["description"],
                    "creator": {"login": "ecs-gitops-bot", "id": 1, "type": "Bot"},
                    "created_at": "2026-11-27T10:00:00Z",
                    "updated_at": "2026-11-27T10:00:00Z",
                    "statuses_url": format!("https://api.github.com/repos/{o}/{r}/deployments/{id}/statuses"),
                    "repository_url": format!("https://api.github.com/repos/{o}/{r}"),
                    "transient_environment": false,
                    "production_environment": req.body["production_environment"]
                }),
            )
        }
        ("POST", ["repos", o, r, "deployments", id, "statuses"]) => {
            let n: u64 = id.parse().unwrap_or(0);
            let state = req.body["state"].as_str().unwrap_or("").to_string();
            if let Some(d) = s.deployments.iter_mut().find(|d| d.0 == n) {
                d.3.push(state);
            }
            (
                201,
                String::new(),
                json!({
                    "url": format!("https://api.github.com/repos/{o}/{r}/deployments/{id}/statuses/1"),
                    "id": 1,
                    "node_id": "MDE2OkRlcGxveW1lbnRTdGF0dXMx",
                    "state": req.body["state"],
                    "creator": {"login": "ecs-gitops-bot", "id": 1, "type": "Bot"},
                    "description": req.body["description"],
                    "environment": req.body["environment"],
                    "created_at": "2026-11-27T10:00:00Z",
                    "updated_at": "2026-11-27T10:00:00Z",
                    "deployment_url": format!("https://api.github.com/repos/{o}/{r}/deployments/{id}"),
                    "repository_url": format!("https://api.github.com/repos/{o}/{r}")
                }),
            )
        }
        ("POST", ["repos", o, r, "releases"]) => {
            let tag = req.body["tag_name"].as_str().unwrap_or("").to_string();
            if s.releases.contains(&tag) {
                (
                    422,
                    String::new(),
                    json!({"message": "Validation Failed", "errors": [{"resource": "Release", "code": "already_exists", "field": "tag_name"}]}),
                )
            } else {
                s.releases.push(tag.clone());
                (
                    201,
                    String::new(),
                    json!({"id": 1, "tag_name": tag, "name": req.body["name"], "html_url": format!("https://github.com/{o}/{r}/releases/tag/{tag}")}),
                )
            }
        }
        ("POST", ["repos", o, r, "git", "refs"]) => {
            let tag = req.body["ref"].as_str().unwrap_or("").to_string();
            if s.tags.contains(&tag) {
                (
                    422,
                    String::new(),
                    json!({"message": "Reference already exists", "documentation_url": "https://docs.github.com/rest/git/refs#create-a-reference", "status": "422"}),
                )
            } else {
                s.tags.push(tag.clone());
                (
                    201,
                    String::new(),
                    json!({
                        "ref": tag,
                        "node_id": "MDM6UmVmcmVmcy9oZWFkcy9mZWF0dXJlQQ==",
                        "url": format!("https://api.github.com/repos/{o}/{r}/git/{tag}"),
                        "object": {"type": "commit", "sha": req.body["sha"], "url": "https://api.github.com/repos/x/y/git/commits/z"}
                    }),
                )
            }
        }
        ("GET", ["repos", _, _, "commits", _branch]) => {
            let etag = format!("W/\"etag-{}\"", s.etag);
            if req.headers.get("if-none-match") == Some(&etag) {
                return (304, format!("ETag: {etag}\r\n"), Value::Null);
            }
            (
                200,
                format!("ETag: {etag}\r\n"),
                json!({"sha": s.head, "node_id": "C_1", "commit": {"message": "update desired state"}}),
            )
        }
        ("GET", ["repos", _, _, "contents", folder]) => {
            let list: Vec<Value> = s
                .files
                .iter()
                .map(|(name, content)| json!({"type": "file", "name": name, "path": format!("{folder}/{name}"), "sha": "0", "size": content.len()}))
                .collect();
            (200, String::new(), Value::Array(list))
        }
        ("GET", ["repos", _, _, "contents", folder, name]) => match s.files.get(*name) {
            Some(content) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(content);
                (
                    200,
                    String::new(),
                    json!({"type": "file", "encoding": "base64", "name": name, "path": format!("{folder}/{name}"), "size": content.len(), "content": b64}),
                )
            }
            None => (404, String::new(), json!({"message": "Not Found"})),
        },
        _ => (404, String::new(), json!({"message": "Not Found"})),
    }
}
