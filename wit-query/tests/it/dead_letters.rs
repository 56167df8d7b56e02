//! The `dead_letters` table: a tenant's refused records, stored like every signal and read
//! by SQL, full-text search and pages, for that tenant only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wit_batch::dead_letters::{self, DeadLetter};
use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant};
use wit_index::Indexer;
use wit_query::{Cursor, HotTier, PageRequest, QueryConfig, QueryEngine, Session};

use crate::{Store, acme, scalar, sql};

/// 2025-12-01T10:00:00Z plus `ms` milliseconds.
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_764_583_200_000 + ms)
}

fn rows(letters: &[DeadLetter]) -> arrow::array::RecordBatch {
    dead_letters::decode(&dead_letters::encode(letters), PayloadFormat::Ndjson, Compression::None).expect("decode")
}

fn acme_letters() -> Vec<DeadLetter> {
    vec![
        DeadLetter::new(
            at(0),
            Signal::Events,
            "/user/age: \"old\" is not of type integer",
            r#"{"user":{"age":"old"}}"#,
        )
        .with_stream("signups")
        .with_schema_version(3)
        .with_path("/user/age"),
        DeadLetter::new(
            at(1_000),
            Signal::Traces,
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: id is 5 bytes, expected 16",
            r#"{"traceId":"0102030405","name":"checkout"}"#,
        )
        .with_path("resourceSpans[0].scopeSpans[0].spans[1].traceId"),
        DeadLetter::new(at(2_000), Signal::Logs, "not valid UTF-8", "q83v")
            .with_topic("logs.acme")
            .with_partition(4)
            .with_offset(41_000),
    ]
}

/// The letters of a query's rows, as `signal|stream|path|reason|record|topic|partition|offset|version|ms`.
fn letters(session: &Session, predicate: &str) -> Vec<String> {
    let query = format!(
        "SELECT concat_ws('|', signal, coalesce(stream, '-'), coalesce(path, '-'), reason, record, \
         coalesce(topic, '-'), coalesce(CAST(\"partition\" AS VARCHAR), '-'), coalesce(CAST(\"offset\" AS VARCHAR), '-'), \
         coalesce(CAST(schema_version AS VARCHAR), '-'), \
         CAST((CAST(timestamp AS BIGINT) - 1764583200000000000) / 1000000 AS VARCHAR)) AS l \
         FROM dead_letters WHERE {predicate} ORDER BY timestamp"
    );
    sql(session, &query)
        .to_json_rows()
        .expect("json")
        .iter()
        .map(|r| r["l"].as_str().expect("text").to_owned())
        .collect()
}

fn expected(letters: &[DeadLetter]) -> Vec<String> {
    letters
        .iter()
        .map(|l| {
            let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            let num = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            let ms = l.time.duration_since(at(0)).expect("after").as_millis();
            [
                l.signal.to_string(),
                or(&l.stream),
                or(&l.path),
                l.reason.clone(),
                l.record.clone(),
                or(&l.topic),
                num(l.partition.map(|p| p.to_string())),
                num(l.offset.map(|o| o.to_string())),
                num(l.schema_version.map(|v| v.to_string())),
                ms.to_string(),
            ]
            .join("|")
        })
        .collect()
}

#[test]
fn a_tenants_dead_letters_are_its_table_and_no_one_elses() {
    let store = Store::new();
    let all = acme_letters();
    // Two files for acme; one letter of another tenant.
    store.write(&acme(), Signal::DeadLetters, &[rows(&all[..2])]);
    store.write(&acme(), Signal::DeadLetters, &[rows(&all[2..])]);
    let globex = Tenant::try_new("globex").expect("tenant");
    let theirs = [DeadLetter::new(at(500), Signal::Events, "secret reason", "{\"secret\":1}").with_stream("private")];
    store.write(&globex, Signal::DeadLetters, &[rows(&theirs)]);
    // Files of the same tenant's other signals are not in the table.
    store.write(
        &acme(),
        Signal::Events,
        &[wit_batch::events::decode(
            br#"{"timestamp": "2025-12-01T10:00:00Z", "reason": "an event", "record": "x"}"#,
            None,
            &wit_batch::events::EventOptions::default(),
        )
        .expect("event")],
    );

    let engine = store.engine();
    let (a, g) = (engine.session(&acme()), engine.session(&globex));
    assert_eq!(letters(&a, "TRUE"), expected(&all));
    assert_eq!(letters(&g, "TRUE"), expected(&theirs));
    assert_eq!(
        scalar(&a, "SELECT count(*) FROM dead_letters WHERE reason LIKE 'secret%'"),
        0
    );
    assert_eq!(
        scalar(&g, "SELECT count(*) FROM dead_letters WHERE signal <> 'events'"),
        0
    );
    // A tenant without dead letters has the table, empty, with its columns.
    let empty = engine.session(&Tenant::try_new("initech").expect("tenant"));
    let none = sql(&empty, "SELECT * FROM dead_letters");
    assert_eq!(none.num_rows(), 0);
    let columns: Vec<_> = none.schema().fields().iter().map(|f| f.name().clone()).collect();
    let want: Vec<_> = dead_letters::schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(columns, want);

    // Filters, time ranges and grouping work as on any table.
    assert_eq!(
        letters(&a, "timestamp >= '2025-12-01T10:00:01Z' AND \"offset\" IS NULL"),
        expected(&all[1..2])
    );
    assert_eq!(
        letters(&a, "stream = 'signups' AND schema_version = 3"),
        expected(&all[..1])
    );
    assert_eq!(scalar(&a, "SELECT count(DISTINCT signal) FROM dead_letters"), 3);
}

#[test]
fn dead_letters_are_searched_with_or_without_an_index_and_acknowledged_ones_are_seen() {
    let (plain, indexed) = (Store::new(), Store::new());
    let all = acme_letters();
    for store in [&plain, &indexed] {
        store.write(&acme(), Signal::DeadLetters, &[rows(&all)]);
    }
    let indexer = Indexer::new(indexed.destination.clone());
    for file in indexed.catalog.list(&acme(), Signal::DeadLetters, None).expect("list") {
        indexer
            .index_and_record(indexed.catalog.as_ref(), &file)
            .expect("index");
    }
    assert!(
        indexed
            .catalog
            .list(&acme(), Signal::DeadLetters, None)
            .expect("list")
            .iter()
            .all(|f| f.index.is_some())
    );
    for store in [&plain, &indexed] {
        let session = store.engine().session(&acme());
        // The reason and the record are the free text.
        assert_eq!(letters(&session, "search('integer')"), expected(&all[..1]));
        assert_eq!(letters(&session, "search('checkout OR q83v')"), expected(&all[1..]));
        assert_eq!(
            letters(&session, "matches(reason, '\"5 bytes\"')"),
            expected(&all[1..2])
        );
        assert_eq!(letters(&session, "matches(record, 'age')"), expected(&all[..1]));
        // The other columns are SQL's.
        assert!(letters(&session, "search('signups')").is_empty());
    }

    // A letter acknowledged but not yet stored is in the table, for its tenant only.
    let hot = HotTier::new(1 << 20);
    let late = [DeadLetter::new(at(3_000), Signal::Metrics, "no data points", "{}")];
    hot.insert(&acme(), Signal::DeadLetters, BatchId::new(), rows(&late));
    hot.insert(
        &Tenant::try_new("globex").expect("tenant"),
        Signal::DeadLetters,
        BatchId::new(),
        rows(&late),
    );
    let engine = QueryEngine::with_config(
        indexed.catalog.clone(),
        &indexed.destination,
        QueryConfig::default().with_hot_tier(hot),
    )
    .expect("engine");
    let session = engine.session(&acme());
    let mut want = all.clone();
    want.extend(late.iter().cloned());
    assert_eq!(letters(&session, "TRUE"), expected(&want));
    assert_eq!(letters(&session, "search('data')"), expected(&late));
}

#[test]
fn dead_letters_page_newest_first_and_resume_by_cursor() {
    let store = Store::new();
    // Letters refused at the same instant are told apart by their content.
    let letters: Vec<DeadLetter> = (0..7u64)
        .map(|i| {
            DeadLetter::new(
                at(i / 3 * 1_000),
                Signal::Events,
                format!("reason {i}"),
                format!("{{\"n\":{i}}}"),
            )
        })
        .collect();
    store.write(&acme(), Signal::DeadLetters, &[rows(&letters)]);
    let session = store.engine().session(&acme());
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let request = PageRequest::new(Signal::DeadLetters, 2).after(cursor.take());
        let page = session.blocking_page(&request).expect("page");
        for row in page.rows.to_json_rows().expect("json") {
            seen.push(row["reason"].as_str().expect("reason").to_owned());
        }
        cursor = page.next.map(|c| {
            let token = c.token();
            assert!(token.starts_with("v1.dead_letters."), "{token}");
            token.parse().expect("token")
        });
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "each letter once: {seen:?}");
    // Newest first: the letters of the last second, then the earlier ones.
    let second = |r: &str| r.trim_start_matches("reason ").parse::<u64>().expect("n") / 3;
    assert!(seen.windows(2).all(|w| second(&w[0]) >= second(&w[1])), "{seen:?}");
}
