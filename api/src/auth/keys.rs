//! The API keys file: who may call the API, and in which role.
//!
//! A key is `ask_<id>_<secret>`: `id` (16 hex digits) names the key in logs, listings
//! and operations (`producer`); `secret` (32 random bytes, base64url) is shown once,
//! when the key is created, and stored only as an argon2id hash. The file is JSON,
//! written whole to a temporary file and renamed, under an exclusive lock, so
//! concurrent `annostore keys` commands never lose a key and a running server never
//! reads half a file.

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// What a key may do. Admin may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Start runs, upsert, finish and cancel its own; preview its own.
    Producer,
    /// Search and read annotations.
    Reader,
    /// Everything: scans, any operation, admin routes, metrics.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// argon2id, in PHC string format.
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl KeyEntry {
    pub fn active(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// True when `secret` is this key's. Slow on purpose (argon2id): callers cache.
    pub fn verify(&self, secret: &str) -> bool {
        PasswordHash::new(&self.hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub keys: Vec<KeyEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a keys file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("hashing the secret: {0}")]
    Hash(String),
    #[error("no key has the id or name {0:?}")]
    Unknown(String),
    #[error("a key name is 1 to 64 characters: letters, digits, '-', '_' and '.'")]
    BadName,
}

/// A key as presented: `ask_<id>_<secret>`.
pub struct Token<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

const PREFIX: &str = "ask_";
const ID_LEN: usize = 16;

impl<'a> Token<'a> {
    /// Splits a presented key; `None` when it cannot be one (no hashing is spent on it).
    pub fn parse(s: &'a str) -> Option<Token<'a>> {
        let rest = s.strip_prefix(PREFIX)?;
        let id = rest.get(..ID_LEN)?;
        let secret = rest.get(ID_LEN..)?.strip_prefix('_')?;
        let ok = id.bytes().all(|b| b.is_ascii_hexdigit())
            && (40..=64).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then_some(Token { id, secret })
    }
}

impl KeyFile {
    /// The keys in `path`; none when the file does not exist.
    pub fn load(path: &Path) -> Result<KeyFile, KeysError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| KeysError::Parse {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(source) => Err(KeysError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Loads `path` under an exclusive lock, lets `change` edit it, and writes it back
    /// (a temporary file, fsync'd, then renamed over the old one).
    pub fn update<T>(
        path: &Path,
        change: impl FnOnce(&mut KeyFile) -> Result<T, KeysError>,
    ) -> Result<T, KeysError> {
        let io = |source| KeysError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        lock.lock().map_err(io)?;
        let mut file = KeyFile::load(path)?;
        let out = change(&mut file)?;
        let tmp = path.with_extension("tmp");
        let mut w = secret_file(&tmp).map_err(io)?;
        let json = serde_json::to_vec_pretty(&file).map_err(|source| KeysError::Parse {
            path: path.to_owned(),
            source,
        })?;
        w.write_all(&json).map_err(io)?;
        w.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(out)
    }

    /// Adds a key; returns it and the whole key to hand to its user (shown only now).
    pub fn create(
        &mut self,
        name: &str,
        role: Role,
        now: OffsetDateTime,
    ) -> Result<(KeyEntry, String), KeysError> {
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(KeysError::BadName);
        }
        let mut raw = [0u8; 8];
        let id = loop {
            OsRng.fill_bytes(&mut raw);
            let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if self.keys.iter().all(|k| k.id != id) {
                break id;
            }
        };
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map_err(|e| KeysError::Hash(e.to_string()))?
            .to_string();
        let entry = KeyEntry {
            id: id.clone(),
            name: name.to_owned(),
            role,
            hash,
            created_at: now,
            revoked_at: None,
        };
        self.keys.push(entry.clone());
        Ok((entry, format!("{PREFIX}{id}_{secret}")))
    }

    /// Revokes the active keys whose id or name is `which`; returns their ids.
    pub fn revoke(&mut self, which: &str, now: OffsetDateTime) -> Result<Vec<String>, KeysError> {
        let mut ids = Vec::new();
        for k in &mut self.keys {
            if k.active() && (k.id == which || k.name == which) {
                k.revoked_at = Some(now);
                ids.push(k.id.clone());
            }
        }
        if ids.is_empty() {
            return Err(KeysError::Unknown(which.to_owned()));
        }
        Ok(ids)
    }
}

/// A new file only its owner may read (unix), for the hashes.
fn secret_file(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_verifies_and_nothing_else_does() {
        let mut file = KeyFile::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let (entry, key) = file.create("ingest-1", Role::Producer, now).unwrap();
        let token = Token::parse(&key).expect("a created key parses");
        assert_eq!(token.id, entry.id);
        assert!(entry.verify(token.secret));
        assert!(
            !entry.hash.contains(token.secret),
            "the secret is not stored"
        );
        let mut wrong = token.secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('A') { "B" } else { "A" });
        assert!(!entry.verify(&wrong));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let good = format!("ask_{}_{}", "0123456789abcdef", "A".repeat(43));
        assert!(Token::parse(&good).is_some());
        for bad in [
            "",
            "ask_",
            "Bearer x",
            &good[1..],
            &good[..good.len() - 10],
            &format!("ask_0123456789abcdeg_{}", "A".repeat(43)),
            &format!("ask_0123456789abcdef_{}", "A/".repeat(22)),
            &format!("ask_0123456789abcdef-{}", "A".repeat(43)),
            &format!("ask_é123456789abcde_{}", "A".repeat(43)),
        ] {
            assert!(Token::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn revoke_by_name_or_id_and_update_keeps_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let now = OffsetDateTime::UNIX_EPOCH;
        let a = KeyFile::update(&path, |f| f.create("a", Role::Reader, now)).unwrap();
        let b = KeyFile::update(&path, |f| f.create("b", Role::Admin, now)).unwrap();
        let file = KeyFile::load(&path).unwrap();
        assert_eq!(file.keys.len(), 2);
        let ids = KeyFile::update(&path, |f| f.revoke("a", now)).unwrap();
        assert_eq!(ids, vec![a.0.id.clone()]);
        let e = KeyFile::update(&path, |f| f.revoke("a", now)).unwrap_err();
        assert!(matches!(e, KeysError::Unknown(_)), "{e}");
        KeyFile::update(&path, |f| f.revoke(&b.0.id, now)).unwrap();
        let file = KeyFile::load(&path).unwrap();
        assert!(file.keys.iter().all(|k| !k.active()));
        assert!(matches!(
            KeyFile::default().create("no spaces", Role::Reader, now),
            Err(KeysError::BadName)
        ));
    }
}
