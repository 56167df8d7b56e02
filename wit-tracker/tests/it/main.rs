//! `wit-tracker`'s integration tests: one conformance suite run against the in-memory, SQLite
//! and PostgreSQL trackers (a real server, started here), then what is particular to each.

mod backends;
mod concurrency;
mod conformance;
mod differential;
mod pg_server;
mod postgres;
mod reference;
mod sqlite;
