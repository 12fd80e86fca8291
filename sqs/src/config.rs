//! What the SQS retry queue needs to know: where SQS is, which queues, and how it backs
//! off. This is the `[queue]` section of annostore's configuration when `kind = "sqs"`.

use annostore_core::queue::QueueError;
use serde::{Deserialize, Serialize};

/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY_SECONDS: u32 = 43_200;
/// The longest long-poll SQS accepts.
pub const MAX_WAIT_SECONDS: u32 = 20;
/// The highest `maxReceiveCount` a redrive policy accepts.
pub const MAX_RECEIVES_LIMIT: u32 = 1_000;

/// Settings of [`crate::SqsRetryQueue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqsConfig {
    /// Endpoint URL of an SQS-compatible service (moto, ElasticMQ, LocalStack), for
    /// example `http://127.0.0.1:5000`. `None` talks to AWS itself, in `region` (or to
    /// what the SDK's environment says, such as `AWS_ENDPOINT_URL_SQS`).
    pub endpoint: Option<String>,
    /// AWS region of the queues (also signs requests to a local endpoint).
    pub region: String,
    /// Name of the retry queue (a standard queue, not FIFO).
    pub queue_name: String,
    /// Name of the dead-letter queue that SQS's redrive moves a message to after
    /// `max_receives` receives.
    pub dead_letter_queue_name: String,
    /// Receives after which SQS moves a message to the dead-letter queue (the redrive
    /// policy's `maxReceiveCount`, 1..=1000). Changing it takes `annostore schema apply`.
    pub max_receives: u32,
    /// Long-poll of a receive, in seconds (0..=20): the first ReceiveMessage call of a
    /// receive waits this long for a message when none is due.
    pub wait_seconds: u32,
    /// Invisibility after the first receive, in seconds (at least 1); it doubles with
    /// every further receive: `min(base * 2^(n-1), max)` for the n-th receive.
    pub base_backoff_seconds: u32,
    /// Cap of the backoff, in seconds (at most 43200: SQS's visibility timeout is at
    /// most 12 hours).
    pub max_backoff_seconds: u32,
    /// Access key id; with `secret_access_key`, used instead of the default AWS
    /// credential chain (environment, profile, web identity, container, instance).
    pub access_key_id: Option<String>,
    /// Secret access key going with `access_key_id`.
    pub secret_access_key: Option<String>,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            endpoint: None,
            region: "us-east-1".into(),
            queue_name: "annostore-index-retry".into(),
            dead_letter_queue_name: "annostore-index-retry-dlq".into(),
            max_receives: 8,
            wait_seconds: 10,
            base_backoff_seconds: 2,
            max_backoff_seconds: 900,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl SqsConfig {
    /// Checks the settings against what SQS accepts.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |what: String| {
            Err(QueueError::Unavailable(format!(
                "invalid SQS queue settings: {what}"
            )))
        };
        if self.queue_name.is_empty() || self.dead_letter_queue_name.is_empty() {
            return bad("queue_name and dead_letter_queue_name must not be empty".into());
        }
        if self.queue_name == self.dead_letter_queue_name {
            return bad("queue_name and dead_letter_queue_name must differ".into());
        }
        if !(1..=MAX_RECEIVES_LIMIT).contains(&self.max_receives) {
            return bad(format!(
                "max_receives is {}, must be 1..={MAX_RECEIVES_LIMIT}",
                self.max_receives
            ));
        }
        if self.wait_seconds > MAX_WAIT_SECONDS {
            return bad(format!(
                "wait_seconds is {}, must be 0..={MAX_WAIT_SECONDS}",
                self.wait_seconds
            ));
        }
        if self.base_backoff_seconds == 0 || self.base_backoff_seconds > self.max_backoff_seconds {
            return bad(format!(
                "base_backoff_seconds is {}, must be at least 1 and at most max_backoff_seconds ({})",
                self.base_backoff_seconds, self.max_backoff_seconds
            ));
        }
        if self.max_backoff_seconds > MAX_VISIBILITY_SECONDS {
            return bad(format!(
                "max_backoff_seconds is {}, must be at most {MAX_VISIBILITY_SECONDS} (12 hours)",
                self.max_backoff_seconds
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return bad("give both access_key_id and secret_access_key, or neither".into());
        }
        Ok(())
    }

    /// Invisibility after the `receive_count`-th receive (1-based).
    pub fn backoff_seconds(&self, receive_count: u32) -> u32 {
        backoff_seconds(
            self.base_backoff_seconds,
            self.max_backoff_seconds,
            receive_count,
        )
    }
}

/// `min(base * 2^(n-1), max)` for the n-th receive (n = 0 is taken as 1).
pub fn backoff_seconds(base: u32, max: u32, receive_count: u32) -> u32 {
    let doublings = receive_count.saturating_sub(1).min(32);
    let seconds = u64::from(base).saturating_mul(1u64 << doublings);
    u32::try_from(seconds.min(u64::from(max))).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let got: Vec<u32> = (1..=12).map(|n| backoff_seconds(2, 900, n)).collect();
        assert_eq!(
            got,
            [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900],
            "base 2 s doubling, capped at 900 s"
        );
        assert_eq!(backoff_seconds(2, 900, 0), 2, "count 0 counts as the first");
        assert_eq!(backoff_seconds(1, 43_200, u32::MAX), 43_200, "no overflow");
        assert_eq!(backoff_seconds(5, 5, 7), 5);
        assert_eq!(SqsConfig::default().backoff_seconds(3), 8);
    }

    #[test]
    fn defaults_are_valid_and_bad_settings_are_refused() {
        SqsConfig::default().validate().unwrap();
        let bad = [
            SqsConfig {
                wait_seconds: 21,
                ..Default::default()
            },
            SqsConfig {
                max_receives: 0,
                ..Default::default()
            },
            SqsConfig {
                base_backoff_seconds: 0,
                ..Default::default()
            },
            SqsConfig {
                max_backoff_seconds: 43_201,
                ..Default::default()
            },
            SqsConfig {
                base_backoff_seconds: 10,
                max_backoff_seconds: 5,
                ..Default::default()
            },
            SqsConfig {
                access_key_id: Some("k".into()),
                ..Default::default()
            },
            SqsConfig {
                dead_letter_queue_name: "annostore-index-retry".into(),
                ..Default::default()
            },
        ];
        for cfg in bad {
            let err = cfg.validate().unwrap_err();
            assert!(
                err.to_string().contains("invalid SQS queue settings"),
                "{err}"
            );
        }
    }

    #[test]
    fn config_reads_from_toml_like_json_and_refuses_unknown_fields() {
        let cfg: SqsConfig =
            serde_json::from_str(r#"{"endpoint":"http://127.0.0.1:5000","max_receives":3}"#)
                .unwrap();
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(cfg.max_receives, 3);
        assert_eq!(cfg.queue_name, "annostore-index-retry");
        assert!(serde_json::from_str::<SqsConfig>(r#"{"queue":"x"}"#).is_err());
    }
}
