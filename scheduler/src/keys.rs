//! API keys: `vxp_<prefix>_<secret>`. Only the SHA-256 of the whole key is stored; the prefix
//! is public and finds the row, the hash comparison decides.

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, Actor, AuditEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(format!("unknown role {other:?} (admin, member)")),
        }
    }
}

/// Who a request acts as, once its key checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub role: Role,
    pub max_concurrent_jobs: i32,
}

/// A key just created: the only time its secret exists outside the caller's hands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewKey {
    pub key: String,
    pub tenant: String,
    pub role: Role,
    #[serde(skip)]
    pub key_id: Uuid,
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(buf))
}

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Slugs: lowercase letters, digits and dashes, as the database checks.
pub fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 63
        && !slug.starts_with('-')
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Creates the tenant if needed and a key for it; audited in the same transaction.
pub async fn create(pool: &PgPool, tenant: &str, role: Role) -> anyhow::Result<NewKey> {
    if !valid_slug(tenant) {
        anyhow::bail!(
            "tenant {tenant:?} is not a valid slug (lowercase letters, digits, dashes; 1–63)"
        );
    }
    let prefix = random_hex(6)?;
    let key = format!("vxp_{prefix}_{}", random_hex(24)?);
    let key_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let tenant_id: Uuid = sqlx::query_scalar(
        "INSERT INTO tenants (id, slug) VALUES ($1, $2)
         ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, role, prefix, secret_hash) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key_id)
    .bind(tenant_id)
    .bind(role.as_str())
    .bind(&prefix)
    .bind(hash_key(&key))
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        &AuditEvent {
            request_id: format!("cli-{}", Uuid::now_v7()),
            actor: Actor::Operator,
            tenant_id: Some(tenant_id),
            action: "key.create".into(),
            target: format!("key:{key_id}"),
            details: serde_json::json!({ "role": role.as_str(), "prefix": prefix }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(NewKey {
        key,
        tenant: tenant.to_string(),
        role,
        key_id,
    })
}

/// Checks a presented key; `None` for anything unknown, revoked or malformed.
pub async fn authenticate(pool: &PgPool, presented: &str) -> anyhow::Result<Option<Principal>> {
    let mut parts = presented.splitn(3, '_');
    let (Some("vxp"), Some(prefix), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let row: Option<(Uuid, Uuid, String, String, Vec<u8>, i32)> = sqlx::query_as(
        "SELECT k.id, t.id, t.slug, k.role, k.secret_hash, t.max_concurrent_jobs
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.prefix = $1 AND k.revoked_at IS NULL",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    let Some((key_id, tenant_id, tenant_slug, role, stored, max_jobs)) = row else {
        return Ok(None);
    };
    if !constant_time_eq(&stored, &hash_key(presented)) {
        return Ok(None);
    }
    Ok(Some(Principal {
        key_id,
        tenant_id,
        tenant_slug,
        role: role.parse().map_err(anyhow::Error::msg)?,
        max_concurrent_jobs: max_jobs,
    }))
}

/// Keys that checked out recently, so a busy client does not cost a database query per
/// request. An entry lives `ttl`: a revoked key or a changed tenant limit takes effect
/// within that time. Only successful checks are kept, under the key's SHA-256 (the key
/// itself is never held).
#[derive(Debug, Clone)]
pub struct KeyCache {
    entries: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, CachedKey>>>,
    ttl: std::time::Duration,
}

#[derive(Debug, Clone)]
struct CachedKey {
    checked: std::time::Instant,
    principal: Principal,
}

/// Entries kept at most; past this the cache starts over (keys are few in practice).
const KEY_CACHE_LIMIT: usize = 10_000;

impl KeyCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            entries: Default::default(),
            ttl,
        }
    }

    /// [`authenticate`], answered from the cache while the entry is fresh.
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        presented: &str,
    ) -> anyhow::Result<Option<Principal>> {
        let hash = hash_key(presented);
        if let Some(hit) = self.entries.lock().expect("key cache").get(&hash) {
            if hit.checked.elapsed() < self.ttl {
                return Ok(Some(hit.principal.clone()));
            }
        }
        let principal = authenticate(pool, presented).await?;
        let mut entries = self.entries.lock().expect("key cache");
        match &principal {
            Some(p) => {
                if entries.len() >= KEY_CACHE_LIMIT {
                    entries.clear();
                }
                entries.insert(
                    hash,
                    CachedKey {
                        checked: std::time::Instant::now(),
                        principal: p.clone(),
                    },
                );
            }
            None => {
                entries.remove(&hash);
            }
        }
        Ok(principal)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(valid_slug("acme-books"));
        assert!(valid_slug("a1"));
        assert!(!valid_slug("Acme"));
        assert!(!valid_slug("-x"));
        assert!(!valid_slug(""));
        assert!(!valid_slug("a b"));
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
