//! SQL over HTTP, scoped to the request's tenant.
//!
//! `POST /api/v1/query` takes the SQL as the body (`text/plain` or any type) or as
//! `{"sql": "..."}` (`application/json`). The answer is JSON
//! (`{"columns": [...], "rows": [{...}], "row_count": n}`), or an Arrow IPC stream when
//! `Accept` is `application/vnd.apache.arrow.stream`. `POST /api/v1/page` and `/api/v1/tail`
//! take `{"table", "limit", "from", "to", "filter", "cursor"}` and answer the rows with
//! `next_cursor`, as wit-query's pages (newest first) and tail (oldest first after the cursor).
//! A query error is a 400 whose `error` names the position; a failed execution a 500.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use wit_batch::Signal;
use wit_query::{Cursor, PageRequest, QueryResult};

use crate::serve::access::RequestTenant;
use crate::serve::server::App;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

fn query_error(e: wit_query::Error) -> Response {
    use wit_query::Error as E;
    let status = match &e {
        E::Syntax { .. } | E::NotAllowed { .. } | E::Plan { .. } | E::Search { .. } | E::InvalidRequest { .. } => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    error(status, message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

pub(super) async fn sql(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(core) = app.core() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is recovering".into());
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let sql = if json {
        match serde_json::from_slice::<SqlBody>(&body) {
            Ok(b) => b.sql,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"sql\": \"...\"}}: {e}"),
                );
            }
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(s) => s,
            Err(_) => return error(StatusCode::BAD_REQUEST, "the SQL is not UTF-8".into()),
        }
    };
    let session = core.engine.session(&tenant);
    match session.sql(&sql).await {
        Ok(result) => answer(&app, &headers, result, None),
        Err(e) => query_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageBody {
    table: String,
    limit: Option<usize>,
    from: Option<i64>,
    to: Option<i64>,
    filter: Option<String>,
    cursor: Option<String>,
}

impl PageBody {
    fn request(&self, max_rows: usize) -> Result<PageRequest, wit_query::Error> {
        let signal = match self.table.as_str() {
            "spans" => Signal::Traces,
            "logs" => Signal::Logs,
            "metrics" => Signal::Metrics,
            other => {
                return Err(wit_query::Error::InvalidRequest {
                    reason: format!("table `{other}`: pages are over spans, logs or metrics"),
                });
            }
        };
        let cursor = match &self.cursor {
            None => None,
            Some(token) => Some(token.parse::<Cursor>()?),
        };
        let limit = self.limit.unwrap_or(100).min(max_rows);
        let mut request = PageRequest::new(signal, limit)
            .with_range(self.from, self.to)
            .after(cursor);
        if let Some(filter) = &self.filter {
            request = request.with_filter(filter);
        }
        Ok(request)
    }
}

pub(super) async fn page(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
    headers: HeaderMap,
    Json(body): Json<PageBody>,
) -> Response {
    lookup(app, tenant, headers, body, false).await
}

pub(super) async fn tail(
    State(app): State<Arc<App>>,
    Extension(RequestTenant(tenant)): Extension<RequestTenant>,
    headers: HeaderMap,
    Json(body): Json<PageBody>,
) -> Response {
    lookup(app, tenant, headers, body, true).await
}

async fn lookup(app: Arc<App>, tenant: wit_batch::Tenant, headers: HeaderMap, body: PageBody, tail: bool) -> Response {
    let Some(core) = app.core() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is recovering".into());
    };
    let request = match body.request(app.config.query.max_rows) {
        Ok(r) => r,
        Err(e) => return query_error(e),
    };
    let session = core.engine.session(&tenant);
    let page = match tail {
        false => session.page(&request).await,
        true => session.tail(&request).await,
    };
    match page {
        Ok(page) => answer(&app, &headers, page.rows, Some(page.next.map(|c| c.token()))),
        Err(e) => query_error(e),
    }
}

/// The result as JSON rows (at most `query.max_rows`) or as an Arrow IPC stream.
fn answer(app: &App, headers: &HeaderMap, result: QueryResult, next: Option<Option<String>>) -> Response {
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    if arrow {
        let mut out = Vec::new();
        let written = (|| {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, result.schema())?;
            for batch in result.batches() {
                writer.write(batch)?;
            }
            writer.finish()
        })();
        if let Err(e) = written {
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("Arrow IPC: {e}"));
        }
        let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, ARROW_STREAM)], out).into_response();
        if let Some(Some(token)) = next
            && let Ok(value) = token.parse()
        {
            response.headers_mut().insert("x-wit-next-cursor", value);
        }
        return response;
    }
    let max = app.config.query.max_rows;
    if result.num_rows() > max {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the result has {} rows, more than the {max} a JSON answer holds: add a LIMIT, page with /api/v1/page, or ask for Arrow",
                result.num_rows()
            ),
        );
    }
    let columns: Vec<String> = result.schema().fields().iter().map(|f| f.name().clone()).collect();
    let rows = match result.to_json_rows() {
        Ok(rows) => rows,
        Err(e) => return query_error(e),
    };
    let mut body = serde_json::json!({"columns": columns, "row_count": rows.len(), "rows": rows});
    if let Some(next) = next {
        body["next_cursor"] = next.map_or(serde_json::Value::Null, serde_json::Value::from);
    }
    (StatusCode::OK, Json(body)).into_response()
}
