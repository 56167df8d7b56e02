//! Building one index from a file's rows, and answering a query from it or by scanning rows.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use bytes::Bytes;
use tantivy::directory::RamDirectory;
use tantivy::query::{EnableScoring, FuzzyTermQuery, PhraseQuery, Query as _, TermQuery};
use tantivy::schema::{IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{Directory, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};
use wit_batch::Signal;

use crate::analyzer::{LogTokenizer, TOKENIZER, analyze};
use crate::blob::{BlobDirectory, pack, unpack};
use crate::document::{Extractor, RowDoc};
use crate::query::{Field, Leaf, Node};
use crate::{Error, Query, Result, RowSet};

/// The most documents one index holds: Tantivy's document ids are `u32`, one id is reserved.
pub(crate) const MAX_DOCS: u64 = u32::MAX as u64 - 1;

/// The index's fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    text: tantivy::schema::Field,
    attr: tantivy::schema::Field,
    service: tantivy::schema::Field,
    severity: tantivy::schema::Field,
    trace_id: tantivy::schema::Field,
    span_id: tantivy::schema::Field,
}

impl Fields {
    fn get(&self, field: Field) -> tantivy::schema::Field {
        match field {
            Field::Text => self.text,
            Field::Attr => self.attr,
            Field::Service => self.service,
            Field::Severity => self.severity,
            Field::TraceId => self.trace_id,
            Field::SpanId => self.span_id,
        }
    }

    pub(crate) fn of(schema: &Schema) -> tantivy::Result<Fields> {
        Ok(Fields {
            text: schema.get_field("text")?,
            attr: schema.get_field("attr")?,
            service: schema.get_field("service_name")?,
            severity: schema.get_field("severity")?,
            trace_id: schema.get_field("trace_id")?,
            span_id: schema.get_field("span_id")?,
        })
    }
}

/// The schema: analyzed text with positions; exact terms for the rest. Nothing is stored,
/// nothing has field norms (there is no scoring).
pub(crate) fn schema() -> Schema {
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions)
            .set_fieldnorms(false),
    );
    let exact = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    let mut builder = Schema::builder();
    builder.add_text_field("text", text);
    for name in ["attr", "service_name", "severity", "trace_id", "span_id"] {
        builder.add_text_field(name, exact.clone());
    }
    builder.build()
}

/// The tokenizers the schema names.
pub(crate) fn tokenizers() -> TokenizerManager {
    let manager = TokenizerManager::default();
    manager.register(TOKENIZER, LogTokenizer::default());
    manager
}

/// The Tantivy document of one row.
pub(crate) fn tantivy_document(fields: &Fields, doc: &RowDoc) -> TantivyDocument {
    let mut d = TantivyDocument::default();
    if !doc.text.is_empty() {
        d.add_text(fields.text, &doc.text);
    }
    for a in &doc.attrs {
        d.add_text(fields.attr, a);
    }
    if let Some(s) = &doc.service {
        d.add_text(fields.service, s);
    }
    for s in &doc.severity {
        d.add_text(fields.severity, s);
    }
    if let Some(id) = &doc.trace_id {
        d.add_text(fields.trace_id, id);
    }
    if let Some(id) = &doc.span_id {
        d.add_text(fields.span_id, id);
    }
    d
}

/// The size of what a row gives the index, in bytes of text: for the size ratio.
pub(crate) fn text_bytes(doc: &RowDoc) -> u64 {
    (doc.text.len()
        + doc.attrs.iter().map(String::len).sum::<usize>()
        + doc.service.as_ref().map_or(0, String::len)
        + doc.severity.iter().map(String::len).sum::<usize>()
        + doc.trace_id.as_ref().map_or(0, String::len)
        + doc.span_id.as_ref().map_or(0, String::len)) as u64
}

/// A built index, packed.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) blob: Bytes,
    pub(crate) docs: u64,
    pub(crate) text_bytes: u64,
}

/// Builds the index of a file from its rows in file order (`path` only names it in errors):
/// one segment, document id = row ordinal.
pub(crate) fn build(
    path: &str,
    signal: Signal,
    batches: &mut dyn Iterator<Item = Result<RecordBatch>>,
    heap_bytes: usize,
) -> Result<Built> {
    let tantivy_err = |operation| {
        move |source| Error::Tantivy {
            operation,
            path: path.to_owned(),
            source: Box::new(source),
        }
    };
    let schema = schema();
    let fields = Fields::of(&schema).map_err(tantivy_err("schema"))?;
    let ram = RamDirectory::create();
    let mut writer = Index::builder()
        .schema(schema)
        .tokenizers(tokenizers())
        .single_segment_index_writer::<TantivyDocument>(ram.clone(), heap_bytes)
        .map_err(tantivy_err("create the index writer"))?;
    let mut docs = 0u64;
    let mut text = 0u64;
    let mut row = RowDoc::default();
    for batch in batches {
        let batch = batch?;
        if docs + batch.num_rows() as u64 > MAX_DOCS {
            return Err(Error::TooManyRows {
                path: path.to_owned(),
                rows: docs + batch.num_rows() as u64,
                max: MAX_DOCS,
            });
        }
        let extractor = Extractor::new(signal, &batch);
        for i in 0..batch.num_rows() {
            extractor.fill(i, &mut row);
            text += text_bytes(&row);
            writer
                .add_document(tantivy_document(&fields, &row))
                .map_err(tantivy_err("index a row"))?;
        }
        docs += batch.num_rows() as u64;
    }
    let index = writer.finalize().map_err(tantivy_err("finish the segment"))?;
    let mut names: HashSet<PathBuf> = index.directory().list_managed_files();
    names.insert(PathBuf::from("meta.json"));
    let mut files = BTreeMap::new();
    for name in names {
        if name == Path::new(".managed.json") || name.extension().is_some_and(|e| e == "lock") {
            continue;
        }
        match ram.atomic_read(&name) {
            Ok(bytes) => {
                files.insert(name, bytes);
            }
            Err(tantivy::directory::error::OpenReadError::FileDoesNotExist(_)) => {}
            Err(e) => return Err(tantivy_err("read the built index")(e.into())),
        }
    }
    Ok(Built {
        blob: pack(docs, &files),
        docs,
        text_bytes: text,
    })
}

/// An index opened from its blob, ready to search.
pub(crate) struct OpenIndex {
    reader: IndexReader,
    fields: Fields,
    docs: u64,
}

impl std::fmt::Debug for OpenIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenIndex")
            .field("docs", &self.docs)
            .finish_non_exhaustive()
    }
}

impl OpenIndex {
    /// Opens a blob (`path` names it in errors).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the blob is not intact or Tantivy refuses its contents.
    pub(crate) fn open(path: &str, blob: Bytes) -> Result<OpenIndex> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let unpacked = unpack(blob).map_err(corrupt)?;
        let index = Index::open(BlobDirectory::new(&unpacked)).map_err(|e| corrupt(format!("tantivy: {e}")))?;
        let fields = Fields::of(&index.schema()).map_err(|e| corrupt(format!("schema: {e}")))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e: tantivy::TantivyError| corrupt(format!("tantivy: {e}")))?;
        let open = OpenIndex {
            reader,
            fields,
            docs: unpacked.docs,
        };
        let searcher = open.reader.searcher();
        let segments = searcher.segment_readers().len();
        let max_doc: u64 = searcher.segment_readers().iter().map(|s| u64::from(s.max_doc())).sum();
        if segments > 1 || max_doc != open.docs {
            return Err(corrupt(format!(
                "{segments} segments of {max_doc} documents where one of {} was written",
                open.docs
            )));
        }
        Ok(open)
    }

    /// The documents in the index.
    pub(crate) fn docs(&self) -> u64 {
        self.docs
    }

    /// The rows matching `query`.
    pub(crate) fn search(&self, path: &str, query: &Query) -> Result<RowSet> {
        let searcher = self.reader.searcher();
        let mut leaf = |leaf: &Leaf| -> Result<RowSet> {
            let mut rows = RowSet::empty(self.docs);
            let Some(segment) = searcher.segment_readers().first() else {
                return Ok(rows);
            };
            let query: Box<dyn tantivy::query::Query> = match leaf {
                Leaf::Term(field, t) => Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.get(*field), t),
                    IndexRecordOption::Basic,
                )),
                Leaf::Phrase(seq) => Box::new(PhraseQuery::new_with_offset(
                    seq.iter()
                        .map(|(o, t)| (*o as usize, Term::from_field_text(self.fields.text, t)))
                        .collect(),
                )),
                Leaf::Prefix(field, p) => Box::new(FuzzyTermQuery::new_prefix(
                    Term::from_field_text(self.fields.get(*field), p),
                    0,
                    true,
                )),
            };
            let err = |source| Error::Tantivy {
                operation: "search",
                path: path.to_owned(),
                source: Box::new(source),
            };
            let weight = query
                .weight(EnableScoring::disabled_from_searcher(&searcher))
                .map_err(err)?;
            weight
                .for_each_no_score(segment, &mut |docs| {
                    for d in docs {
                        rows.insert(u64::from(*d));
                    }
                })
                .map_err(err)?;
            Ok(rows)
        };
        evaluate(&query.root, self.docs, &mut leaf)
    }
}

/// Evaluates a query tree over a file of `len` rows, asking `leaf` for each leaf's rows.
fn evaluate(node: &Node, len: u64, leaf: &mut dyn FnMut(&Leaf) -> Result<RowSet>) -> Result<RowSet> {
    Ok(match node {
        Node::Leaf(l) => leaf(l)?,
        Node::And(children) => {
            let mut rows = RowSet::all(len);
            for c in children {
                rows.and(&evaluate(c, len, leaf)?);
            }
            rows
        }
        Node::Or(children) => {
            let mut rows = RowSet::empty(len);
            for c in children {
                rows.or(&evaluate(c, len, leaf)?);
            }
            rows
        }
        Node::Not(child) => {
            let mut rows = evaluate(child, len, leaf)?;
            rows.not();
            rows
        }
    })
}

/// Evaluates queries row by row, with the same extraction and analyzer as the index.
#[derive(Default)]
pub(crate) struct Scanner {
    doc: RowDoc,
    tokens: Vec<(String, u32)>,
    scratch: String,
}

impl Scanner {
    /// The rows of `batch` (rows `first..` of its file, `len` rows in all) matching `query`,
    /// added to `rows`.
    pub(crate) fn scan(&mut self, signal: Signal, batch: &RecordBatch, first: u64, query: &Query, rows: &mut RowSet) {
        let extractor = Extractor::new(signal, batch);
        for i in 0..batch.num_rows() {
            extractor.fill(i, &mut self.doc);
            self.tokens.clear();
            let tokens = &mut self.tokens;
            analyze(&self.doc.text, &mut self.scratch, &mut |t, p, _| {
                tokens.push((t.to_owned(), p))
            });
            if self.matches(&query.root) {
                rows.insert(first + i as u64);
            }
        }
    }

    /// Whether `text` alone, as a row's only free text, matches `query`.
    pub(crate) fn matches_text(&mut self, text: &str, query: &Query) -> bool {
        self.doc.clear();
        self.doc.text.push_str(text);
        self.tokens.clear();
        let tokens = &mut self.tokens;
        analyze(&self.doc.text, &mut self.scratch, &mut |t, p, _| {
            tokens.push((t.to_owned(), p))
        });
        self.matches(&query.root)
    }

    fn matches(&self, node: &Node) -> bool {
        match node {
            Node::Leaf(leaf) => self.leaf(leaf),
            Node::And(c) => c.iter().all(|n| self.matches(n)),
            Node::Or(c) => c.iter().any(|n| self.matches(n)),
            Node::Not(c) => !self.matches(c),
        }
    }

    fn values(&self, field: Field) -> Box<dyn Iterator<Item = &str> + '_> {
        let d = &self.doc;
        match field {
            Field::Text => Box::new(self.tokens.iter().map(|(t, _)| t.as_str())),
            Field::Attr => Box::new(d.attrs.iter().map(String::as_str)),
            Field::Service => Box::new(d.service.iter().map(String::as_str)),
            Field::Severity => Box::new(d.severity.iter().map(String::as_str)),
            Field::TraceId => Box::new(d.trace_id.iter().map(String::as_str)),
            Field::SpanId => Box::new(d.span_id.iter().map(String::as_str)),
        }
    }

    fn leaf(&self, leaf: &Leaf) -> bool {
        match leaf {
            Leaf::Term(field, t) => self.values(*field).any(|v| v == t),
            Leaf::Prefix(field, p) => self.values(*field).any(|v| v.starts_with(p.as_str())),
            Leaf::Phrase(seq) => {
                let Some((o0, t0)) = seq.first() else { return false };
                self.tokens.iter().any(|(t, p)| {
                    t == t0
                        && p >= o0
                        && seq.iter().skip(1).all(|(o, want)| {
                            let at = p - o0 + o;
                            self.tokens.iter().any(|(t, q)| *q == at && t == want)
                        })
                })
            }
        }
    }
}
