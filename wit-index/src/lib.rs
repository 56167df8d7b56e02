//! `wit-index` keeps a full-text index beside every stored Parquet file. The [`Indexer`]
//! builds one Tantivy index per file from the file's rows in order, in a single segment, so a
//! document id is the row's ordinal in the file; nothing is stored in it (the data is in
//! Parquet). The index is packed into one immutable blob, published beside the file
//! ([`index_path`]) only once complete, and recorded beside the file in the store's
//! `FileCatalog`. The [`Searcher`] answers a [`Query`] over one file with a [`RowSet`] of row
//! ordinals (a Parquet row selection), through the index when it is usable and by scanning the
//! file with the same analyzer and semantics when not: the index narrows what is read, it
//! never changes the answer.
//!
//! What is indexed, per row: the free text (log body and event name; span name, status
//! message, event names and exception messages; metric name and description; the text
//! columns of events; a dead letter's reason and record) with a log-friendly analyzer (see [`Query`]); every attribute of the
//! record, its resource and its scope as an exact `key=value` term; the service name; the
//! severity; the trace and span ids.
//!
//! ```
//! use wit_batch::{Compression, PayloadFormat, Signal, otlp::logs};
//! use wit_index::{Query, build_index};
//!
//! let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
//!     {"body":{"stringValue":"GET /api/users/42 took 3s"}},
//!     {"body":{"stringValue":"payment failed: card declined"}, "severityText":"ERROR"}]}]}]}"#;
//! let rows = logs::decode(json, PayloadFormat::OtlpJson, Compression::None)?;
//! let blob = build_index(Signal::Logs, &[rows])?;
//! assert_eq!(blob.docs, 2);
//! # let _ = Query::parse("severity:error")?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, unreachable_pub)]

mod analyzer;
mod asynchronous;
mod blob;
mod document;
mod engine;
mod error;
mod indexer;
mod query;
mod rows;
mod searcher;

pub use asynchronous::{AsyncIndexer, AsyncSearcher};
pub use error::{Error, Result};
pub use indexer::{IndexBlob, Indexer, build_index, index_path, indexed_columns};
pub use query::Query;
pub use rows::RowSet;
pub use searcher::{Hits, SearchedBy, Searcher};

/// What the benchmarks compare with: the index's schema, tokenizers and documents, for
/// Tantivy's own `IndexWriter`.
#[doc(hidden)]
pub mod bench {
    use arrow::array::RecordBatch;
    use tantivy::TantivyDocument;
    use tantivy::schema::Schema;
    use tantivy::tokenizer::TokenizerManager;
    use wit_batch::Signal;

    use crate::document::{Extractor, RowDoc};

    /// The index's schema.
    pub fn schema() -> Schema {
        crate::engine::schema()
    }

    /// The tokenizers the schema names.
    pub fn tokenizers() -> TokenizerManager {
        crate::engine::tokenizers()
    }

    /// The documents the index builds from `batch`.
    pub fn documents(signal: Signal, batch: &RecordBatch) -> Vec<TantivyDocument> {
        let schema = crate::engine::schema();
        let fields = crate::engine::Fields::of(&schema).expect("the schema has its fields");
        let extractor = Extractor::new(signal, batch);
        let mut row = RowDoc::default();
        (0..batch.num_rows())
            .map(|i| {
                extractor.fill(i, &mut row);
                crate::engine::tantivy_document(&fields, &row)
            })
            .collect()
    }
}
