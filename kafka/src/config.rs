//! `KafkaConfig`: where the operation events go, and how to authenticate there.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The Kafka side of `[events]`. Every field has a default.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    pub topic: String,
    /// Names this node's connections in the brokers' logs and quotas.
    pub client_id: String,
    /// `security.protocol`: `plaintext` or `sasl_plaintext` in this build (no TLS).
    pub security_protocol: Option<String>,
    /// `sasl.mechanism`: `PLAIN` in this build (SCRAM and GSSAPI need TLS or Kerberos
    /// support compiled in).
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    /// Further librdkafka properties for every client, e.g. `"fetch.wait.max.ms" = "5"`;
    /// they override annostore's own settings.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            topic: "annostore-operation-events".into(),
            client_id: "annostore".into(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("client_id", &self.client_id)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaConfig {
    /// A librdkafka client configuration: connection and authentication, then
    /// `defaults` (the client's own settings), then the user's `properties`.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        for (key, value) in [
            ("security.protocol", &self.security_protocol),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
        ] {
            if let Some(v) = value {
                c.set(key, v);
            }
        }
        for (key, value) in defaults {
            c.set(*key, *value);
        }
        for (key, value) in &self.properties {
            c.set(key, value);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c: KafkaConfig = serde_json::from_str(r#"{"brokers": "k1:9092,k2:9092"}"#).unwrap();
        assert_eq!(c.brokers, "k1:9092,k2:9092");
        assert_eq!(c.topic, "annostore-operation-events");
        assert_eq!(c.client_id, "annostore");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<KafkaConfig>(r#"{"broker": "k1:9092"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn properties_override_defaults_and_sasl_is_passed_through() {
        let c = KafkaConfig {
            security_protocol: Some("sasl_plaintext".into()),
            sasl_mechanism: Some("PLAIN".into()),
            sasl_username: Some("annostore".into()),
            sasl_password: Some("secret".into()),
            properties: [("linger.ms".to_owned(), "0".to_owned())].into(),
            ..KafkaConfig::default()
        };
        let cc = c.client_config(&[("linger.ms", "1"), ("fetch.wait.max.ms", "10")]);
        assert_eq!(cc.get("linger.ms"), Some("0"));
        assert_eq!(cc.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(cc.get("sasl.username"), Some("annostore"));
        assert_eq!(cc.get("security.protocol"), Some("sasl_plaintext"));
        assert!(!format!("{c:?}").contains("secret"));
    }
}
