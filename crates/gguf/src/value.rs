//! Metadata values: the 13 GGUF value types and a value of any of them.
//!
//! The type is part of the data: a `u32` read from a file stays a `u32` when written back, so a
//! rewritten file can be byte-identical to its source.

use std::fmt;

/// The type id stored before every metadata value (and inside arrays, before their elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    /// `u8`, id 0.
    U8 = 0,
    /// `i8`, id 1.
    I8 = 1,
    /// `u16`, id 2.
    U16 = 2,
    /// `i16`, id 3.
    I16 = 3,
    /// `u32`, id 4.
    U32 = 4,
    /// `i32`, id 5.
    I32 = 5,
    /// `f32`, id 6.
    F32 = 6,
    /// `bool` (one byte, 0 or 1), id 7.
    Bool = 7,
    /// UTF-8 string (`u64` length, then the bytes), id 8.
    String = 8,
    /// Array (`u32` element type, `u64` count, elements), id 9.
    Array = 9,
    /// `u64`, id 10.
    U64 = 10,
    /// `i64`, id 11.
    I64 = 11,
    /// `f64`, id 12.
    F64 = 12,
}

impl ValueType {
    /// The type with this id, or `None` for an id outside 0..=12.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The id stored in files.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Lower-case name used in messages: `"u32"`, `"string"`, `"array"`.
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes in a file (without its type id): the
    /// scalar's size, 8 for a string (its length), 12 for an array (element type and count).
    /// Used to bound counts read from a file before anything is allocated.
    pub fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array: the element type, then the elements, each of that type (never an array).
    Array(ValueType, Vec<Value>),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl Value {
    /// The value's type ([`ValueType::Array`] for any array).
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The type as messages show it: `"u32"`, `"string"`, `"array<string>"`.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(elem, _) => format!("array<{}>", elem.name()),
            other => other.value_type().name().to_string(),
        }
    }

    /// Any integer value, widened (`None` for floats, bools, strings and arrays).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// An integer value of any type that fits in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// An integer value of any type that fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// An `f32` or `f64` value, as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// A `bool` value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array's element type and elements.
    pub fn as_array(&self) -> Option<(ValueType, &[Value])> {
        match self {
            Value::Array(t, items) => Some((*t, items)),
            _ => None,
        }
    }
}

/// Numbers plainly, strings quoted and escaped, arrays as `[a, b, c, … (N elements)]` showing at
/// most 8 elements.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Array(_, items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() > SHOWN {
                    write!(f, ", … ({} elements)", items.len())?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_round_trip_and_stop_at_12() {
        for id in 0..=12 {
            assert_eq!(ValueType::from_id(id).unwrap().id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(ValueType::from_id(u32::MAX), None);
    }

    #[test]
    fn type_names() {
        assert_eq!(Value::U32(1).type_name(), "u32");
        assert_eq!(Value::String("a".into()).type_name(), "string");
        assert_eq!(
            Value::Array(ValueType::String, vec![]).type_name(),
            "array<string>"
        );
        assert_eq!(
            Value::Array(ValueType::F32, vec![Value::F32(1.0)]).value_type(),
            ValueType::Array
        );
    }

    #[test]
    fn integer_widening_checks_range() {
        assert_eq!(Value::I8(-1).as_u64(), None);
        assert_eq!(Value::I8(-1).as_i64(), Some(-1));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::F32(1.5).as_f64(), Some(1.5));
    }

    #[test]
    fn display_abbreviates_long_arrays() {
        let arr = Value::Array(ValueType::U8, (0..10).map(Value::U8).collect());
        assert_eq!(arr.to_string(), "[0, 1, 2, 3, 4, 5, 6, 7, … (10 elements)]");
        assert_eq!(Value::String("a\"b".into()).to_string(), "\"a\\\"b\"");
    }
}
