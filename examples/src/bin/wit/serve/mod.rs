//! `wit serve`: the whole system as one server.
//!
//! - `config.rs`: the YAML configuration and its defaults.
//! - `server.rs`: startup (recovery before readiness), the listeners, graceful shutdown.
//! - `access.rs`: the layer every route passes through (API keys, scopes, the request's
//!   tenant); `limits.rs`: per-tenant rate limits.
//! - `schemas.rs`: JSON Schema per event stream.
//! - `receivers/`: OTLP/HTTP and gRPC, NDJSON events, and what they share (idempotency keys,
//!   partial success and dead letters, the error answers).
//! - `api/`: SQL over HTTP and health, on the API port.

mod access;
mod api;
mod config;
mod kafka;
mod limits;
mod receivers;
mod schemas;
mod server;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use axum::Router;
use config::Config;

use super::{CmdResult, Failure, print_usage};

pub(super) const SERVE_USAGE: &str = "\
Usage:
    wit serve [--config FILE] [--data DIR] [--otlp-http ADDR] [--otlp-grpc ADDR] [--api ADDR]
              [--log-format text|json] [--check]

Run `wit serve --help` for details.
";

pub(super) const SERVE_HELP: &str = "\
wit serve: receive OTLP over HTTP, store it durably, answer SQL over it

Usage:
    wit serve [--config FILE] [--data DIR] [--otlp-http ADDR] [--otlp-grpc ADDR] [--api ADDR]
              [--log-format text|json] [--check]

Without a configuration file the embedded defaults run: WAL, SQLite tracker and Parquet
files under ./data, OTLP/HTTP on 127.0.0.1:4318, the API (SQL, health) on 127.0.0.1:8083.
examples/wit.yaml documents every key of the file; ${NAME} in it is replaced by the
environment variable NAME. Flags override the file.

    --config FILE          the YAML configuration
    --data DIR             data_dir: WAL, tracker and files
    --otlp-http ADDR       listen.otlp_http (host:port)
    --otlp-grpc ADDR       listen.otlp_grpc (host:port)
    --api ADDR             listen.api (host:port)
    --log-format FORMAT    text (default) or json, one object per line; WIT_LOG filters
                           (default: info)
    --check                check the configuration, print the effective one, and exit

Routes: POST /v1/traces, /v1/logs, /v1/metrics (OTLP/HTTP, protobuf or JSON, gzip or not);
POST /api/v1/query (SQL as the body), /api/v1/page, /api/v1/tail; GET /health/live,
/health/ready. The tenant is the x-wit-tenant header's (tenants.header), or
tenants.default.

Stops on SIGTERM or Ctrl-C: stops accepting, finishes the requests in flight, stores what
was accepted and closes the WAL cleanly. Exit status: 0 after a clean stop; 1 when the
server failed; 2 for usage or configuration errors.

Example:
    wit serve &
    curl -s -H 'content-type: application/json' localhost:4318/v1/traces -d @span.json
    curl -s localhost:8083/api/v1/query -d 'SELECT name, duration FROM spans'
";

struct ServeArgs {
    config: Config,
    file: Option<PathBuf>,
    check: bool,
    json_logs: bool,
}

fn parse(args: &[OsString]) -> Result<Option<ServeArgs>, Failure> {
    let usage = |m: String| Failure::usage(m, SERVE_USAGE);
    let mut file = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let (mut check, mut json_logs) = (false, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let text = arg
            .to_str()
            .ok_or_else(|| usage(format!("argument `{}` is not UTF-8", arg.to_string_lossy())))?;
        let mut value = |name: &str| {
            it.next()
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match text {
            "-h" | "--help" => return Ok(None),
            "--config" => file = Some(PathBuf::from(value("--config")?)),
            "--check" => check = true,
            "--log-format" => match value("--log-format")?.as_str() {
                "text" => json_logs = false,
                "json" => json_logs = true,
                other => return Err(usage(format!("--log-format `{other}`: expected text or json"))),
            },
            "--data" | "--otlp-http" | "--otlp-grpc" | "--api" => overrides.push((text.to_string(), value(text)?)),
            other => return Err(usage(format!("unknown argument `{other}`"))),
        }
    }
    let config_error = |message: String| Failure {
        code: 2,
        message,
        usage: None,
    };
    let mut config = match &file {
        Some(path) => Config::load(path).map_err(|e| config_error(e.0))?,
        None => Config::default(),
    };
    for (flag, value) in overrides {
        let addr = || {
            value
                .parse()
                .map_err(|e| usage(format!("{flag} `{value}`: not host:port ({e})")))
        };
        match flag.as_str() {
            "--data" => config.data_dir = PathBuf::from(&value),
            "--otlp-http" => config.listen.otlp_http = addr()?,
            "--otlp-grpc" => config.listen.otlp_grpc = addr()?,
            _ => config.listen.api = addr()?,
        }
    }
    Ok(Some(ServeArgs {
        config,
        file,
        check,
        json_logs,
    }))
}

pub(super) fn run_serve(args: &[OsString]) -> CmdResult {
    let Some(args) = parse(args)? else {
        return print_usage(SERVE_HELP);
    };
    if args.check {
        println!("configuration ok:\n{:#?}", args.config);
        return Ok(ExitCode::SUCCESS);
    }
    init_logs(args.json_logs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wit-serve")
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;
    match runtime.block_on(server::run(args.config, args.file)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(message) => {
            tracing::error!(error = %message, "wit serve failed");
            Err(Failure::failed(message))
        }
    }
}

const KEYS_USAGE: &str = "\
Usage:
    wit keys hash

Prints a new random API key (give it to the client, as `Authorization: Bearer <key>`) and
its SHA-256, to put in `tenants.keys[].sha256` of the configuration. The key itself is
stored nowhere.
";

/// `wit keys hash`.
pub(super) fn run_keys(args: &[OsString]) -> CmdResult {
    match args.iter().map(|a| a.to_str()).collect::<Vec<_>>()[..] {
        [Some("-h" | "--help")] => print_usage(KEYS_USAGE),
        [Some("hash")] => {
            let (key, hash) = access::new_key().map_err(Failure::failed)?;
            println!("key:    {key}\nsha256: {hash}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(Failure::usage("expected `wit keys hash`", KEYS_USAGE)),
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match json {
        true => builder.json().init(),
        false => builder.init(),
    }
}

/// `routes` with CORS when `otlp.cors_allowed_origins` names origins (`*`: any).
pub(crate) fn cors<S: Clone + Send + Sync + 'static>(routes: Router<S>, config: &Config) -> Router<S> {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let origins = &config.otlp.cors_allowed_origins;
    if origins.is_empty() {
        return routes;
    }
    let allow = match origins.iter().any(|o| o == "*") {
        true => AllowOrigin::any(),
        false => AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok())),
    };
    routes.layer(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any),
    )
}
