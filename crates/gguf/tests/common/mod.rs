//! Helpers shared by the integration tests: the third-party fixture, a small file written by our
//! writer, and a raw byte builder for files no writer would produce.
#![allow(dead_code)]

use std::path::PathBuf;

use gguf::{GgmlType, GgufWriter, Value, ValueType};

/// The llama.cpp-written fixture (see its README).
pub fn fixture_path() -> PathBuf {
    PathBuf::from("/work/shared/fixtures/third-party/llama-2-tiny-random.gguf")
}

/// The fixture's bytes, or `None` (with a note) where the shared fixtures are not mounted.
pub fn fixture_bytes() -> Option<Vec<u8>> {
    match std::fs::read(fixture_path()) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("skipped: {} not readable: {e}", fixture_path().display());
            None
        }
    }
}

/// Deterministic tensor bytes: byte `j` of tensor `i` is `(i * 31 + j * 7) as u8`.
pub fn pattern(i: usize, n: u64) -> Vec<u8> {
    (0..n).map(|j| (i as u64 * 31 + j * 7) as u8).collect()
}

/// A writer holding one value of every type, arrays of every element type, and tensors of
/// several types (F32, F16, Q8_0, TQ2_0, I2_S) with a 1-D, 2-D, 3-D and 4-D shape.
pub fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in sample_metadata() {
        w.add(k, v).unwrap();
    }
    w.add_tensor("norm.weight", &[5], GgmlType::F32).unwrap();
    w.add_tensor("embd.weight", &[3, 7], GgmlType::F16).unwrap();
    w.add_tensor("q8.weight", &[64, 2], GgmlType::Q8_0).unwrap();
    w.add_tensor("tq2.weight", &[256, 1, 2], GgmlType::TQ2_0)
        .unwrap();
    w.add_tensor("i2s.weight", &[128, 2, 1, 1], GgmlType::I2_S)
        .unwrap();
    w
}

/// Every value type once, in a fixed order.
pub fn sample_metadata() -> Vec<(String, Value)> {
    let s = |x: &str| Value::String(x.to_string());
    vec![
        ("general.architecture".into(), s("llama")),
        ("t.u8".into(), Value::U8(200)),
        ("t.i8".into(), Value::I8(-100)),
        ("t.u16".into(), Value::U16(60000)),
        ("t.i16".into(), Value::I16(-30000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.f32".into(), Value::F32(-1.5e-5)),
        ("t.bool_true".into(), Value::Bool(true)),
        ("t.bool_false".into(), Value::Bool(false)),
        ("t.string".into(), s("héllo wörld ✓")),
        ("t.empty_string".into(), s("")),
        ("t.u64".into(), Value::U64(u64::MAX)),
        ("t.i64".into(), Value::I64(i64::MIN)),
        ("t.f64".into(), Value::F64(std::f64::consts::PI)),
        (
            "t.arr_str".into(),
            Value::Array(ValueType::String, vec![s("<s>"), s(""), s("▁the"), s("\n")]),
        ),
        (
            "t.arr_u8".into(),
            Value::Array(ValueType::U8, vec![Value::U8(0), Value::U8(255)]),
        ),
        (
            "t.arr_i8".into(),
            Value::Array(ValueType::I8, vec![Value::I8(-128), Value::I8(127)]),
        ),
        (
            "t.arr_u16".into(),
            Value::Array(ValueType::U16, vec![Value::U16(1), Value::U16(65535)]),
        ),
        (
            "t.arr_i16".into(),
            Value::Array(ValueType::I16, vec![Value::I16(-1)]),
        ),
        (
            "t.arr_u32".into(),
            Value::Array(ValueType::U32, vec![Value::U32(151645), Value::U32(151643)]),
        ),
        (
            "t.arr_i32".into(),
            Value::Array(
                ValueType::I32,
                vec![Value::I32(-7), Value::I32(1), Value::I32(3)],
            ),
        ),
        (
            "t.arr_f32".into(),
            Value::Array(ValueType::F32, vec![Value::F32(0.25), Value::F32(-1e30)]),
        ),
        (
            "t.arr_bool".into(),
            Value::Array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
        ),
        (
            "t.arr_u64".into(),
            Value::Array(ValueType::U64, vec![Value::U64(1 << 40)]),
        ),
        (
            "t.arr_i64".into(),
            Value::Array(ValueType::I64, vec![Value::I64(-(1 << 40))]),
        ),
        (
            "t.arr_f64".into(),
            Value::Array(ValueType::F64, vec![Value::F64(1e-300)]),
        ),
        ("t.arr_empty".into(), Value::Array(ValueType::U32, vec![])),
    ]
}

/// Writes `w` to memory with [`pattern`] data.
pub fn write_to_vec(w: &GgufWriter) -> Vec<u8> {
    let mut out = Vec::new();
    w.write(&mut out, |i, t, o| o.write_all(&pattern(i, t.n_bytes)))
        .unwrap();
    out
}

/// A small valid file from our writer.
pub fn small_file() -> Vec<u8> {
    write_to_vec(&sample_writer())
}

/// Builds GGUF bytes field by field, valid or not.
#[derive(Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// `GGUF`, the version, tensor count and kv count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A length-prefixed string of arbitrary bytes.
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A `u32` metadata entry.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }
    /// A string metadata entry.
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key.as_bytes()).u32(8).str(v.as_bytes())
    }
    /// A tensor directory entry.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zeros up to a multiple of `align`, then `n` data bytes.
    pub fn data(&mut self, align: usize, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self.0.extend(std::iter::repeat_n(0xabu8, n));
        self
    }
    pub fn build(&self) -> Vec<u8> {
        self.0.clone()
    }
}
