//! The layer every route passes through: it names the request's tenant (from the configured
//! header, or the default tenant) and refuses an invalid name. API keys and per-tenant limits
//! take their place here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wit_batch::Tenant;

use super::server::App;

/// The tenant a request acts for, set by [`layer`].
#[derive(Debug, Clone)]
pub(crate) struct RequestTenant(pub(crate) Tenant);

/// Resolves the tenant and hands the request on with it; a tenant name wit-batch refuses is
/// a 400 naming the header.
pub(crate) async fn layer(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let tenant = match resolve(&app, request.headers()) {
        Ok(tenant) => tenant,
        Err(message) => {
            return super::receivers::status_response(
                axum::http::StatusCode::BAD_REQUEST,
                3,
                message,
                super::receivers::Encoding::of(request.headers()),
                None,
            );
        }
    };
    request.extensions_mut().insert(RequestTenant(tenant));
    next.run(request).await.into_response()
}

/// The tenant of a request with `headers` (HTTP headers or gRPC metadata).
pub(crate) fn resolve(app: &App, headers: &axum::http::HeaderMap) -> Result<Tenant, String> {
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
