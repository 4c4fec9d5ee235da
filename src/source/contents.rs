//! GitHub's contents API as a desired-state source.

use http::header::{HeaderMap, HeaderValue};

use crate::desired::{self};

use crate::desired::Snapshot;
use crate::github::{GitHub, GitHubError, RepoRef};

// ---- GitHub as a source -----------------------------------------------------------------------

/// Reads the desired-state files through the contents API; an unchanged branch costs one
/// conditional request (`If-None-Match`), which GitHub does not count against the rate limit.
pub struct ContentsSource {
    github: GitHub,
    repo: RepoRef,
    branch: String,
    path: String,
    etag: Option<String>,
}

impl ContentsSource {
    pub fn new(github: GitHub, repo: RepoRef, branch: &str, path: &str) -> ContentsSource {
        ContentsSource {
            github,
            repo,
            branch: branch.to_string(),
            path: path.trim_matches('/').to_string(),
            etag: None,
        }
    }

    pub fn display(&self) -> String {
        format!("github:{}/{}", self.repo.owner, self.repo.name)
    }

    /// `Ok(None)` when the branch head has not changed since the last call.
    pub async fn poll(&mut self) -> Result<Option<Snapshot>, GitHubError> {
        let repo = format!("/repos/{}/{}", self.repo.owner, self.repo.name);
        let mut headers = HeaderMap::new();
        if let Some(etag) = &self.etag
            && let Ok(v) = HeaderValue::from_str(etag)
        {
            headers.insert(http::header::IF_NONE_MATCH, v);
        }
        let head = self
            .github
            .request(
                "get_commit",
                "GET",
                &format!("{repo}/commits/{}", self.branch),
                None,
                headers,
            )
            .await?;
        if head.status == 304 {
            return Ok(None);
        }
        if head.status != 200 {
            return Err(GitHubError::Status {
                operation: "get_commit",
                status: head.status,
                rate_limited: head.rate_limited,
            });
        }
        let sha = head.body["sha"].as_str().ok_or(GitHubError::Unexpected {
            operation: "get_commit",
            what: "no commit sha".into(),
        })?;
        let sha = sha.to_string();
        let listing = self
            .github
            .request(
                "get_contents",
                "GET",
                &format!("{repo}/contents/{}?ref={sha}", self.path),
                None,
                HeaderMap::new(),
            )
            .await?;
        if listing.status != 200 {
            return Err(GitHubError::Status {
                operation: "get_contents",
                status: listing.status,
                rate_limited: listing.rate_limited,
            });
        }
        let entries = listing.body.as_array().cloned().unwrap_or_default();
        let mut snapshot = crate::desired::SnapshotBuilder::default();
        for e in entries {
            let (Some(name), Some("file")) = (e["name"].as_str(), e["type"].as_str()) else {
                continue;
            };
            let rel = std::path::PathBuf::from(&self.path).join(name);
            if !desired::is_desired_state_file(&rel) {
                continue;
            }
            if snapshot.too_large(&rel, e["size"].as_u64().unwrap_or(0) as usize) {
                continue;
            }
            let file = self
                .github
                .request(
                    "get_contents",
                    "GET",
                    &format!("{repo}/contents/{}/{name}?ref={sha}", self.path),
                    None,
                    HeaderMap::new(),
                )
                .await?;
            if file.status != 200 {
                return Err(GitHubError::Status {
                    operation: "get_contents",
                    status: file.status,
                    rate_limited: file.rate_limited,
                });
            }
            let encoded: String = file.body["content"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            use base64::Engine;
            snapshot.add(
                rel,
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok(),
            );
        }
        self.etag = head.etag;
        Ok(Some(snapshot.finish(sha)))
    }
}
