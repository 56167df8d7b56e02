//! The resource and scope columns every OTLP table carries, both ways.
//!
//! While decoding, resources and scopes are collected once each into small side tables; every
//! output row records the scope it belongs to. At the end the side tables are expanded onto the
//! rows with `take`, so the decoders never depend on the order fields arrive in.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ListArray, ListBuilder, StringArray, StringBuilder, StructArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Fields as ArrowFields};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::common::v1::{EntityRef, InstrumentationScope};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::columns::{Columns, col};
use super::source::{Fields, Source};
use super::value::{AttrsBuilder, AttrsReader, Value, attrs_type, push_prost_attrs, read_key_value_parts};
use crate::{Error, Result};

static RESOURCE: Fields = Fields {
    fields: &[(1, "attributes"), (2, "droppedAttributesCount"), (3, "entityRefs")],
};
static SCOPE: Fields = Fields {
    fields: &[
        (1, "name"),
        (2, "version"),
        (3, "attributes"),
        (4, "droppedAttributesCount"),
    ],
};
static ENTITY_REF: Fields = Fields {
    fields: &[(1, "schemaUrl"), (2, "type"), (3, "idKeys"), (4, "descriptionKeys")],
};

/// The attribute promoted to its own column.
pub(crate) const SERVICE_NAME: &str = "service.name";

fn entity_ref_fields() -> ArrowFields {
    ArrowFields::from(vec![
        Field::new("schema_url", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new(
            "id_keys",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, false))),
            false,
        ),
        Field::new(
            "description_keys",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, false))),
            false,
        ),
    ])
}

/// The common columns, in schema order, appended after a table's own columns.
pub(crate) fn common_fields() -> Vec<Field> {
    vec![
        Field::new("service_name", DataType::Utf8, true),
        Field::new("resource_index", DataType::UInt32, false),
        Field::new("resource_attributes", attrs_type(), false),
        Field::new("resource_dropped_attributes_count", DataType::UInt32, false),
        Field::new(
            "resource_entity_refs",
            DataType::List(Arc::new(Field::new_list_field(
                DataType::Struct(entity_ref_fields()),
                false,
            ))),
            false,
        ),
        Field::new("resource_schema_url", DataType::Utf8, false),
        Field::new("scope_index", DataType::UInt32, false),
        Field::new("scope_name", DataType::Utf8, false),
        Field::new("scope_version", DataType::Utf8, false),
        Field::new("scope_attributes", attrs_type(), false),
        Field::new("scope_dropped_attributes_count", DataType::UInt32, false),
        Field::new("scope_schema_url", DataType::Utf8, false),
    ]
}

#[derive(Default)]
struct EntityRefsBuilder {
    schema_url: Vec<String>,
    ty: Vec<String>,
    id_keys: Vec<Vec<String>>,
    description_keys: Vec<Vec<String>>,
    offsets: Vec<i32>,
}

impl EntityRefsBuilder {
    fn finish(self, rows: usize) -> ListArray {
        let mut offsets = self.offsets;
        if offsets.is_empty() {
            offsets.push(0);
        }
        while offsets.len() <= rows {
            offsets.push(*offsets.last().expect("non-empty"));
        }
        let strings = |v: Vec<Vec<String>>| {
            let mut b = ListBuilder::new(StringBuilder::new()).with_field(Field::new_list_field(DataType::Utf8, false));
            for keys in v {
                for k in keys {
                    b.values().append_value(k);
                }
                b.append(true);
            }
            Arc::new(b.finish()) as ArrayRef
        };
        let entries = StructArray::new(
            entity_ref_fields(),
            vec![
                Arc::new(StringArray::from(self.schema_url)),
                Arc::new(StringArray::from(self.ty)),
                strings(self.id_keys),
                strings(self.description_keys),
            ],
            None,
        );
        ListArray::new(
            Arc::new(Field::new_list_field(DataType::Struct(entity_ref_fields()), false)),
            arrow::buffer::OffsetBuffer::new(offsets.into()),
            Arc::new(entries),
            None,
        )
    }
}

/// Collects resources and scopes, and which scope each output row belongs to.
#[derive(Default)]
pub(crate) struct Common {
    // One entry per resource container (`ResourceSpans`, ...), in request order.
    res_attrs: AttrsBuilder,
    res_dropped: Vec<u32>,
    res_schema_url: Vec<String>,
    res_service: Vec<Option<String>>,
    res_entities: EntityRefsBuilder,
    // One entry per scope container, in request order.
    scope_resource: Vec<u32>,
    scope_name: Vec<String>,
    scope_version: Vec<String>,
    scope_attrs: AttrsBuilder,
    scope_dropped: Vec<u32>,
    scope_schema_url: Vec<String>,
    // One entry per output row.
    row_scope: Vec<u32>,
}

impl Common {
    /// Starts a resource container; fields default until set.
    pub(crate) fn begin_resource(&mut self) {
        self.res_dropped.push(0);
        self.res_schema_url.push(String::new());
        self.res_service.push(None);
        if self.res_entities.offsets.is_empty() {
            self.res_entities.offsets.push(0);
        }
    }

    /// Ends the current resource container.
    pub(crate) fn end_resource(&mut self) {
        self.res_attrs.finish_row();
        let n = i32::try_from(self.res_entities.schema_url.len()).expect("entity refs fit i32");
        self.res_entities.offsets.push(n);
    }

    fn resource_idx(&self) -> usize {
        self.res_dropped.len() - 1
    }

    /// Reads a `Resource` message into the current resource.
    pub(crate) fn read_resource<'a, S: Source<'a>>(&mut self, s: &mut S) -> Result<()> {
        s.message(|s| {
            while let Some(tag) = s.next_field(&RESOURCE)? {
                match tag {
                    1 => {
                        let (key, value) = read_key_value_parts(s)?;
                        self.note_service(&key, &value);
                        self.res_attrs.push(&key, &value);
                    }
                    2 => *self.res_dropped.last_mut().expect("in a resource") = s.uint32()?,
                    3 => s.message(|s| self.read_entity_ref(s))?,
                    _ => s.skip()?,
                }
            }
            Ok(())
        })
    }

    fn read_entity_ref<'a, S: Source<'a>>(&mut self, s: &mut S) -> Result<()> {
        let (mut schema_url, mut ty, mut ids, mut descs) = (String::new(), String::new(), Vec::new(), Vec::new());
        while let Some(tag) = s.next_field(&ENTITY_REF)? {
            match tag {
                1 => schema_url = s.string()?.into_owned(),
                2 => ty = s.string()?.into_owned(),
                3 => ids.push(s.string()?.into_owned()),
                4 => descs.push(s.string()?.into_owned()),
                _ => s.skip()?,
            }
        }
        self.push_entity_ref(schema_url, ty, ids, descs);
        Ok(())
    }

    fn push_entity_ref(&mut self, schema_url: String, ty: String, ids: Vec<String>, descs: Vec<String>) {
        let e = &mut self.res_entities;
        e.schema_url.push(schema_url);
        e.ty.push(ty);
        e.id_keys.push(ids);
        e.description_keys.push(descs);
    }

    fn note_service(&mut self, key: &[u8], value: &Value<'_>) {
        // Invalid UTF-8 is reported when the attribute column is finished.
        if key == SERVICE_NAME.as_bytes()
            && let Value::Str(name) = value
            && let Ok(name) = std::str::from_utf8(name)
        {
            *self.res_service.last_mut().expect("in a resource") = Some(name.to_owned());
        }
    }

    /// Sets the current resource container's schema URL.
    pub(crate) fn set_resource_schema_url(&mut self, url: &str) {
        *self.res_schema_url.last_mut().expect("in a resource") = url.to_owned();
    }

    /// Starts a scope container inside the current resource.
    pub(crate) fn begin_scope(&mut self) {
        let res = self.resource_idx() as u32;
        self.scope_resource.push(res);
        self.scope_name.push(String::new());
        self.scope_version.push(String::new());
        self.scope_dropped.push(0);
        self.scope_schema_url.push(String::new());
    }

    /// Ends the current scope container.
    pub(crate) fn end_scope(&mut self) {
        self.scope_attrs.finish_row();
    }

    /// Reads an `InstrumentationScope` message into the current scope.
    pub(crate) fn read_scope<'a, S: Source<'a>>(&mut self, s: &mut S) -> Result<()> {
        s.message(|s| {
            while let Some(tag) = s.next_field(&SCOPE)? {
                match tag {
                    1 => *self.scope_name.last_mut().expect("in a scope") = s.string()?.into_owned(),
                    2 => *self.scope_version.last_mut().expect("in a scope") = s.string()?.into_owned(),
                    3 => {
                        let (key, value) = read_key_value_parts(s)?;
                        self.scope_attrs.push(&key, &value);
                    }
                    4 => *self.scope_dropped.last_mut().expect("in a scope") = s.uint32()?,
                    _ => s.skip()?,
                }
            }
            Ok(())
        })
    }

    /// Sets the current scope container's schema URL.
    pub(crate) fn set_scope_schema_url(&mut self, url: &str) {
        *self.scope_schema_url.last_mut().expect("in a scope") = url.to_owned();
    }

    /// The scope container of each row so far.
    pub(crate) fn row_scopes(&self) -> &[u32] {
        &self.row_scope
    }

    /// Records that one output row belongs to the current scope.
    #[inline]
    pub(crate) fn push_row(&mut self) {
        self.row_scope.push(self.scope_name.len() as u32 - 1);
    }

    /// Starts a resource from a prost `Resource` (the oracle path).
    pub(crate) fn begin_prost_resource(&mut self, resource: Option<&Resource>, schema_url: &str) -> Result<()> {
        self.begin_resource();
        self.set_resource_schema_url(schema_url);
        if let Some(r) = resource {
            for kv in &r.attributes {
                let value = super::value::value_from_prost(kv.value.as_ref())?;
                self.note_service(kv.key.as_bytes(), &value);
            }
            push_prost_attrs(&mut self.res_attrs, &r.attributes)?;
            *self.res_dropped.last_mut().expect("in a resource") = r.dropped_attributes_count;
            for e in &r.entity_refs {
                self.push_entity_ref(
                    e.schema_url.clone(),
                    e.r#type.clone(),
                    e.id_keys.clone(),
                    e.description_keys.clone(),
                );
            }
        }
        Ok(())
    }

    /// Starts a scope from a prost `InstrumentationScope` (the oracle path).
    pub(crate) fn begin_prost_scope(&mut self, scope: Option<&InstrumentationScope>, schema_url: &str) -> Result<()> {
        self.begin_scope();
        self.set_scope_schema_url(schema_url);
        if let Some(sc) = scope {
            *self.scope_name.last_mut().expect("in a scope") = sc.name.clone();
            *self.scope_version.last_mut().expect("in a scope") = sc.version.clone();
            *self.scope_dropped.last_mut().expect("in a scope") = sc.dropped_attributes_count;
            push_prost_attrs(&mut self.scope_attrs, &sc.attributes)?;
        }
        Ok(())
    }

    /// Expands the side tables onto the rows, in [`common_fields`] order.
    pub(crate) fn finish(self) -> Result<Vec<ArrayRef>> {
        let n_resources = self.res_dropped.len();
        let row_scope = UInt32Array::from(self.row_scope);
        let scope_resource = UInt32Array::from(self.scope_resource);
        let row_resource = take(&scope_resource, &row_scope, None)?;
        let row_resource_idx = row_resource
            .as_any()
            .downcast_ref::<UInt32Array>()
            .expect("u32 indices")
            .clone();
        let by_resource = |a: ArrayRef| expand(a, &row_resource_idx);
        let by_scope = |a: ArrayRef| expand(a, &row_scope);
        Ok(vec![
            by_resource(Arc::new(arrow::array::StringArray::from(self.res_service)))?,
            Arc::new(dense_positions(None, row_resource_idx.values())),
            by_resource(Arc::new(self.res_attrs.finish()?))?,
            by_resource(Arc::new(UInt32Array::from(self.res_dropped)))?,
            by_resource(Arc::new(self.res_entities.finish(n_resources)))?,
            by_resource(Arc::new(StringArray::from(self.res_schema_url)))?,
            Arc::new(dense_positions(Some(row_resource_idx.values()), row_scope.values())),
            by_scope(Arc::new(StringArray::from(self.scope_name)))?,
            by_scope(Arc::new(StringArray::from(self.scope_version)))?,
            by_scope(Arc::new(self.scope_attrs.finish()?))?,
            by_scope(Arc::new(UInt32Array::from(self.scope_dropped)))?,
            by_scope(Arc::new(StringArray::from(self.scope_schema_url)))?,
        ])
    }
}

/// For rows in order, the position of each row's group among the groups that have rows,
/// counted from 0 within each parent (or over all rows). Groups with no rows (a scope without
/// spans, say) take no position, so a batch converted back and forth numbers alike.
pub(crate) fn dense_positions(parent: Option<&[u32]>, group: &[u32]) -> UInt32Array {
    let mut out = Vec::with_capacity(group.len());
    let mut position = 0u32;
    for i in 0..group.len() {
        if i > 0 {
            if parent.is_some_and(|p| p[i] != p[i - 1]) {
                position = 0;
            } else if group[i] != group[i - 1] {
                position += 1;
            }
        }
        out.push(position);
    }
    UInt32Array::from(out)
}

/// `take(array, indices)`, with a faster path for maps and lists: `take` extends list
/// children range by range, while here the children are gathered once by index.
fn expand(array: ArrayRef, indices: &UInt32Array) -> Result<ArrayRef> {
    fn child_indices(offsets: &[i32], indices: &UInt32Array) -> Result<(Vec<i32>, UInt32Array)> {
        // Many small records sharing a large resource multiply its attributes: refuse a
        // column that would not fit 32-bit offsets before allocating it.
        let total: u64 = indices
            .values()
            .iter()
            .map(|&i| (offsets[i as usize + 1] - offsets[i as usize]) as u64)
            .sum();
        if total > i32::MAX as u64 {
            return Err(Error::Arrow(arrow::error::ArrowError::ComputeError(format!(
                "repeating resource and scope fields on every row needs {total} entries, more than one batch holds"
            ))));
        }
        let mut new_offsets = Vec::with_capacity(indices.len() + 1);
        new_offsets.push(0i32);
        let mut gather = Vec::with_capacity(total as usize);
        for &i in indices.values() {
            let (start, end) = (offsets[i as usize] as u32, offsets[i as usize + 1] as u32);
            gather.extend(start..end);
            new_offsets.push(offset(gather.len()));
        }
        Ok((new_offsets, UInt32Array::from(gather)))
    }
    if let Some(map) = array.as_any().downcast_ref::<arrow::array::MapArray>()
        && map.nulls().is_none()
    {
        let (offsets, gather) = child_indices(map.value_offsets(), indices)?;
        let entries = take(map.entries(), &gather, None)?;
        let entries = entries
            .as_any()
            .downcast_ref::<StructArray>()
            .expect("map entries are a struct")
            .clone();
        let DataType::Map(field, sorted) = map.data_type() else {
            unreachable!("a map")
        };
        return Ok(Arc::new(arrow::array::MapArray::try_new(
            field.clone(),
            arrow::buffer::OffsetBuffer::new(offsets.into()),
            entries,
            None,
            *sorted,
        )?));
    }
    if let Some(list) = array.as_any().downcast_ref::<ListArray>()
        && list.nulls().is_none()
    {
        let (offsets, gather) = child_indices(list.value_offsets(), indices)?;
        let values = take(list.values().as_ref(), &gather, None)?;
        let DataType::List(field) = list.data_type() else {
            unreachable!("a list")
        };
        return Ok(Arc::new(ListArray::try_new(
            field.clone(),
            arrow::buffer::OffsetBuffer::new(offsets.into()),
            values,
            None,
        )?));
    }
    Ok(take(array.as_ref(), indices, None)?)
}

// --- Arrow -> prost ---------------------------------------------------------------------------

/// A resource container's rows, split by scope.
pub(crate) struct ResourceGroup {
    /// A row of the resource (its first).
    pub(crate) row: usize,
    pub(crate) scopes: Vec<Range<usize>>,
}

/// Reads the common columns of a batch back into prost resources and scopes.
pub(crate) struct CommonReader<'b> {
    resource_index: &'b UInt32Array,
    scope_index: &'b UInt32Array,
    res_attrs: AttrsReader<'b>,
    res_dropped: &'b UInt32Array,
    res_entities: &'b ListArray,
    res_schema_url: &'b StringArray,
    scope_name: &'b StringArray,
    scope_version: &'b StringArray,
    scope_attrs: AttrsReader<'b>,
    scope_dropped: &'b UInt32Array,
    scope_schema_url: &'b StringArray,
}

impl<'b> CommonReader<'b> {
    pub(crate) fn new(batch: &'b RecordBatch, table: &'static str) -> Result<Self> {
        let c = Columns::new(batch, table);
        Ok(CommonReader {
            resource_index: col(&c, "resource_index")?,
            scope_index: col(&c, "scope_index")?,
            res_attrs: AttrsReader::new(c.get("resource_attributes")?, table)?,
            res_dropped: col(&c, "resource_dropped_attributes_count")?,
            res_entities: col(&c, "resource_entity_refs")?,
            res_schema_url: col(&c, "resource_schema_url")?,
            scope_name: col(&c, "scope_name")?,
            scope_version: col(&c, "scope_version")?,
            scope_attrs: AttrsReader::new(c.get("scope_attributes")?, table)?,
            scope_dropped: col(&c, "scope_dropped_attributes_count")?,
            scope_schema_url: col(&c, "scope_schema_url")?,
        })
    }

    /// Splits the rows into resource and scope containers: a new container starts wherever
    /// the resource or scope index changes.
    pub(crate) fn groups(&self) -> Vec<ResourceGroup> {
        let mut groups: Vec<ResourceGroup> = Vec::new();
        let n = self.resource_index.len();
        for row in 0..n {
            let r = self.resource_index.value(row);
            let sc = self.scope_index.value(row);
            let new_resource = row == 0 || self.resource_index.value(row - 1) != r;
            if new_resource {
                groups.push(ResourceGroup {
                    row,
                    scopes: std::iter::once(row..row + 1).collect(),
                });
                continue;
            }
            let group = groups.last_mut().expect("a group is open");
            let last = group.scopes.last_mut().expect("a scope is open");
            if self.scope_index.value(row - 1) != sc {
                group.scopes.push(row..row + 1);
            } else {
                last.end = row + 1;
            }
        }
        groups
    }

    pub(crate) fn resource(&self, row: usize) -> Result<Resource> {
        let entities = self.res_entities.value(row);
        let entities = entities
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| Error::Schema {
                table: "common",
                reason: "resource_entity_refs is not a list of structs".into(),
            })?;
        let string_col = |i: usize| {
            entities
                .columns()
                .get(i)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        };
        let list_col = |i: usize| {
            entities
                .columns()
                .get(i)
                .and_then(|c| c.as_any().downcast_ref::<ListArray>())
        };
        let mut entity_refs = Vec::with_capacity(entities.len());
        let bad = || Error::Schema {
            table: "common",
            reason: "resource_entity_refs does not have the expected struct of strings and string lists".into(),
        };
        let (Some(urls), Some(types), Some(ids), Some(descs)) =
            (string_col(0), string_col(1), list_col(2), list_col(3))
        else {
            return Err(bad());
        };
        let (Some(id_strings), Some(desc_strings)) = (
            ids.values().as_any().downcast_ref::<StringArray>(),
            descs.values().as_any().downcast_ref::<StringArray>(),
        ) else {
            return Err(bad());
        };
        let strings = |l: &ListArray, values: &StringArray, i: usize| -> Vec<String> {
            let o = l.value_offsets();
            (o[i] as usize..o[i + 1] as usize)
                .map(|j| values.value(j).to_owned())
                .collect()
        };
        for i in 0..entities.len() {
            entity_refs.push(EntityRef {
                schema_url: urls.value(i).to_owned(),
                r#type: types.value(i).to_owned(),
                id_keys: strings(ids, id_strings, i),
                description_keys: strings(descs, desc_strings, i),
            });
        }
        Ok(Resource {
            attributes: self.res_attrs.get(row)?,
            dropped_attributes_count: self.res_dropped.value(row),
            entity_refs,
        })
    }

    pub(crate) fn resource_schema_url(&self, row: usize) -> String {
        self.res_schema_url.value(row).to_owned()
    }

    pub(crate) fn scope(&self, row: usize) -> Result<InstrumentationScope> {
        Ok(InstrumentationScope {
            name: self.scope_name.value(row).to_owned(),
            version: self.scope_version.value(row).to_owned(),
            attributes: self.scope_attrs.get(row)?,
            dropped_attributes_count: self.scope_dropped.value(row),
        })
    }

    pub(crate) fn scope_schema_url(&self, row: usize) -> String {
        self.scope_schema_url.value(row).to_owned()
    }
}

/// Checks that every list offset fits (used by builders of nested lists).
pub(crate) fn offset(n: usize) -> i32 {
    i32::try_from(n).expect("fewer than 2^31 nested items in one batch")
}
