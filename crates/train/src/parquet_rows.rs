//! A parquet file as a stream of JSON records, one row group at a time.
//!
//! [`ParquetRows::open`] reads only the footer (schema and row-group directory), picks the
//! [`Layout`] from the top-level column names, checks the chosen columns' types, and builds a
//! projection of just those columns. [`ParquetRows::for_each`] then reads row group after row
//! group with the parquet crate's record API, which decodes a column chunk page by page: memory
//! holds a page of each projected column and the current row, never a whole row group, file or
//! shard set. Other columns (ids, metadata, long reasoning traces) are never decoded.
//!
//! Each row becomes a JSON object of the projected columns (strings, numbers, lists, structs as
//! objects), so the rest of the pipeline treats a parquet row and a JSONL line alike. A corrupt
//! file is an error naming the file and row, never a panic: the reader's own panics on malformed
//! data are caught and reported as such.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as Physical};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use parquet::schema::types::Type;
use serde_json::{Map, Value};

use crate::columns::{Layout, NoLayout};
use crate::config::ColumnsConfig;
use crate::error::{Result, TrainError};

/// An open parquet file and the columns training reads from it.
pub struct ParquetRows {
    path: PathBuf,
    reader: SerializedFileReader<File>,
    layout: Layout,
    projection: Type,
}

impl ParquetRows {
    /// Opens `path`, reads its footer and picks the columns following `columns`. A file that
    /// is not parquet, or has no usable column, is an error; the latter names every column with
    /// its type.
    pub fn open(path: &Path, columns: &ColumnsConfig) -> Result<ParquetRows> {
        let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
        let reader = guarded(|| SerializedFileReader::new(file))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| {
                TrainError::Data(format!(
                    "{}: not a readable parquet file: {e}",
                    path.display()
                ))
            })?;
        let schema = reader.metadata().file_metadata().schema();
        let fields = schema.get_fields();
        let layout = Layout::pick(columns, fields.iter().map(|f| f.name())).map_err(|e| {
            let found: Vec<String> = fields
                .iter()
                .map(|f| format!("{} ({})", f.name(), describe(f)))
                .collect();
            let found = if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            };
            match e {
                NoLayout::Unknown => TrainError::Data(format!(
                    "{}: no usable column; the file's columns: {found}; a dataset needs {}",
                    path.display(),
                    crate::columns::EXPECTED
                )),
                e => TrainError::Data(format!(
                    "{}: {e}; the file's columns: {found}",
                    path.display()
                )),
            }
        })?;
        let chosen: Vec<Arc<Type>> = fields
            .iter()
            .filter(|f| layout.columns().contains(&f.name()))
            .cloned()
            .collect();
        for f in &chosen {
            check_type(path, &layout, f)?;
        }
        let projection = Type::group_type_builder(schema.name())
            .with_fields(chosen)
            .build()
            .map_err(|e| TrainError::Data(format!("{}: projection: {e}", path.display())))?;
        Ok(ParquetRows {
            path: path.to_path_buf(),
            reader,
            layout,
            projection,
        })
    }

    /// The layout picked for the file's rows.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The number of rows the footer declares.
    pub fn num_rows(&self) -> u64 {
        self.reader.metadata().file_metadata().num_rows().max(0) as u64
    }

    /// Calls `f(row_index, record)` for every row in order (row index counted from 0 over the
    /// whole file), reading one row group at a time. Stops at the first error of the file or
    /// of `f`.
    pub fn for_each(&self, mut f: impl FnMut(usize, Value) -> Result<()>) -> Result<()> {
        let at = |row: usize, group: usize, e: String| {
            TrainError::Data(format!(
                "{}: row {row} (row group {group}): {e}",
                self.path.display()
            ))
        };
        let mut row_index = 0;
        for group in 0..self.reader.num_row_groups() {
            let group_reader = guarded(|| self.reader.get_row_group(group))
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| at(row_index, group, e))?;
            let mut rows = guarded(|| {
                RowIter::from_row_group(Some(self.projection.clone()), group_reader.as_ref())
            })
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| at(row_index, group, e))?;
            loop {
                let next = guarded(|| rows.next()).map_err(|e| at(row_index, group, e))?;
                let Some(row) = next else { break };
                let row = row.map_err(|e| at(row_index, group, e.to_string()))?;
                let record = row_json(&row).map_err(|e| at(row_index, group, e))?;
                f(row_index, record)?;
                row_index += 1;
            }
        }
        Ok(())
    }
}

/// Runs `op`, turning a panic of the parquet reader on malformed data into an error.
fn guarded<T>(op: impl FnOnce() -> T) -> std::result::Result<T, String> {
    catch_unwind(AssertUnwindSafe(op)).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        format!("the parquet reader failed on malformed data: {why}")
    })
}

/// Checks that a chosen column can hold what the layout reads from it.
fn check_type(path: &Path, layout: &Layout, field: &Type) -> Result<()> {
    let bad = |want: &str| {
        Err(TrainError::Data(format!(
            "{}: column `{}` is {}, not {want}",
            path.display(),
            field.name(),
            describe(field)
        )))
    };
    match layout {
        Layout::Text { .. } => {
            if !is_byte_string(field) {
                return bad("a string");
            }
        }
        Layout::Chat { role, content, .. } => {
            let Some(element) = list_element(field) else {
                return bad("a list of messages");
            };
            if !element.is_group() {
                return bad("a list of messages (structs with a role and a content)");
            }
            let keys: Vec<&str> = element.get_fields().iter().map(|f| f.name()).collect();
            let need = |configured: &Option<String>, first: &str, second: &str, key: &str| {
                let ok = match configured {
                    Some(k) => keys.contains(&k.as_str()),
                    None => keys.contains(&first) || keys.contains(&second),
                };
                if ok {
                    return Ok(());
                }
                let wanted = match configured {
                    Some(k) => format!("`{k}` (data.columns.{key})"),
                    None => {
                        format!("`{first}` or `{second}`; name it with data.columns.{key}=NAME")
                    }
                };
                Err(TrainError::Data(format!(
                    "{}: column `{}` is {}: its messages have no {key} key {wanted}",
                    path.display(),
                    field.name(),
                    describe(field)
                )))
            };
            need(role, "role", "from", "role")?;
            need(content, "content", "value", "content")?;
        }
        Layout::Nemotron { .. } => {
            if field.name() == "output" && !is_byte_string(field) {
                return bad("a string");
            }
        }
    }
    Ok(())
}

/// Whether the column is a single byte array (a string, or binary holding UTF-8).
fn is_byte_string(t: &Type) -> bool {
    t.is_primitive()
        && t.get_physical_type() == Physical::BYTE_ARRAY
        && t.get_basic_info().repetition() != Repetition::REPEATED
}

/// Whether `t` is annotated as a list.
fn is_list(t: &Type) -> bool {
    let info = t.get_basic_info();
    matches!(info.logical_type_ref(), Some(LogicalType::List))
        || info.converted_type() == ConvertedType::LIST
}

/// Whether `t` is annotated as a map.
fn is_map(t: &Type) -> bool {
    let info = t.get_basic_info();
    matches!(info.logical_type_ref(), Some(LogicalType::Map))
        || matches!(
            info.converted_type(),
            ConvertedType::MAP | ConvertedType::MAP_KEY_VALUE
        )
}

/// The element type of a list column: a `LIST`-annotated group (three-level, or the legacy
/// two-level forms the format's backward-compatibility rules describe) or a bare repeated field.
fn list_element(t: &Type) -> Option<&Type> {
    if t.get_basic_info().has_repetition()
        && t.get_basic_info().repetition() == Repetition::REPEATED
    {
        return Some(t);
    }
    if !t.is_group() || !is_list(t) {
        return None;
    }
    let [repeated] = t.get_fields() else {
        return None;
    };
    let legacy = repeated.name() == "array" || repeated.name() == format!("{}_tuple", t.name());
    match repeated.get_fields() {
        [element] if repeated.is_group() && !legacy => Some(element.as_ref()),
        _ => Some(repeated.as_ref()),
    }
}

/// A column type as the Hub's dataset viewer would name it: `string`, `int64`,
/// `list<struct<role: string, content: string>>`, `map<string, string>`.
pub fn describe(t: &Type) -> String {
    let info = t.get_basic_info();
    let repeated = info.has_repetition() && info.repetition() == Repetition::REPEATED;
    let inner = describe_one(t);
    if repeated {
        format!("list<{inner}>")
    } else {
        inner
    }
}

/// [`describe`] without the list a repeated field stands for.
fn describe_one(t: &Type) -> String {
    let info = t.get_basic_info();
    if t.is_primitive() {
        let string = matches!(
            info.logical_type_ref(),
            Some(LogicalType::String | LogicalType::Enum | LogicalType::Json)
        ) || matches!(
            info.converted_type(),
            ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON
        );
        if string {
            return "string".into();
        }
        return match t.get_physical_type() {
            Physical::BOOLEAN => "bool",
            Physical::INT32 => "int32",
            Physical::INT64 => "int64",
            Physical::INT96 => "int96",
            Physical::FLOAT => "float",
            Physical::DOUBLE => "double",
            Physical::BYTE_ARRAY => "binary",
            Physical::FIXED_LEN_BYTE_ARRAY => "fixed_size_binary",
        }
        .into();
    }
    if is_list(t) {
        return match list_element(t) {
            Some(e) if std::ptr::eq(e, t) => "list<?>".into(),
            Some(e) => format!("list<{}>", describe_one(e)),
            None => "list<?>".into(),
        };
    }
    if is_map(t) {
        if let [entry] = t.get_fields() {
            if let [k, v] = entry.get_fields() {
                return format!("map<{}, {}>", describe(k), describe(v));
            }
        }
        return "map<?>".into();
    }
    let fields: Vec<String> = t
        .get_fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), describe(f)))
        .collect();
    format!("struct<{}>", fields.join(", "))
}

/// A row as a JSON object of its columns.
fn row_json(row: &Row) -> std::result::Result<Value, String> {
    let mut out = Map::new();
    for (name, field) in row.get_column_iter() {
        out.insert(name.clone(), field_json(field, name)?);
    }
    Ok(Value::Object(out))
}

/// A field as JSON: strings (binary must be UTF-8), numbers, lists, structs as objects, maps
/// as objects keyed by the keys' text; dates, times and decimals as their text.
fn field_json(field: &Field, name: &str) -> std::result::Result<Value, String> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float16(n) => Value::from(f64::from(*n)),
        Field::Float(n) => Value::from(f64::from(*n)),
        Field::Double(n) => Value::from(*n),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(e) => return Err(format!("`{name}` is binary that is not UTF-8 text: {e}")),
        },
        Field::Group(row) => row_json(row)?,
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .map(|f| field_json(f, name))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Field::MapInternal(map) => {
            let mut out = Map::new();
            for (k, v) in map.entries() {
                let key = match field_json(k, name)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, field_json(v, name)?);
            }
            Value::Object(out)
        }
        other => Value::String(other.to_string()),
    })
}
