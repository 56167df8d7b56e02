//! API keys: every route × {no key, unknown key, another tenant's key, a key without the
//! route's scope, the right key}, on HTTP and gRPC; a tenant's SQL never sees another's
//! rows; keys rotated by SIGHUP without a restart.

use tonic::Code;

use super::*;

/// A new key and its hash, from `wit keys hash`.
fn new_key() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wit"))
        .args(["keys", "hash"])
        .output()
        .expect("wit keys hash");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no `{name}` in {text}"))
    };
    let (key, hash) = (field("key:"), field("sha256:"));
    assert_eq!(hash.len(), 64, "{text}");
    (key, hash)
}

fn keys_yaml(keys: &[(&str, &str, &str)]) -> String {
    let mut yaml = String::from("tenants:\n  operator: ops\n  keys:\n");
    for (tenant, hash, scopes) in keys {
        yaml.push_str(&format!(
            "    - tenant: {tenant}\n      sha256: {hash}\n      scopes: [{scopes}]\n"
        ));
    }
    yaml
}

#[derive(Debug, Clone, Copy)]
enum Route {
    HttpTraces,
    Events,
    GrpcTraces,
    Query,
    Page,
    Tail,
    MonitorStatus,
    MonitorBatches,
    MonitorBatch,
    MonitorAlerts,
    Metrics,
}

impl Route {
    const ALL: [Route; 11] = [
        Route::HttpTraces,
        Route::Events,
        Route::GrpcTraces,
        Route::Query,
        Route::Page,
        Route::Tail,
        Route::MonitorStatus,
        Route::MonitorBatches,
        Route::MonitorBatch,
        Route::MonitorAlerts,
        Route::Metrics,
    ];

    fn scope(self) -> &'static str {
        match self {
            Route::HttpTraces | Route::Events | Route::GrpcTraces => "write",
            Route::Query | Route::Page | Route::Tail => "read",
            _ => "admin",
        }
    }
}

/// The answer to `route` with `key` (and the tenant header when given), as an HTTP status
/// (gRPC codes mapped: OK 200, UNAUTHENTICATED 401, PERMISSION_DENIED 403), with the body.
fn call(
    server: &Server,
    rt: &tokio::runtime::Runtime,
    route: Route,
    key: Option<&str>,
    tenant: Option<&str>,
) -> (u16, String) {
    if let Route::GrpcTraces = route {
        let mut request = tonic::Request::new(spans("grpc", 1));
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {key}").parse().expect("metadata"));
        }
        if let Some(tenant) = tenant {
            request
                .metadata_mut()
                .insert("x-wit-tenant", tenant.parse().expect("metadata"));
        }
        let answer = rt.block_on(async { server.trace_client().await.export(request).await });
        return match answer {
            Ok(_) => (200, String::new()),
            Err(status) => match status.code() {
                Code::Unauthenticated => (401, status.message().into()),
                Code::PermissionDenied => (403, status.message().into()),
                code => (600 + code as u16, status.message().into()),
            },
        };
    }
    let batch = "00000000-0000-7000-8000-000000000000";
    let (method, url, content_type, body): (&str, String, &str, Vec<u8>) = match route {
        Route::HttpTraces => (
            "POST",
            server.otlp_url("/v1/traces"),
            "application/x-protobuf",
            spans("http", 1).encode_to_vec(),
        ),
        Route::Events => (
            "POST",
            server.otlp_url("/v1/events/clicks"),
            "application/x-ndjson",
            b"{\"timestamp\": 1764547200000, \"n\": 1}".to_vec(),
        ),
        Route::Query => (
            "POST",
            server.api_url("/api/v1/query"),
            "text/plain",
            b"SELECT count(*) AS n FROM spans".to_vec(),
        ),
        Route::Page | Route::Tail => (
            "POST",
            server.api_url(if let Route::Page = route {
                "/api/v1/page"
            } else {
                "/api/v1/tail"
            }),
            "application/json",
            br#"{"table": "spans", "limit": 5}"#.to_vec(),
        ),
        Route::MonitorStatus => ("GET", server.api_url("/api/batch-monitor/status"), "", Vec::new()),
        Route::MonitorBatches => ("GET", server.api_url("/api/batch-monitor/batches"), "", Vec::new()),
        Route::MonitorBatch => (
            "GET",
            server.api_url(&format!("/api/batch-monitor/batches/{batch}")),
            "",
            Vec::new(),
        ),
        Route::MonitorAlerts => ("GET", server.api_url("/api/batch-monitor/alerts"), "", Vec::new()),
        Route::Metrics => ("GET", server.api_url("/metrics"), "", Vec::new()),
        Route::GrpcTraces => unreachable!("answered above"),
    };
    let mut headers = Vec::new();
    if let Some(key) = key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    if let Some(tenant) = tenant {
        headers.push(("x-wit-tenant", tenant.to_string()));
    }
    let mut response = if method == "POST" {
        let mut request = agent().post(&url).header("content-type", content_type);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        request.send(&body[..]).expect("post")
    } else {
        let mut request = agent().get(&url);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        request.call().expect("get")
    };
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut bytes).expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn every_route_needs_the_right_key_of_the_right_tenant_with_its_scope() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (writer, writer_hash) = new_key();
    let (reader, reader_hash) = new_key();
    let (admin, admin_hash) = new_key();
    let (globex, globex_hash) = new_key();
    let (ops, ops_hash) = new_key();
    let (unknown, _) = new_key();
    let server = Server::start(
        tmp.path(),
        &keys_yaml(&[
            ("acme", &writer_hash, "write"),
            ("acme", &reader_hash, "read"),
            ("acme", &admin_hash, "admin"),
            ("globex", &globex_hash, "write, read, admin"),
            ("ops", &ops_hash, "admin"),
        ]),
    );
    let rt = runtime();
    let right = |scope: &str| match scope {
        "write" => writer.as_str(),
        "read" => reader.as_str(),
        _ => admin.as_str(),
    };
    // A key of acme's without the scope.
    let wrong_scope = |scope: &str| match scope {
        "admin" => writer.as_str(),
        _ => admin.as_str(),
    };
    for route in Route::ALL {
        let scope = route.scope();
        let (status, body) = call(&server, &rt, route, None, None);
        assert_eq!(status, 401, "{route:?} without a key: {body}");
        let (status, body) = call(&server, &rt, route, Some(&unknown), None);
        assert_eq!(status, 401, "{route:?} with an unknown key: {body}");
        let (status, body) = call(&server, &rt, route, Some(&globex), Some("acme"));
        assert_eq!(status, 403, "{route:?} with another tenant's key: {body}");
        let (status, body) = call(&server, &rt, route, Some(wrong_scope(scope)), Some("acme"));
        assert_eq!(status, 403, "{route:?} with a key without `{scope}`: {body}");
        assert!(body.contains(scope), "{route:?}: the answer names the scope: {body}");
        // The right key, with or without the (matching) tenant header.
        let expected = if let Route::MonitorBatch = route { 404 } else { 200 };
        for tenant in [None, Some("acme")] {
            let (status, body) = call(&server, &rt, route, Some(right(scope)), tenant);
            assert_eq!(status, expected, "{route:?} with the right key ({tenant:?}): {body}");
        }
    }
    // Health stays open: probes carry no key.
    for path in ["/health/live", "/health/ready"] {
        assert_eq!(agent().get(&server.api_url(path)).call().expect("health").status(), 200);
    }
    // A 401 says how to authenticate.
    let response = agent().get(&server.api_url("/metrics")).call().expect("get");
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or("")),
        Some("Bearer")
    );

    // What acme wrote is acme's alone: globex's key reads none of it, acme's reads all of it
    // (two spans over HTTP, two over gRPC: each route was called with the right key twice).
    let sql = |key: &str| -> Value {
        let mut response = agent()
            .post(&server.api_url("/api/v1/query"))
            .header("authorization", format!("Bearer {key}"))
            .send("SELECT count(*) AS n FROM spans")
            .expect("query");
        let body = response.body_mut().read_to_string().expect("body");
        assert_eq!(response.status(), 200, "{body}");
        serde_json::from_str(&body).expect("json")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql(&reader)["rows"][0]["n"] != json!(4) {
        assert!(Instant::now() < deadline, "acme's spans: {}", sql(&reader));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        sql(&globex)["rows"][0]["n"],
        json!(0),
        "globex sees none of acme's spans"
    );

    // The batch monitor shows each tenant its own batches only.
    let (status, body) = call(&server, &rt, Route::HttpTraces, Some(&globex), None);
    assert_eq!(status, 200, "{body}");
    let batches = |tenant: &str| -> Vec<String> {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); \
                 print(' '.join(r[0] for r in db.execute('SELECT batch_id FROM batch_tracker WHERE client_id = ?', (sys.argv[2],))))",
            ])
            .arg(server.dir.join("data").join("tracker.db"))
            .arg(tenant)
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // (A batch is registered as the processor reads it from the WAL.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let (theirs, ours) = loop {
        let (theirs, ours) = (batches("globex"), batches("acme"));
        if !theirs.is_empty() && !ours.is_empty() {
            break (theirs, ours);
        }
        assert!(Instant::now() < deadline, "{theirs:?} {ours:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let get = |path: &str, key: &str| -> (u16, Value) {
        let mut response = agent()
            .get(&server.api_url(path))
            .header("authorization", format!("Bearer {key}"))
            .call()
            .expect("get");
        let body = response.body_mut().read_to_string().expect("body");
        (
            response.status().as_u16(),
            serde_json::from_str(&body).unwrap_or(Value::Null),
        )
    };
    let one = |id: &str| format!("/api/batch-monitor/batches/{id}");
    assert_eq!(
        get(&one(&theirs[0]), &admin).0,
        404,
        "another tenant's batch is not found"
    );
    assert_eq!(get(&one(&ours[0]), &admin).0, 200);
    assert_eq!(get(&one(&theirs[0]), &globex).0, 200);
    assert_eq!(get(&one(&ours[0]), &globex).0, 404);
    for (key, tenant, n) in [(&admin, "acme", ours.len()), (&globex, "globex", theirs.len())] {
        let (status, overview) = get("/api/batch-monitor/status", key);
        assert_eq!(status, 200, "{overview}");
        assert_eq!(overview["total"], json!(n), "{tenant}: {overview}");
        let seen: Vec<&str> = overview["throughput"]
            .as_array()
            .expect("throughput")
            .iter()
            .filter_map(|t| t["tenant"].as_str())
            .collect();
        assert_eq!(seen, [tenant], "{overview}");
    }
    // The operator tenant's admin key sees every tenant's batches.
    let (status, overview) = get("/api/batch-monitor/status", &ops);
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["total"], json!(ours.len() + theirs.len()), "{overview}");
    assert_eq!(get(&one(&theirs[0]), &ops).0, 200);

    // /metrics likewise: a tenant's admin key gets its own tenant's series (and the
    // server's), never another tenant's; the operator's gets every tenant's.
    let metrics = |key: &str| -> String {
        let mut response = agent()
            .get(&server.api_url("/metrics"))
            .header("authorization", format!("Bearer {key}"))
            .call()
            .expect("metrics");
        response.body_mut().read_to_string().expect("body")
    };
    let acme_view = metrics(&admin);
    assert!(
        acme_view.contains("tenant=\"acme\"") && !acme_view.contains("tenant=\"globex\""),
        "{acme_view}"
    );
    assert!(
        acme_view.contains("wit_ready"),
        "the server's own series stay: {acme_view}"
    );
    let globex_view = metrics(&globex);
    assert!(
        globex_view.contains("tenant=\"globex\"") && !globex_view.contains("tenant=\"acme\""),
        "{globex_view}"
    );
    let ops_view = metrics(&ops);
    assert!(
        ops_view.contains("tenant=\"acme\"") && ops_view.contains("tenant=\"globex\""),
        "{ops_view}"
    );
}

#[test]
fn keys_are_rotated_on_sighup_without_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, old_hash) = new_key();
    let (new, new_hash) = new_key();
    let mut server = Server::start(tmp.path(), &keys_yaml(&[("acme", &old_hash, "read")]));
    let rt = runtime();
    assert_eq!(call(&server, &rt, Route::Query, Some(&old), None).0, 200);
    assert_eq!(call(&server, &rt, Route::Query, Some(&new), None).0, 401);

    let rewrite = |keys: &str| {
        let text = std::fs::read_to_string(&server.config).expect("config");
        let base = &text[..text.find("tenants:").expect("keys section")];
        std::fs::write(&server.config, format!("{base}{keys}")).expect("config");
    };
    let hangup = |server: &Server| {
        let pid = server.child.as_ref().expect("running").id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .expect("kill")
                .success()
        );
    };
    // The new key replaces the old one.
    rewrite(&keys_yaml(&[("acme", &new_hash, "read")]));
    hangup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&server, &rt, Route::Query, Some(&new), None).0 != 200 {
        assert!(Instant::now() < deadline, "the new key is not taken: {}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        call(&server, &rt, Route::Query, Some(&old), None).0,
        401,
        "the old key is gone"
    );

    // A broken file changes nothing: the keys stay as they were, and the server says why.
    rewrite("tenants:\n  keys:\n    - tenant: acme\n      sha256: not-hex\n      scopes: [read]\n");
    hangup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("keys not reloaded") {
        assert!(Instant::now() < deadline, "no reload error logged: {}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.log().contains("tenants.keys[0].sha256"), "{}", server.log());
    assert_eq!(call(&server, &rt, Route::Query, Some(&new), None).0, 200);
    // The reloads hold nothing that keeps the pipeline from closing cleanly.
    assert_eq!(server.stop(), Some(0));
    assert!(server.log().contains("stopped cleanly"), "{}", server.log());
}
