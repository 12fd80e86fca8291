//! `annostore keys create|list|revoke`: manages the keys file offline (a running
//! server notices the change on its next request).

use super::keys::{KeyFile, Role};
use anyhow::Context;
use std::path::Path;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Creates a key and prints it: the only time its secret is shown.
pub fn create(path: &Path, name: &str, role: Role, json: bool) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let (entry, key) = KeyFile::update(path, |f| f.create(name, role, now))
        .with_context(|| format!("adding a key to {}", path.display()))?;
    if json {
        let out = serde_json::json!({
            "id": entry.id, "name": entry.name, "role": entry.role, "key": key,
        });
        println!("{out}");
    } else {
        println!("{key}");
        eprintln!(
            "created {} key {} ({}) in {}: the key above is shown only now",
            role.as_str(),
            entry.id,
            entry.name,
            path.display()
        );
    }
    Ok(())
}

pub fn list(path: &Path, json: bool) -> anyhow::Result<()> {
    let file = KeyFile::load(path)?;
    if file.keys.is_empty() {
        eprintln!(
            "no keys in {}: the API is open (loopback only)",
            path.display()
        );
    }
    let time = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_else(|_| t.to_string());
    for k in &file.keys {
        let revoked = k.revoked_at.map(time);
        if json {
            let out = serde_json::json!({
                "id": k.id, "name": k.name, "role": k.role,
                "created_at": time(k.created_at), "revoked_at": revoked,
            });
            println!("{out}");
        } else {
            println!(
                "{}  {:<8}  {:<24}  created {}{}",
                k.id,
                k.role.as_str(),
                k.name,
                time(k.created_at),
                revoked
                    .map(|t| format!("  REVOKED {t}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

pub fn revoke(path: &Path, which: &str) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let ids = KeyFile::update(path, |f| f.revoke(which, now))
        .with_context(|| format!("revoking {which:?} in {}", path.display()))?;
    for id in ids {
        println!("revoked {id}");
    }
    Ok(())
}
