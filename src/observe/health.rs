//! HTTP health checks of a release during its bake.
//!
//! A response with another status than expected is a failure; a check that gets no response
//! at all (connection refused, DNS, timeout) is *unknown*, because the controller cannot tell a
//! dead service from a network problem between it and the service, and unknown never verifies.

use std::time::Duration;

use crate::desired::HealthCheck;
use crate::plan::Check;

#[derive(Clone)]
pub struct HealthChecker {
    client: reqwest::Client,
}

impl HealthChecker {
    /// A client with `timeout` and no redirects; failing to build one is an error, never a
    /// silent fallback to a client without them.
    pub fn new(timeout: Duration) -> Result<HealthChecker, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ecs-gitops/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HealthChecker { client })
    }

    pub async fn check(&self, hc: &HealthCheck) -> Check {
        match self.client.get(&hc.url).send().await {
            Ok(resp) if resp.status().as_u16() == hc.expect_status => Check::Ok,
            Ok(resp) => Check::Failed(format!(
                "answered {} (expected {})",
                resp.status().as_u16(),
                hc.expect_status
            )),
            Err(e) if e.is_timeout() => Check::Unknown("timed out".into()),
            Err(e) if e.is_connect() => Check::Unknown("could not connect".into()),
            Err(_) => Check::Unknown("request failed".into()),
        }
    }

    pub async fn check_all(&self, checks: &[HealthCheck]) -> Vec<Check> {
        let mut set = tokio::task::JoinSet::new();
        for (i, hc) in checks.iter().enumerate() {
            let me = self.clone();
            let hc = hc.clone();
            set.spawn(async move { (i, me.check(&hc).await) });
        }
        let mut out = vec![Check::Unknown("not checked".into()); checks.len()];
        while let Some(res) = set.join_next().await {
            if let Ok((i, c)) = res {
                out[i] = c;
            }
        }
        out
    }
}
