//! `wit-tracker`'s integration tests: the conformance suite (`wit_tracker::conformance`) run
//! against the in-memory, SQLite and PostgreSQL trackers (a real server, started here), then
//! what is particular to each.

mod backends;
mod concurrency;
mod differential;
mod pg_server;
mod postgres;
mod reference;
mod sqlite;
