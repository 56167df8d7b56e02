//! The layer every route passes through: who is asking and for which tenant.
//!
//! Without API keys (`tenants.keys` empty) the tenant is the one the configured header names,
//! or the default tenant, and every route is open. With keys, every route but health needs
//! `Authorization: Bearer <key>` (gRPC: the same metadata): the key is hashed with SHA-256 and
//! compared in constant time with every configured hash; its tenant is the request's tenant
//! (a tenant header, when sent, must name that tenant), and the route's scope must be among
//! the key's: `write` for OTLP and events, `read` for SQL, `admin` for the batch monitor
//! and `/metrics`. No key or an unknown key: 401 / `UNAUTHENTICATED`; another tenant's
//! key or a key without the scope: 403 / `PERMISSION_DENIED`. The keys are read again from
//! the configuration file on SIGHUP.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wit_batch::Tenant;

use super::config::{Config, Scope};
use super::limits::Throttled;
use super::receivers::{Encoding, status_response};
use super::server::App;

/// The tenant a request acts for, set by [`layer`].
#[derive(Debug, Clone)]
pub(crate) struct RequestTenant(pub(crate) Tenant);

/// The configured API keys, checked.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    keys: Vec<Key>,
}

#[derive(Debug)]
struct Key {
    hash: [u8; 32],
    tenant: Tenant,
    scopes: Vec<Scope>,
}

impl Keys {
    /// The keys of `config`; an error names the entry (`tenants.keys[i]`) and what is wrong.
    pub(crate) fn of(config: &Config) -> Result<Keys, String> {
        let mut keys = Vec::with_capacity(config.tenants.keys.len());
        for (i, entry) in config.tenants.keys.iter().enumerate() {
            let at = format!("tenants.keys[{i}]");
            let tenant = Tenant::try_new(&entry.tenant).map_err(|e| format!("{at}.tenant `{}`: {e}", entry.tenant))?;
            let mut hash = [0u8; 32];
            hex::decode_to_slice(entry.sha256.trim(), &mut hash)
                .map_err(|e| format!("{at}.sha256: not 64 hexadecimal digits ({e}); `wit keys hash` prints one"))?;
            if entry.scopes.is_empty() {
                return Err(format!("{at}.scopes: empty (write, read, admin)"));
            }
            if keys.iter().any(|k: &Key| k.hash == hash) {
                return Err(format!("{at}.sha256: the same key is configured twice"));
            }
            keys.push(Key {
                hash,
                tenant,
                scopes: entry.scopes.clone(),
            });
        }
        Ok(Keys { keys })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key whose hash is `presented`'s; every configured hash is compared, in constant
    /// time, whatever matches.
    fn find(&self, presented: &str) -> Option<&Key> {
        let digest = Sha256::digest(presented.as_bytes());
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.as_slice().ct_eq(digest.as_slice())) {
                found = Some(key);
            }
        }
        found
    }
}

/// Why a request may not go on.
#[derive(Debug)]
pub(crate) enum Denied {
    /// The tenant header names no valid tenant (400 / `INVALID_ARGUMENT`).
    BadTenant(String),
    /// No key, or a key no one configured (401 / `UNAUTHENTICATED`).
    Unauthenticated(String),
    /// Another tenant's key, or a key without the route's scope (403 / `PERMISSION_DENIED`).
    Forbidden(String),
    /// The tenant is over its requests per second (429 / `RESOURCE_EXHAUSTED`).
    Throttled(Throttled),
}

impl Denied {
    /// The answer on HTTP, a `google.rpc.Status` in the request's encoding.
    pub(crate) fn into_response(self, encoding: Encoding) -> Response {
        match self {
            Denied::BadTenant(m) => status_response(StatusCode::BAD_REQUEST, 3, m, encoding, None),
            Denied::Unauthenticated(m) => {
                let mut response = status_response(StatusCode::UNAUTHORIZED, 16, m, encoding, None);
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Denied::Forbidden(m) => status_response(StatusCode::FORBIDDEN, 7, m, encoding, None),
            Denied::Throttled(t) => {
                let seconds = t.retry_after_seconds();
                status_response(StatusCode::TOO_MANY_REQUESTS, 8, t.message, encoding, Some(seconds))
            }
        }
    }
}

/// The tenant a request with `headers` (HTTP headers or gRPC metadata) acts for, if it may
/// use a route of `scope` and is within its requests per second.
pub(crate) fn authorize(app: &App, headers: &HeaderMap, scope: Scope) -> Result<Tenant, Denied> {
    let tenant = identify(app, headers, scope)?;
    if let Err(throttled) = app.limits.request(&tenant) {
        super::receivers::count_tenant(tenant.as_str().to_owned(), "throttled", 0);
        return Err(Denied::Throttled(throttled));
    }
    Ok(tenant)
}

fn identify(app: &App, headers: &HeaderMap, scope: Scope) -> Result<Tenant, Denied> {
    let keys = app.keys();
    if keys.len() == 0 {
        return resolve(app, headers).map_err(Denied::BadTenant);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Denied::Unauthenticated("no API key: send `Authorization: Bearer <key>`".into()))?;
    let key = keys
        .find(presented)
        .ok_or_else(|| Denied::Unauthenticated("unknown API key".into()))?;
    if let Some(name) = &app.config.tenants.header
        && let Some(value) = headers.get(name.as_str())
        && value.as_bytes() != key.tenant.as_str().as_bytes()
    {
        return Err(Denied::Forbidden(format!(
            "the API key is not tenant `{}`'s (header `{name}`)",
            value.to_str().unwrap_or("?")
        )));
    }
    if !key.scopes.contains(&scope) {
        return Err(Denied::Forbidden(format!(
            "the API key has no `{}` scope",
            scope.name()
        )));
    }
    Ok(key.tenant.clone())
}

/// What the layer of a group of routes checks: the app, and the scope the routes need.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) app: Arc<App>,
    pub(crate) scope: Scope,
}

/// Authorizes the request for its routes' scope and hands it on with its tenant.
pub(crate) async fn layer(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    match authorize(&guard.app, request.headers(), guard.scope) {
        Ok(tenant) => {
            request.extensions_mut().insert(RequestTenant(tenant));
            next.run(request).await.into_response()
        }
        Err(denied) => denied.into_response(Encoding::of(request.headers())),
    }
}

/// The tenant of a request without keys: the header's, or the default tenant.
fn resolve(app: &App, headers: &HeaderMap) -> Result<Tenant, String> {
    let Some(header) = &app.config.tenants.header else {
        return Ok(app.default_tenant.clone());
    };
    match headers.get(header.as_str()) {
        None => Ok(app.default_tenant.clone()),
        Some(value) => {
            let name = value
                .to_str()
                .map_err(|_| format!("header `{header}` is not visible ASCII"))?;
            Tenant::try_new(name).map_err(|e| format!("header `{header}`: {e}"))
        }
    }
}

/// A new random key (256 bits, hex, prefixed `wit_`) and the SHA-256 (hex) to configure.
pub(crate) fn new_key() -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes from the system: {e}"))?;
    let key = format!("wit_{}", hex::encode(bytes));
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    Ok((key, hash))
}
