//! Ordered key/value metadata with typed accessors.
//!
//! Keys keep the order of the file (or of insertion), so writing back what was read gives the
//! same bytes. The typed accessors are lenient where files disagree in practice (llama.cpp writes
//! most hyper-parameters as `u32`, others as `u64` or `i32`: [`Metadata::get_u32`] accepts any
//! integer type whose value fits) and strict where a mistake would be silent (a string is never a
//! number).

use std::collections::HashMap;
use std::fmt;

use crate::error::GgufError;
use crate::value::{Value, ValueType};

/// Ordered key/value metadata (keeps file order; insert of an existing key replaces in place).
#[derive(Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`: replaces the value in place if the key exists (keeping its
    /// position), appends otherwise. No validation; [`GgufWriter::add`](crate::GgufWriter::add)
    /// is the validating entry point for data meant to be written.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Removes `key` and returns its value; later keys move up one place.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, value) = self.entries.remove(i);
        for (k, _) in &self.entries[i..] {
            if let Some(slot) = self.index.get_mut(k) {
                *slot -= 1;
            }
        }
        Some(value)
    }

    /// The value of `key`, of whatever type.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Keys and values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key` or a [`GgufError::MissingKey`].
    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, v, "string"))
    }

    /// An integer of any type whose value fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        int(key, self.require(key)?, "u32")
    }

    /// An integer of any type whose value fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        int(key, self.require(key)?, "u64")
    }

    /// An integer of any type whose value fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        int(key, self.require(key)?, "i64")
    }

    /// An `f32`, or an `f64` rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        float(key, v)
    }

    /// A `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| wrong_type(key, v, "bool"))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.require(key)?;
        let items = array_of(key, v, &[ValueType::String], "array<string>")?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .ok_or_else(|| wrong_type(&format!("{key}[{i}]"), item, "string"))
            })
            .collect()
    }

    /// An array of `f32` (or of `f64`, rounded to `f32`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let v = self.require(key)?;
        let items = array_of(key, v, &[ValueType::F32, ValueType::F64], "array<f32>")?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| float(&format!("{key}[{i}]"), item))
            .collect()
    }

    /// An array of integers of any type whose values all fit in `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let v = self.require(key)?;
        let items = array_of(key, v, INTEGER_TYPES, "array<i32>")?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| int(&format!("{key}[{i}]"), item, "i32"))
            .collect()
    }

    /// An array of integers of any type whose values all fit in `u32`.
    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>, GgufError> {
        let v = self.require(key)?;
        let items = array_of(key, v, INTEGER_TYPES, "array<u32>")?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| int(&format!("{key}[{i}]"), item, "u32"))
            .collect()
    }

    /// Like [`get_str`](Self::get_str), but a missing key is `Ok(None)`.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        optional(self.contains_key(key), || self.get_str(key))
    }

    /// Like [`get_u32`](Self::get_u32), but a missing key is `Ok(None)`.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        optional(self.contains_key(key), || self.get_u32(key))
    }

    /// Like [`get_u64`](Self::get_u64), but a missing key is `Ok(None)`.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        optional(self.contains_key(key), || self.get_u64(key))
    }

    /// Like [`get_i64`](Self::get_i64), but a missing key is `Ok(None)`.
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        optional(self.contains_key(key), || self.get_i64(key))
    }

    /// Like [`get_f32`](Self::get_f32), but a missing key is `Ok(None)`.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        optional(self.contains_key(key), || self.get_f32(key))
    }

    /// Like [`get_bool`](Self::get_bool), but a missing key is `Ok(None)`.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        optional(self.contains_key(key), || self.get_bool(key))
    }
}

/// Shows the entries in order, as a map.
impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for Metadata {
    /// Inserts in order; a repeated key replaces the earlier value in place.
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        let mut md = Metadata::new();
        for (k, v) in iter {
            md.insert(k, v);
        }
        md
    }
}

const INTEGER_TYPES: &[ValueType] = &[
    ValueType::U8,
    ValueType::I8,
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::U64,
    ValueType::I64,
];

fn optional<T>(
    present: bool,
    get: impl FnOnce() -> Result<T, GgufError>,
) -> Result<Option<T>, GgufError> {
    if present {
        get().map(Some)
    } else {
        Ok(None)
    }
}

fn wrong_type(key: &str, found: &Value, expected: &str) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        found: found.type_name(),
        expected: expected.to_string(),
    }
}

/// An integer value converted to `T` (named `expected` in messages), if it fits.
fn int<T: TryFrom<i128>>(key: &str, v: &Value, expected: &str) -> Result<T, GgufError> {
    let wide = v.as_i128().ok_or_else(|| wrong_type(key, v, expected))?;
    T::try_from(wide).map_err(|_| GgufError::OutOfRange {
        key: key.to_string(),
        found: v.type_name(),
        value: wide.to_string(),
        expected: expected.to_string(),
    })
}

fn float(key: &str, v: &Value) -> Result<f32, GgufError> {
    match *v {
        Value::F32(x) => Ok(x),
        Value::F64(x) => Ok(x as f32),
        _ => Err(wrong_type(key, v, "f32")),
    }
}

/// The elements of an array whose element type is one of `allowed`.
fn array_of<'a>(
    key: &str,
    v: &'a Value,
    allowed: &[ValueType],
    expected: &str,
) -> Result<&'a [Value], GgufError> {
    match v {
        Value::Array(t, items) if allowed.contains(t) => Ok(items),
        _ => Err(wrong_type(key, v, expected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        [
            ("general.architecture", Value::String("llama".into())),
            ("x", Value::U64(7)),
            ("big", Value::U64(1 << 40)),
            ("neg", Value::I32(-3)),
            ("f", Value::F64(0.5)),
            ("flag", Value::Bool(true)),
            (
                "toks",
                Value::Array(
                    ValueType::String,
                    vec![Value::String("a".into()), Value::String("b".into())],
                ),
            ),
            (
                "ids",
                Value::Array(ValueType::U64, vec![Value::U64(1), Value::U64(2)]),
            ),
            (
                "types",
                Value::Array(ValueType::I32, vec![Value::I32(-1), Value::I32(3)]),
            ),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn missing_key_message() {
        let err = sample().get_u32("llama.block_count").unwrap_err();
        assert!(matches!(err, GgufError::MissingKey(ref k) if k == "llama.block_count"));
        assert_eq!(err.to_string(), "missing key `llama.block_count`");
    }

    #[test]
    fn wrong_type_message() {
        let err = sample().get_str("x").unwrap_err();
        assert_eq!(err.to_string(), "key `x` is u64, expected string");
        let err = sample().get_str_array("ids").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key `ids` is array<u64>, expected array<string>"
        );
        let err = sample().get_u32("general.architecture").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key `general.architecture` is string, expected u32"
        );
        assert_eq!(
            sample().get_bool("x").unwrap_err().to_string(),
            "key `x` is u64, expected bool"
        );
        assert_eq!(
            sample().get_f32("x").unwrap_err().to_string(),
            "key `x` is u64, expected f32"
        );
    }

    #[test]
    fn integers_widen_and_narrow_when_they_fit() {
        let md = sample();
        assert_eq!(md.get_u32("x").unwrap(), 7);
        assert_eq!(md.get_u64("x").unwrap(), 7);
        assert_eq!(md.get_i64("neg").unwrap(), -3);
        assert_eq!(md.get_u64("big").unwrap(), 1 << 40);
        assert_eq!(
            md.get_u32("big").unwrap_err().to_string(),
            "key `big` is u64 1099511627776, which does not fit in u32"
        );
        assert_eq!(
            md.get_u64("neg").unwrap_err().to_string(),
            "key `neg` is i32 -3, which does not fit in u64"
        );
        assert_eq!(md.get_f32("f").unwrap(), 0.5);
        assert!(md.get_bool("flag").unwrap());
    }

    #[test]
    fn arrays() {
        let md = sample();
        assert_eq!(md.get_str_array("toks").unwrap(), vec!["a", "b"]);
        assert_eq!(md.get_u32_array("ids").unwrap(), vec![1, 2]);
        assert_eq!(md.get_i32_array("ids").unwrap(), vec![1, 2]);
        assert_eq!(md.get_i32_array("types").unwrap(), vec![-1, 3]);
        assert_eq!(
            md.get_u32_array("types").unwrap_err().to_string(),
            "key `types[0]` is i32 -1, which does not fit in u32"
        );
        assert_eq!(
            md.get_f32_array("toks").unwrap_err().to_string(),
            "key `toks` is array<string>, expected array<f32>"
        );
    }

    #[test]
    fn optional_accessors() {
        let md = sample();
        assert_eq!(md.opt_u32("nope").unwrap(), None);
        assert_eq!(md.opt_u32("x").unwrap(), Some(7));
        assert_eq!(md.opt_str("general.architecture").unwrap(), Some("llama"));
        assert_eq!(md.opt_bool("nope").unwrap(), None);
        assert_eq!(md.opt_f32("f").unwrap(), Some(0.5));
        assert_eq!(md.opt_i64("neg").unwrap(), Some(-3));
        assert_eq!(md.opt_u64("x").unwrap(), Some(7));
        assert_eq!(
            md.opt_str("x").unwrap_err().to_string(),
            "key `x` is u64, expected string"
        );
    }

    #[test]
    fn insert_replaces_in_place_and_remove_reindexes() {
        let mut md = sample();
        md.insert("x", Value::String("now a string".into()));
        assert_eq!(md.keys().nth(1), Some("x"));
        assert_eq!(md.get_str("x").unwrap(), "now a string");
        assert_eq!(md.len(), 9);
        assert_eq!(md.remove("x"), Some(Value::String("now a string".into())));
        assert_eq!(md.remove("x"), None);
        assert_eq!(md.len(), 8);
        assert_eq!(md.keys().nth(1), Some("big"));
        assert_eq!(md.get_u64("big").unwrap(), 1 << 40);
        assert_eq!(md.get_str_array("toks").unwrap(), vec!["a", "b"]);
        md.insert("x", Value::U8(1));
        assert_eq!(md.keys().last(), Some("x"));
        assert!(md.contains_key("x") && !md.is_empty());
        assert!(Metadata::new().is_empty());
        let small: Metadata = [("a", Value::U8(1)), ("b", Value::Bool(true))]
            .into_iter()
            .collect();
        assert_eq!(format!("{small:?}"), r#"{"a": U8(1), "b": Bool(true)}"#);
    }
}
