//! The API budget: AWS throttles each account's calls per region and service with token
//! buckets, and the controller shares those buckets with everything else the team runs. So
//! every call first takes a token from a bucket of our own per (account, region, service),
//! refilled at `--aws-max-rps` (default 10 per second, burst twice that: half of what ECS
//! documents for its read actions), so the controller alone never throttles an account.
//!
//! A caller that finds the bucket empty reserves the next token and sleeps until it is due;
//! reservations are served in arrival order. Each environment's loop makes one call at a time,
//! so arrival order is round robin over the environments waiting: a busy environment (many
//! services, a rollout) cannot starve another, each waits at most one token per environment
//! ahead of it.
//!
//! Safety goes first: the calls of a pass that may stop a release (woken by an alarm's event,
//! or rolling back) are urgent. An urgent call never waits: it takes its token at once, and
//! the debt it leaves makes the next ordinary callers wait longer, so the sustained rate holds
//! and only the moment's burst grows, by the rollback's few calls. Without this an alarm in one
//! environment would wait behind one call of every other busy environment.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static URGENT: bool;
}

/// Runs `f` with its AWS calls urgent (when `urgent`) or as they would be.
pub async fn urgent_if<F: std::future::Future>(urgent: bool, f: F) -> F::Output {
    if urgent {
        URGENT.scope(true, f).await
    } else {
        f.await
    }
}

/// Whether the calling task runs urgent (inside `urgent_if(true, ..)`).
pub fn is_urgent() -> bool {
    URGENT.try_with(|u| *u).unwrap_or(false)
}

/// Default sustained rate per (account, region, service).
pub const DEFAULT_MAX_RPS: f64 = 10.0;

pub struct Budget {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    /// May be negative: tokens already promised to callers that are sleeping.
    tokens: f64,
    at: Instant,
}

impl Budget {
    /// `rate` calls per second sustained, twice that in a burst.
    pub fn new(rate: f64) -> Budget {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            DEFAULT_MAX_RPS
        };
        Budget {
            rate,
            burst: (rate * 2.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How long the caller must wait for its token (reserving it now); zero when `urgent`.
    fn reserve(&self, key: &str, now: Instant, urgent: bool) -> Duration {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        b.tokens -= 1.0;
        if urgent || b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate)
        }
    }

    /// Takes a token for `key`, sleeping until one is due (unless the calling task runs
    /// `urgent`); returns how long it waited.
    pub async fn take(&self, key: &str) -> Duration {
        let wait = self.reserve(key, Instant::now(), is_urgent());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_free_then_calls_come_at_the_rate() {
        let b = Budget::new(5.0);
        for _ in 0..10 {
            assert_eq!(b.take("a/r/ecs").await, Duration::ZERO);
        }
        let start = Instant::now();
        for _ in 0..10 {
            b.take("a/r/ecs").await;
        }
        // 10 more at 5 per second.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010),
            "{took:?}"
        );
        // Another service (or account, or region) has a bucket of its own.
        assert_eq!(b.take("a/r/ecr").await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_environment_cannot_starve_a_quiet_one() {
        let b = Arc::new(Budget::new(2.0));
        // The busy environment: 40 calls in turn (as many services described one by one).
        let busy = {
            let b = b.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    b.take("base/r/ecs").await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        // The quiet environment's one call waits behind at most one reservation of the busy
        // one (each loop makes one call at a time), not behind all 40.
        let waited = b.take("base/r/ecs").await;
        assert!(waited <= Duration::from_millis(1000), "{waited:?}");
        busy.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_urgent_call_goes_first_and_its_token_is_still_counted() {
        let b = Arc::new(Budget::new(1.0));
        // 50 busy environments, each with a call waiting its turn.
        let busy: Vec<_> = (0..50)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.take("base/r/ecs").await })
            })
            .collect();
        tokio::task::yield_now().await;
        // An ordinary call now waits behind all of them ...
        assert!(b.reserve("base/r/ecs", Instant::now(), false) >= Duration::from_secs(25));
        // ... an urgent one (a rollback) does not wait at all,
        let start = Instant::now();
        assert_eq!(urgent_if(true, b.take("base/r/ecs")).await, Duration::ZERO);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // and the next ordinary caller pays for both, so the sustained rate holds.
        let next = b.reserve("base/r/ecs", Instant::now(), false);
        assert!(next >= Duration::from_secs(27), "{next:?}");
        // Outside the scope calls are ordinary again.
        assert!(urgent_if(false, b.take("base/r/ecs")).await >= Duration::from_secs(28));
        for t in busy {
            t.abort();
        }
    }
}
