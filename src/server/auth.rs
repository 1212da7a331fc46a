//! API keys: `Authorization: Bearer <key>`, compared in constant time. Keys may carry a name
//! (for metrics and the audit log), a list of models they may use, and quotas (see
//! `quota`; keys sharing a name share one quota). A key is never logged.

use super::audit::{AuditRecord, rfc3339};
use super::error::ApiError;
use super::quota::{KeyLimits, KeyQuota};
use super::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The name used in metrics and the audit log when the API is open.
pub const ANONYMOUS: &str = "anonymous";

pub struct ApiKey {
    pub name: Arc<str>,
    key: Vec<u8>,
    /// Models this key may use; `None` means all.
    pub models: Option<Arc<[String]>>,
    /// Whether requests with this key may set `priority` (and so pass other keys' queues).
    pub allow_priority: bool,
    /// The key's quotas; `None` when it has no limits.
    pub quota: Option<Arc<KeyQuota>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("models", &self.models)
            .field("allow_priority", &self.allow_priority)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct Auth {
    keys: Vec<ApiKey>,
}

#[derive(Debug, Deserialize)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

/// One `[[keys]]` entry. Unknown fields are an error: a misspelt limit must not leave a key
/// silently unlimited.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    key: String,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    allow_priority: bool,
    #[serde(default)]
    requests_per_minute: Option<u64>,
    #[serde(default)]
    tokens_per_minute: Option<u64>,
    #[serde(default)]
    max_concurrent_requests: Option<u64>,
    #[serde(default)]
    daily_token_budget: Option<u64>,
}

impl KeyEntry {
    fn limits(&self) -> KeyLimits {
        KeyLimits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            max_concurrent_requests: self.max_concurrent_requests,
            daily_token_budget: self.daily_token_budget,
        }
    }
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read keys file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("keys file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("API keys: {0}")]
    Invalid(String),
}

/// Who is calling: put into each authenticated request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_name: Arc<str>,
    pub models: Option<Arc<[String]>>,
    pub client_addr: Option<SocketAddr>,
    /// May set a non-zero `priority` (keys with `allow_priority = true`; everyone when the
    /// API is open, as there are no tenants to protect from each other).
    pub allow_priority: bool,
    /// The key's quotas, when it has any.
    pub quota: Option<Arc<KeyQuota>>,
}

impl Caller {
    pub fn may_use(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }
}

impl Auth {
    /// Keys from `--api-key` (named `key-1`, `key-2`, … in the order given) and the keys file.
    pub fn new(plain: &[String], file: Option<&Path>) -> Result<Self, KeysError> {
        let mut keys = Vec::new();
        for (i, k) in plain.iter().map(|k| k.trim()).enumerate() {
            if k.is_empty() {
                continue;
            }
            keys.push(ApiKey {
                name: format!("key-{}", i + 1).into(),
                key: k.as_bytes().to_vec(),
                models: None,
                allow_priority: false,
                quota: None,
            });
        }
        if let Some(path) = file {
            let now = super::quota::system_now();
            let mut quotas: Vec<Arc<KeyQuota>> = Vec::new();
            let mut seen: Vec<(String, KeyLimits)> = Vec::new();
            for e in read_keys_file(path)? {
                if e.key.trim().is_empty() {
                    return Err(KeysError::Invalid(format!("key `{}` is empty", e.name)));
                }
                let limits = e.limits();
                limits
                    .validate()
                    .map_err(|m| KeysError::Invalid(format!("key `{}`: {m}", e.name)))?;
                if let Some((_, l)) = seen.iter().find(|(n, _)| *n == e.name)
                    && *l != limits
                {
                    return Err(KeysError::Invalid(format!(
                        "keys named `{}` have different limits (keys sharing a name share one quota)",
                        e.name
                    )));
                }
                seen.push((e.name.clone(), limits));
                let quota = match quotas.iter().find(|q| **q.name() == *e.name) {
                    Some(q) => Some(q.clone()),
                    None if limits.is_unlimited() => None,
                    None => {
                        let q = Arc::new(KeyQuota::new(e.name.as_str().into(), limits, now));
                        quotas.push(q.clone());
                        Some(q)
                    }
                };
                keys.push(ApiKey {
                    name: e.name.into(),
                    key: e.key.trim().as_bytes().to_vec(),
                    models: e.models.map(Into::into),
                    allow_priority: e.allow_priority,
                    quota,
                });
            }
        }
        for (i, a) in keys.iter().enumerate() {
            if keys[..i].iter().any(|b| bool::from(a.key.ct_eq(&b.key))) {
                return Err(KeysError::Invalid(format!(
                    "key `{}` duplicates another key",
                    a.name
                )));
            }
        }
        Ok(Self { keys })
    }

    /// Every distinct quota (one per key name with limits).
    pub fn quotas(&self) -> Vec<Arc<KeyQuota>> {
        let mut out: Vec<Arc<KeyQuota>> = Vec::new();
        for q in self.keys.iter().filter_map(|k| k.quota.as_ref()) {
            if !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                out.push(q.clone());
            }
        }
        out
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key equal to `presented`. Every key is compared, each in constant time.
    pub fn check(&self, presented: &[u8]) -> Option<&ApiKey> {
        let mut found = None;
        for k in &self.keys {
            let eq: bool = k.key.ct_eq(presented).into();
            if eq && found.is_none() {
                found = Some(k);
            }
        }
        found
    }
}

fn read_keys_file(path: &Path) -> Result<Vec<KeyEntry>, KeysError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeysError::Read {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let parsed: KeysFile = if is_json {
        serde_json::from_str(&text).map_err(|e| KeysError::Parse {
            path: p.clone(),
            reason: e.to_string(),
        })?
    } else {
        toml::from_str(&text).map_err(|e| KeysError::Parse {
            path: p.clone(),
            reason: e.message().to_string(),
        })?
    };
    Ok(parsed.keys)
}

fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let prefix = b"bearer ";
    if v.len() > prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(v[prefix.len()..].trim_ascii())
    } else {
        None
    }
}

/// Middleware on the API routes: checks the key (when keys are set) and records the caller.
pub async fn require_key(
    State(st): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let client_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let caller = if st.auth.enabled() {
        match bearer(&req).and_then(|k| st.auth.check(k)) {
            Some(k) => Caller {
                key_name: k.name.clone(),
                models: k.models.clone(),
                client_addr,
                allow_priority: k.allow_priority,
                quota: k.quota.clone(),
            },
            None => {
                st.metrics.count_rejected("401");
                audit_rejected(&st, &req, client_addr, None, 401);
                tracing::info!(path = %req.uri().path(), client = ?client_addr, "rejected: bad or missing API key");
                return ApiError::Unauthorized.into_response();
            }
        }
    } else {
        Caller {
            key_name: ANONYMOUS.into(),
            models: None,
            client_addr,
            allow_priority: true,
            quota: None,
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// A request refused before any handler ran (failed authentication — without the key
/// presented — or a key over its quota) is part of the audit trail.
pub(super) fn audit_rejected(
    st: &AppState,
    req: &Request,
    client_addr: Option<SocketAddr>,
    key_name: Option<&str>,
    status: u16,
) {
    let Some(audit) = &st.audit else {
        return;
    };
    let forwarded_for = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(super::audit::capped);
    audit.write(&AuditRecord {
        time: rfc3339(std::time::SystemTime::now()),
        request_id: &super::new_id(if status == 401 {
            "unauthorized"
        } else {
            "refused"
        }),
        endpoint: super::audit::capped(req.uri().path()),
        key_name,
        model: None,
        client_addr: client_addr.map(|a| a.to_string()),
        forwarded_for,
        user: None,
        stream: false,
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: 0,
        finish_reason: "error",
        status,
        latency_ms: 0.0,
        prompt: None,
        completion: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_are_named_by_position() {
        let a = Auth::new(&["k1".into(), "k2".into()], None).unwrap();
        assert_eq!(&*a.check(b"k2").unwrap().name, "key-2");
        assert!(a.check(b"k3").is_none());
        assert!(a.check(b"k").is_none());
        assert!(a.check(b"").is_none());
    }

    #[test]
    fn toml_and_json_files() {
        let dir = std::env::temp_dir().join(format!("indus-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = dir.join("keys.toml");
        std::fs::write(
            &t,
            "[[keys]]\nname = \"team-a\"\nkey = \"sk-a\"\nmodels = [\"m\"]\n\n[[keys]]\nname = \"team-b\"\nkey = \"sk-b\"\n",
        )
        .unwrap();
        let a = Auth::new(&[], Some(&t)).unwrap();
        let k = a.check(b"sk-a").unwrap();
        assert_eq!(&*k.name, "team-a");
        assert_eq!(k.models.as_deref(), Some(&["m".to_string()][..]));
        assert!(a.check(b"sk-b").unwrap().models.is_none());
        assert!(!k.allow_priority);
        let j = dir.join("keys.json");
        std::fs::write(&j, r#"{"keys":[{"name":"j","key":"sk-j"}]}"#).unwrap();
        assert_eq!(
            &*Auth::new(&[], Some(&j))
                .unwrap()
                .check(b"sk-j")
                .unwrap()
                .name,
            "j"
        );
        std::fs::write(
            &j,
            r#"{"keys":[{"name":"j","key":"x"},{"name":"k","key":"x"}]}"#,
        )
        .unwrap();
        assert!(Auth::new(&[], Some(&j)).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn quota_fields() {
        let dir = std::env::temp_dir().join(format!("indus-keys-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = dir.join("keys.toml");
        let write = |text: &str| std::fs::write(&t, text).unwrap();
        write(
            "[[keys]]\nname = \"a\"\nkey = \"sk-a\"\nrequests_per_minute = 10\ndaily_token_budget = 500\n\n[[keys]]\nname = \"a\"\nkey = \"sk-a2\"\nrequests_per_minute = 10\ndaily_token_budget = 500\n\n[[keys]]\nname = \"b\"\nkey = \"sk-b\"\n",
        );
        let a = Auth::new(&[], Some(&t)).unwrap();
        let qa = a.check(b"sk-a").unwrap().quota.clone().unwrap();
        assert_eq!(qa.limits().requests_per_minute, Some(10));
        assert_eq!(qa.limits().tokens_per_minute, None);
        // Two keys of one name share a quota; a key without limits has none.
        assert!(Arc::ptr_eq(
            &qa,
            a.check(b"sk-a2").unwrap().quota.as_ref().unwrap()
        ));
        assert!(a.check(b"sk-b").unwrap().quota.is_none());
        assert_eq!(a.quotas().len(), 1);
        // A misspelt limit is an error, not an unlimited key.
        write("[[keys]]\nname = \"a\"\nkey = \"sk-a\"\nrequest_per_minute = 10\n");
        let e = Auth::new(&[], Some(&t)).unwrap_err().to_string();
        assert!(e.contains("request_per_minute"), "{e}");
        write(
            "[[keys]]\nname = \"a\"\nkey = \"sk-a\"\n\n[[keys]]\nname = \"a\"\nkey = \"sk-b\"\nmax_concurrent_requests = 1\n",
        );
        assert!(Auth::new(&[], Some(&t)).is_err());
        write("[[keys]]\nname = \"a\"\nkey = \"sk-a\"\ntokens_per_minute = 0\n");
        assert!(Auth::new(&[], Some(&t)).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let a = Auth::new(&["secret-value".into()], None).unwrap();
        assert!(!format!("{a:?}").contains("secret-value"));
    }
}
