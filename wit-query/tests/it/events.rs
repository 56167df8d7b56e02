//! The `events` table: the union of the tenant's event files' columns (and its hot
//! batches'), NULL where a file lacks a column.

use wit_batch::events::{self, EventOptions};
use wit_batch::{BatchId, Signal, Tenant};
use wit_query::{Error, HotTier, QueryConfig, QueryEngine};

use crate::{Store, acme, scalar, sql};

fn decode(payload: &str) -> arrow::array::RecordBatch {
    events::decode(payload.as_bytes(), None, &EventOptions::default()).expect("events")
}

#[test]
fn events_of_several_schemas_read_as_one_table() {
    let store = Store::new();
    let checkout = decode(
        r#"{"timestamp": "2025-12-01T10:00:00Z", "level": "info", "latency_ms": 12.5}
{"timestamp": "2025-12-01T10:00:01Z", "level": "error", "latency_ms": 950.0, "message": "card declined"}
"#,
    );
    let signup = decode(
        r#"{"timestamp": "2025-12-01T11:00:00Z", "level": "info", "user": {"id": "u-1", "plan": "pro"}}
{"timestamp": "2025-12-01T11:00:02Z", "level": "warn", "user": {"id": "u-2", "plan": "free"}, "message": "slow signup"}
{"timestamp": "2025-12-01T11:00:03Z", "level": "error", "user": {"id": "u-3", "plan": "free"}}
"#,
    );
    store.write(&acme(), Signal::Events, &[checkout]);
    store.write(&acme(), Signal::Events, &[signup]);
    // Another tenant's events are not seen, nor are their columns.
    let globex = Tenant::try_new("globex").expect("tenant");
    store.write(
        &globex,
        Signal::Events,
        &[decode(r#"{"timestamp": "2025-12-01T10:00:00Z", "secret": "x"}"#)],
    );
    // A batch acknowledged but not yet stored, with a column of its own.
    let hot = HotTier::new(1 << 20);
    hot.insert(
        &acme(),
        Signal::Events,
        BatchId::new(),
        decode(r#"{"timestamp": "2025-12-01T12:00:00Z", "level": "error", "region": "eu"}"#),
    );
    let engine = QueryEngine::with_config(
        store.catalog.clone(),
        &store.destination,
        QueryConfig::default().with_hot_tier(hot),
    )
    .expect("engine");
    let session = engine.session(&acme());
    assert_eq!(scalar(&session, "SELECT count(*) FROM events"), 6);
    let levels = sql(
        &session,
        "SELECT level, count(*) AS n FROM events GROUP BY level ORDER BY level",
    )
    .to_json_rows()
    .expect("json");
    let levels: Vec<(String, u64)> = levels
        .iter()
        .map(|r| {
            (
                r["level"].as_str().expect("level").to_string(),
                r["n"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("error".to_string(), 3),
            ("info".to_string(), 2),
            ("warn".to_string(), 1)
        ]
    );
    // Columns a file lacks are NULL there.
    assert_eq!(scalar(&session, "SELECT count(latency_ms) FROM events"), 2);
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM events WHERE user['plan'] = 'free'"),
        2
    );
    assert_eq!(
        scalar(&session, "SELECT region FROM events WHERE region IS NOT NULL"),
        "eu"
    );
    assert_eq!(
        scalar(
            &session,
            "SELECT count(*) FROM events WHERE timestamp >= '2025-12-01T11:00:00Z'"
        ),
        4
    );
    assert!(matches!(
        session.blocking_sql("SELECT secret FROM events"),
        Err(Error::Plan { .. })
    ));
    // Full text over every column of an event.
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM events WHERE search('declined OR slow')"),
        2
    );
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM events WHERE matches(message, 'card')"),
        1
    );
    // The other tenant sees its own.
    assert_eq!(scalar(&engine.session(&globex), "SELECT count(secret) FROM events"), 1);
    // A tenant without events has an empty table with its time column.
    let empty = engine.session(&Tenant::try_new("initech").expect("tenant"));
    assert_eq!(scalar(&empty, "SELECT count(*) FROM events"), 0);
}

#[test]
fn event_files_whose_columns_conflict_are_a_typed_error() {
    let store = Store::new();
    store.write(
        &acme(),
        Signal::Events,
        &[decode(r#"{"timestamp": "2025-12-01T10:00:00Z", "code": 7}"#)],
    );
    store.write(
        &acme(),
        Signal::Events,
        &[decode(r#"{"timestamp": "2025-12-01T11:00:00Z", "code": {"a": 1}}"#)],
    );
    let session = store.engine().session(&acme());
    match session.blocking_sql("SELECT count(*) FROM events") {
        Err(Error::Plan { message, .. }) => assert!(message.contains("code"), "{message}"),
        other => panic!("expected a plan error, got {other:?}"),
    }
    // The other tables are not affected.
    assert_eq!(scalar(&session, "SELECT count(*) FROM spans"), 0);
}
