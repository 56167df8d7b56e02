//! Trace lookups, newest-first pages with cursors that resume exactly, and the live tail.

use std::collections::HashSet;

use prost::Message;
use wit_batch::Signal;
use wit_query::{Cursor, Error, PageRequest, Session};

use crate::{Store, acme, data, decode, scalar, sql};

/// Logs over two hours, many sharing a timestamp (ties the cursor must break).
fn tied_logs(hours: u64, seed: u64, shift_hours: u64) -> Vec<arrow::array::RecordBatch> {
    let mut requests = data::logs(hours, 60, seed);
    for (r, request) in requests.iter_mut().enumerate() {
        for (i, record) in request.resource_logs[0].scope_logs[0]
            .log_records
            .iter_mut()
            .enumerate()
        {
            let hour = r as u64 / data::SERVICES.len() as u64 + shift_hours;
            record.time_unix_nano = data::T0 + hour * data::HOUR + (i as u64 % 4) * 1_000;
            record.observed_time_unix_nano = record.time_unix_nano + i as u64;
        }
    }
    requests
        .iter()
        .map(|r| decode(Signal::Logs, &r.encode_to_vec()))
        .collect()
}

fn store_with_logs() -> Store {
    let store = Store::new();
    for hour in tied_logs(2, 5, 0).chunks(data::SERVICES.len()) {
        store.write(&acme(), Signal::Logs, hour);
    }
    store
}

/// Each row of a page as `time|body|observed` (unique in these logs).
fn page_keys(result: &wit_query::QueryResult) -> Vec<String> {
    result
        .to_json_rows()
        .expect("json")
        .iter()
        .map(|r| format!("{}|{}|{}", r["timestamp"], r["body"]["str"], r["observed_time"]))
        .collect()
}

fn all_keys(session: &Session, predicate: &str, descending: bool) -> Vec<String> {
    let order = if descending { "DESC" } else { "ASC" };
    let rows = sql(
        session,
        &format!("SELECT timestamp, body, observed_time FROM logs WHERE {predicate} ORDER BY timestamp {order}"),
    );
    by_time_then_set(page_keys(&rows), descending)
}

/// Keys in time order; within one timestamp (where pages follow the cursor's own key) as a
/// sorted set, so two orders of the same rows compare equal.
fn by_time_then_set(mut keys: Vec<String>, descending: bool) -> Vec<String> {
    keys.sort_by(|a, b| {
        let (ta, tb) = (a.split('|').next(), b.split('|').next());
        if descending { tb.cmp(&ta) } else { ta.cmp(&tb) }.then_with(|| a.cmp(b))
    });
    keys
}

#[test]
fn pages_resume_exactly_where_the_last_ended_while_new_rows_arrive() {
    let store = store_with_logs();
    let session = store.engine().session(&acme());
    let filter = "service_name <> 'search'";
    let expected = all_keys(&session, filter, true);
    assert!(expected.len() > 200, "{}", expected.len());
    let mut got = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let request = PageRequest::new(Signal::Logs, 37)
            .with_filter(filter)
            .after(cursor.take());
        let page = session.blocking_page(&request).expect("page");
        assert!(page.rows.num_rows() <= 37);
        let names: Vec<String> = page.rows.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("__wit")),
            "position columns are not returned"
        );
        got.extend(page_keys(&page.rows));
        pages += 1;
        if pages == 2 {
            // Newer rows arrive (a later hour) between pages: they are above the cursor.
            for hour in tied_logs(1, 6, 5).chunks(data::SERVICES.len()) {
                store.write(&acme(), Signal::Logs, hour);
            }
        }
        // The token round-trips.
        cursor = page.next.map(|c| c.token().parse().expect("token"));
        if cursor.is_none() {
            break;
        }
    }
    assert!(pages > 5);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no row twice");
    assert_eq!(by_time_then_set(got, true), expected, "every row once, newest first");
}

#[test]
fn a_time_range_pages_within_it() {
    let store = store_with_logs();
    let session = store.engine().session(&acme());
    let (from, to) = ((data::T0 + data::HOUR) as i64, (data::T0 + 2 * data::HOUR) as i64);
    let mut n = 0;
    let mut cursor = None;
    loop {
        let page = session
            .blocking_page(
                &PageRequest::new(Signal::Logs, 50)
                    .with_range(Some(from), Some(to))
                    .after(cursor),
            )
            .expect("page");
        for row in page.rows.to_json_rows().expect("json") {
            let t = row["timestamp"].as_str().expect("time");
            assert!(t.starts_with("2025-12-01T01:"), "{t}");
        }
        n += page.rows.num_rows();
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        n as u64,
        scalar(
            &session,
            "SELECT count(*) FROM logs WHERE timestamp >= '2025-12-01T01:00:00Z' AND timestamp < '2025-12-01T02:00:00Z'"
        )
        .as_u64()
        .expect("count")
    );
}

#[test]
fn the_live_tail_returns_what_arrived_since_oldest_first() {
    let store = store_with_logs();
    let session = store.engine().session(&acme());
    let start = session
        .blocking_tail(&PageRequest::new(Signal::Logs, 100))
        .expect("tail");
    assert_eq!(start.rows.num_rows(), 0, "a tail starts now");
    let cursor = start.next.expect("a tail always has a cursor");
    let nothing = session
        .blocking_tail(&PageRequest::new(Signal::Logs, 100).after(Some(cursor.clone())))
        .expect("tail");
    assert_eq!(nothing.rows.num_rows(), 0);
    assert_eq!(nothing.next.as_ref(), Some(&cursor), "nothing new: the same cursor");
    // New rows arrive (a later hour).
    for hour in tied_logs(1, 7, 3).chunks(data::SERVICES.len()) {
        store.write(&acme(), Signal::Logs, hour);
    }
    let mut got = Vec::new();
    let mut cursor = Some(cursor);
    loop {
        let page = session
            .blocking_tail(&PageRequest::new(Signal::Logs, 64).after(cursor.clone()))
            .expect("tail");
        if page.rows.num_rows() == 0 {
            assert_eq!(page.next, cursor);
            break;
        }
        got.extend(page_keys(&page.rows));
        cursor = page.next;
    }
    let expected = all_keys(&session, "timestamp >= '2025-12-01T03:00:00Z'", false);
    assert_eq!(by_time_then_set(got, false), expected);
    assert_eq!(expected.len(), 180);
}

#[test]
fn a_trace_by_id() {
    let store = crate::standard_store();
    let session = store.engine().session(&acme());
    let id = scalar(
        &session,
        "SELECT encode(trace_id, 'hex') FROM spans WHERE service_name = 'payments' LIMIT 1",
    );
    let id = id.as_str().expect("hex").to_string();
    let spans = session.blocking_trace(&id.to_uppercase()).expect("trace");
    let expected = scalar(
        &session,
        &format!("SELECT count(*) FROM spans WHERE encode(trace_id, 'hex') = '{id}'"),
    );
    assert_eq!(spans.num_rows() as u64, expected.as_u64().expect("n"));
    let times: Vec<String> = spans
        .to_json_rows()
        .expect("json")
        .iter()
        .map(|r| r["timestamp"].as_str().expect("t").to_string())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert_eq!(session.blocking_trace(&"0".repeat(32)).expect("trace").num_rows(), 0);
}

#[test]
fn bad_lookup_arguments_are_typed_errors() {
    let store = store_with_logs();
    let session = store.engine().session(&acme());
    let invalid = |r: Result<wit_query::Page, Error>| matches!(r, Err(Error::InvalidRequest { .. }));
    for token in [
        "",
        "v1",
        "v2.logs.1.61",
        "v1.nosuch.1.61",
        "v1.logs.x.61",
        "v1.logs.1.6",
        "v1.logs.1.zz",
    ] {
        assert!(
            matches!(token.parse::<Cursor>(), Err(Error::InvalidRequest { .. })),
            "{token:?}"
        );
    }
    let spans_cursor: Cursor = "v1.spans.5.61".parse().expect("token");
    assert!(invalid(session.blocking_page(
        &PageRequest::new(Signal::Logs, 5).after(Some(spans_cursor))
    )));
    assert!(invalid(session.blocking_page(&PageRequest::new(Signal::Logs, 0))));
    for filter in [
        "1 = 1; DROP TABLE logs",
        "x) OR (1 = 1",
        "severity_text = 'a' ORDER BY 1",
        "",
    ] {
        assert!(
            invalid(session.blocking_page(&PageRequest::new(Signal::Logs, 5).with_filter(filter))),
            "{filter}"
        );
    }
    assert!(matches!(
        session.blocking_trace("xyz"),
        Err(Error::InvalidRequest { .. })
    ));
    assert!(matches!(
        session.blocking_trace(&"g".repeat(32)),
        Err(Error::InvalidRequest { .. })
    ));
}
