//! GitHub: push webhooks in, deployment statuses, release tags out. All through octocrab.
//!
//! Reporting is best effort by design: events go into a bounded queue that one task drains,
//! retrying with backoff, so GitHub being slow, down or rate-limited never delays a deploy or a
//! rollback. The token and the webhook secret live in `Secret`, whose Debug and Display print
//! `[redacted]`; neither is ever put into a log field, a metric label or an error message.
//! GitHub as a desired-state source (the contents API) is `source::contents`.

pub mod client;
pub mod reporter;
pub mod webhook;

pub use client::{GitHub, GitHubError, RepoRef, Response, Secret, SetupError};
pub use reporter::{Event, Reporter, ReporterConfig, release_tag, reporter};
pub use webhook::{sign, signature_valid};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Release;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_signature_verifies_only_with_the_same_secret_and_body() {
        let secret = Secret::new("It's a Secret to Everybody".into());
        // The example from GitHub's documentation on validating webhook deliveries.
        let sig = sign(&secret, b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(signature_valid(&secret, b"Hello, World!", &sig));
        assert!(!signature_valid(&secret, b"Hello, World?", &sig));
        assert!(!signature_valid(
            &Secret::new("other".into()),
            b"Hello, World!",
            &sig
        ));
        assert!(!signature_valid(&secret, b"Hello, World!", "sha1=757107ea"));
        assert!(!signature_valid(&secret, b"Hello, World!", "sha256=zz"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn release_tags_are_dated_and_short() {
        let r = Release::parse("3f9c2a1e0b7d4c5a6f8e9d0c1b2a3f4e5d6c7b8a").unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_776_000);
        assert_eq!(release_tag(&r, at), "v2026.11.27-3f9c2a1");
    }

    #[test]
    fn repositories_are_owner_slash_name() {
        assert_eq!(
            RepoRef::parse("acme/desired-state").unwrap().name,
            "desired-state"
        );
        assert!(RepoRef::parse("acme").is_err());
        assert!(RepoRef::parse("acme/x/y").is_err());
    }
}
