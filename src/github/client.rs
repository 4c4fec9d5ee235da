//! The GitHub REST client (octocrab), the repository reference and the secret type.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;
use octocrab::Octocrab;
use serde_json::Value;

use crate::metrics::Metrics;

/// A token or webhook secret: never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file (trailing newline removed) or an environment variable.
    pub fn load(
        file: Option<&std::path::Path>,
        env: Option<&str>,
        what: &str,
        flag: &str,
    ) -> Result<Option<Secret>, SetupError> {
        let (what, flag) = (what.to_string(), flag.to_string());
        if let Some(path) = file {
            let path = path.to_path_buf();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(source) => {
                    return Err(SetupError::ReadSecret {
                        what,
                        path,
                        flag,
                        source,
                    });
                }
            };
            let value = text.trim_end_matches(['\n', '\r']).to_string();
            if value.is_empty() {
                return Err(SetupError::EmptySecret { what, path, flag });
            }
            return Ok(Some(Secret(value)));
        }
        if let Some(name) = env {
            return match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
                _ => Err(SetupError::UnsetSecret {
                    what,
                    name: name.to_string(),
                    flag,
                }),
            };
        }
        Ok(None)
    }
}

/// What can be wrong with the GitHub settings given on the command line.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the {what} from {} ({flag}-file)", path.display())]
    ReadSecret {
        what: String,
        path: std::path::PathBuf,
        flag: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} ({flag}-file) is empty; put the {what} in it", path.display())]
    EmptySecret {
        what: String,
        path: std::path::PathBuf,
        flag: String,
    },
    #[error("environment variable {name} ({flag}-env) is not set; export the {what} in it")]
    UnsetSecret {
        what: String,
        name: String,
        flag: String,
    },
    #[error("`{0}` is not a GitHub repository; write it as owner/name")]
    NotARepository(String),
    #[error("`{0}` is not a URL (--github-api-url)")]
    NotAUrl(String),
    #[error("cannot set up the GitHub client ({0})")]
    Client(&'static str, #[source] octocrab::Error),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

// ---- client ----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
}

impl RepoRef {
    pub fn parse(s: &str) -> Result<RepoRef, SetupError> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match s.split_once('/') {
            Some((o, n)) if ok(o) && ok(n) => Ok(RepoRef {
                owner: o.to_string(),
                name: n.to_string(),
            }),
            _ => Err(SetupError::NotARepository(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub {operation} answered {status}")]
    Status {
        operation: &'static str,
        status: u16,
        /// GitHub said the rate limit is exhausted (`x-ratelimit-remaining: 0` or
        /// `retry-after`); only then is a 403 worth retrying.
        rate_limited: bool,
    },
    #[error("GitHub {operation} failed: {kind}")]
    Transport {
        operation: &'static str,
        kind: &'static str,
    },
    #[error("GitHub {operation} answered something unexpected: {what}")]
    Unexpected {
        operation: &'static str,
        what: String,
    },
}

impl GitHubError {
    pub(crate) fn transient(&self) -> bool {
        match self {
            GitHubError::Status {
                status,
                rate_limited,
                ..
            } => *status >= 500 || *status == 429 || *rate_limited,
            GitHubError::Transport { .. } => true,
            GitHubError::Unexpected { .. } => false,
        }
    }

    /// A fixed identifier for the `outcome` metric label.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            GitHubError::Status {
                status,
                rate_limited,
                ..
            } if *status == 429 || *rate_limited => "rate_limited",
            GitHubError::Status { status, .. } if *status >= 500 => "server_error",
            GitHubError::Status { .. } => "client_error",
            GitHubError::Transport { .. } => "network_error",
            GitHubError::Unexpected { .. } => "bad_response",
        }
    }
}

/// A small typed layer over octocrab's raw requests: status codes stay visible (304 for an
/// unchanged ETag, 422 for a tag that exists) and every call is counted.
#[derive(Clone)]
pub struct GitHub {
    client: Octocrab,
    metrics: Arc<Metrics>,
}

pub struct Response {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Value,
    /// A 429, or a 403 that says the rate limit is exhausted.
    pub rate_limited: bool,
}

impl GitHub {
    pub fn new(
        api_url: &str,
        token: Option<&Secret>,
        metrics: Arc<Metrics>,
    ) -> Result<GitHub, SetupError> {
        let mut b = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|_| SetupError::NotAUrl(api_url.to_string()))?
            .set_connect_timeout(Some(Duration::from_secs(5)))
            .set_read_timeout(Some(Duration::from_secs(10)));
        if let Some(t) = token {
            b = b.personal_token(t.expose().to_string());
        }
        let client = b
            .build()
            .map_err(|e| SetupError::Client(error_kind(&e), e))?;
        Ok(GitHub { client, metrics })
    }

    pub(crate) async fn request(
        &self,
        operation: &'static str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: HeaderMap,
    ) -> Result<Response, GitHubError> {
        let result = match method {
            "POST" => self.client._post(path, body).await,
            _ => self.client._get_with_headers(path, Some(headers)).await,
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                self.count(operation, "network_error");
                return Err(GitHubError::Transport {
                    operation,
                    kind: error_kind(&e),
                });
            }
        };
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let rate_limited = status == 429
            || (status == 403
                && (resp.headers().contains_key("retry-after")
                    || resp
                        .headers()
                        .get("x-ratelimit-remaining")
                        .is_some_and(|v| v.as_bytes() == b"0")));
        let text = self.client.body_to_string(resp).await.unwrap_or_default();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let outcome = match status {
            200..=299 => "ok",
            304 => "not_modified",
            _ if rate_limited => "rate_limited",
            500.. => "server_error",
            _ => "client_error",
        };
        self.count(operation, outcome);
        Ok(Response {
            status,
            etag,
            body,
            rate_limited,
        })
    }

    pub(crate) fn count(&self, operation: &str, outcome: &str) {
        self.metrics
            .github_requests
            .with_label_values(&[operation, outcome])
            .inc();
    }

    /// A GET whose answer must be 2xx.
    pub(crate) async fn get(
        &self,
        operation: &'static str,
        path: &str,
    ) -> Result<Value, GitHubError> {
        let r = self
            .request(operation, "GET", path, None, HeaderMap::new())
            .await?;
        if (200..300).contains(&r.status) {
            Ok(r.body)
        } else {
            Err(GitHubError::Status {
                operation,
                status: r.status,
                rate_limited: r.rate_limited,
            })
        }
    }

    pub(crate) async fn post(
        &self,
        operation: &'static str,
        path: &str,
        body: &Value,
        accept: &[u16],
    ) -> Result<Response, GitHubError> {
        let r = self
            .request(operation, "POST", path, Some(body), HeaderMap::new())
            .await?;
        if (200..300).contains(&r.status) || accept.contains(&r.status) {
            Ok(r)
        } else {
            Err(GitHubError::Status {
                operation,
                status: r.status,
                rate_limited: r.rate_limited,
            })
        }
    }
}

fn error_kind(e: &octocrab::Error) -> &'static str {
    match e {
        octocrab::Error::Hyper { .. } => "connection",
        octocrab::Error::Service { .. } => "connection",
        octocrab::Error::Http { .. }
        | octocrab::Error::Uri { .. }
        | octocrab::Error::InvalidHeaderValue { .. } => "request",
        octocrab::Error::Json { .. } | octocrab::Error::Serde { .. } => "response",
        _ => "other",
    }
}
