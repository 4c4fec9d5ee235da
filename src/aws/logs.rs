//! CloudWatch Logs: how many events match a filter pattern in a time window.

use super::{Aws, AwsError};

/// Pages read at most per count (10,000 events each): enough to know a count is over any
/// sensible `max` without reading a flood of errors to the end.
const MAX_PAGES: usize = 5;

impl Aws {
    /// Events in `group` matching `pattern` from `start_ms` to `end_ms`; stops counting once
    /// the count passes `enough`.
    pub async fn count_log_events(
        &self,
        region: &str,
        group: &str,
        pattern: &str,
        start_ms: i64,
        end_ms: i64,
        enough: u64,
    ) -> Result<u64, AwsError> {
        let c = self.clients(region);
        let mut count = 0u64;
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .call(&c.region, "logs", "FilterLogEvents", || {
                    c.logs
                        .filter_log_events()
                        .log_group_name(group)
                        .filter_pattern(pattern)
                        .start_time(start_ms)
                        .end_time(end_ms)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            count += out.events().len() as u64;
            token = out.next_token().map(str::to_string);
            if token.is_none() || count > enough {
                break;
            }
        }
        Ok(count)
    }
}
