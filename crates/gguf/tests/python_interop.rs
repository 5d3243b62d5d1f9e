//! Interoperability with llama.cpp's own Python package (`gguf`, gguf-py):
//! (a) a file from our writer, read by `gguf.GGUFReader` (tests/py/gguf_read.py);
//! (b) a file from `gguf.GGUFWriter` (tests/py/gguf_write.py), read by us.
//!
//! Skipped with a note when python3 or its `gguf`/`numpy` modules are missing, unless
//! `DLM_REQUIRE_PYTHON=1`, which turns the skip into a failure (CI sets it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType};
use serde_json::Value as Json;

fn python() -> String {
    std::env::var("DLM_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/py")
        .join(name)
}

/// Whether python3 with `gguf` and `numpy` is usable; prints why not (or panics when required).
fn python_ready() -> bool {
    let probe = Command::new(python())
        .args(["-c", "import gguf, numpy"])
        .output();
    let problem = match probe {
        Err(e) => format!("cannot run `{}`: {e}", python()),
        Ok(o) if !o.status.success() => {
            format!(
                "`{}` lacks the gguf/numpy modules: {}",
                python(),
                String::from_utf8_lossy(&o.stderr).trim()
            )
        }
        Ok(_) => return true,
    };
    if std::env::var("DLM_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("DLM_REQUIRE_PYTHON=1 but {problem} (pip install -r tests/py/requirements.txt)");
    }
    eprintln!("skipped: {problem} (pip install -r tests/py/requirements.txt; DLM_REQUIRE_PYTHON=1 makes this fail)");
    false
}

/// Runs a script and parses the JSON it prints.
fn run_script(name: &str, arg: &Path) -> Json {
    let out = Command::new(python())
        .arg(script(name))
        .arg(arg)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name} printed no JSON ({e})"))
}

/// gguf-py's name of a value type.
fn py_type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "UINT8",
        ValueType::I8 => "INT8",
        ValueType::U16 => "UINT16",
        ValueType::I16 => "INT16",
        ValueType::U32 => "UINT32",
        ValueType::I32 => "INT32",
        ValueType::F32 => "FLOAT32",
        ValueType::Bool => "BOOL",
        ValueType::String => "STRING",
        ValueType::Array => "ARRAY",
        ValueType::U64 => "UINT64",
        ValueType::I64 => "INT64",
        ValueType::F64 => "FLOAT64",
    }
}

fn type_from_py(name: &str) -> ValueType {
    (0..=12)
        .map(|id| ValueType::from_id(id).unwrap())
        .find(|t| py_type_name(*t) == name)
        .unwrap_or_else(|| panic!("{name}"))
}

/// The value JSON `j` of gguf-py type `ty` (arrays: element type `sub`), as one of ours.
fn value_from_json(ty: ValueType, sub: Option<ValueType>, j: &Json) -> Value {
    let int = || {
        j.as_i64()
            .map(i128::from)
            .or(j.as_u64().map(i128::from))
            .unwrap_or_else(|| panic!("{j} not an integer"))
    };
    let float = || j.as_f64().unwrap_or_else(|| panic!("{j} not a number"));
    match ty {
        ValueType::U8 => Value::U8(int() as u8),
        ValueType::I8 => Value::I8(int() as i8),
        ValueType::U16 => Value::U16(int() as u16),
        ValueType::I16 => Value::I16(int() as i16),
        ValueType::U32 => Value::U32(int() as u32),
        ValueType::I32 => Value::I32(int() as i32),
        ValueType::U64 => Value::U64(int() as u64),
        ValueType::I64 => Value::I64(int() as i64),
        ValueType::F32 => Value::F32(float() as f32),
        ValueType::F64 => Value::F64(float()),
        ValueType::Bool => Value::Bool(j.as_bool().unwrap()),
        ValueType::String => Value::String(j.as_str().unwrap().to_string()),
        ValueType::Array => {
            let sub = sub.expect("array without element type");
            Value::Array(
                sub,
                j.as_array()
                    .unwrap()
                    .iter()
                    .map(|e| value_from_json(sub, None, e))
                    .collect(),
            )
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Q8_0 bytes for `blocks` blocks: d = 0.5 (f16), qs = -16..16 shifted by the block index.
fn q8_0_bytes(blocks: usize) -> (Vec<u8>, Vec<f32>) {
    let (mut bytes, mut values) = (Vec::new(), Vec::new());
    for b in 0..blocks {
        bytes.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        for j in 0..32 {
            let q = (j - 16 + b as i32).clamp(-127, 127) as i8;
            bytes.push(q as u8);
            values.push(f32::from(q) * 0.5);
        }
    }
    (bytes, values)
}

#[test]
fn gguf_py_reads_what_we_write() {
    if !python_ready() {
        return;
    }
    let mut w = GgufWriter::new();
    for (k, v) in sample_metadata() {
        w.add(k, v).unwrap();
    }
    w.add_tensor("norm.weight", &[5], GgmlType::F32).unwrap();
    w.add_tensor("embd.weight", &[3, 7], GgmlType::F16).unwrap();
    w.add_tensor("q8.weight", &[64, 2], GgmlType::Q8_0).unwrap();
    w.add_tensor("tq2.weight", &[256, 1, 2], GgmlType::TQ2_0)
        .unwrap();
    let f32_values = [1.0f32, -2.5, 0.0, 1e-7, 65504.0];
    let f16_values: Vec<f32> = (0..21).map(|i| i as f32 * 0.25 - 2.0).collect();
    let (q8, q8_values) = q8_0_bytes(4);
    let tq2 = pattern(3, 132);
    let data: Vec<Vec<u8>> = vec![
        f32_values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        f16_values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        q8,
        tq2,
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    w.write_file(&path, |i, _, out| out.write_all(&data[i]))
        .unwrap();

    let py = run_script("gguf_read.py", &path);
    assert_eq!(py["version"], 3);
    assert_eq!(py["alignment"], 32);
    let ours = GgufFile::open(&path).unwrap();
    assert_eq!(py["data_offset"], ours.data_offset());

    let kv = py["kv"].as_array().unwrap();
    let expected = sample_metadata();
    assert_eq!(kv.len(), expected.len());
    for (entry, (key, value)) in kv.iter().zip(&expected) {
        assert_eq!(entry["key"], key.as_str(), "key order");
        assert_eq!(entry["type"], py_type_name(value.value_type()), "{key}");
        let sub = entry["sub_type"].as_str().map(type_from_py);
        if let Value::Array(elem, items) = value {
            if items.is_empty() {
                // gguf-py records an array's element type only from its first element.
                assert_eq!(
                    (sub, &entry["value"]),
                    (None, &serde_json::json!([])),
                    "{key}"
                );
                continue;
            }
            assert_eq!(sub, Some(*elem), "{key}");
        }
        let theirs = value_from_json(value.value_type(), sub, &entry["value"]);
        assert_eq!(&theirs, value, "{key}");
    }

    let tensors = py["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 4);
    for (i, (t, mine)) in tensors.iter().zip(w.tensors()).enumerate() {
        assert_eq!(t["name"], mine.name.as_str());
        assert_eq!(t["type_id"], mine.ggml_type.0, "{}", mine.name);
        assert_eq!(t["shape"], serde_json::json!(mine.dims), "{}", mine.name);
        assert_eq!(t["n_bytes"], mine.n_bytes, "{}", mine.name);
        assert_eq!(t["offset"], mine.offset, "{}", mine.name);
        assert_eq!(t["data_hex"], hex(&data[i]), "{}", mine.name);
    }
    let dequant = |i: usize| -> Vec<f32> {
        tensors[i]["dequant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    assert_eq!(dequant(0), f32_values);
    assert_eq!(dequant(1), f16_values);
    assert_eq!(
        dequant(2),
        q8_values,
        "gguf-py dequantizes our Q8_0 blocks to the intended values"
    );
    assert_eq!(dequant(3).len(), 512);
}

#[test]
fn we_read_what_gguf_py_writes() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("theirs.gguf");
    let manifest = run_script("gguf_write.py", &path);
    let f = GgufFile::open(&path).unwrap();

    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(manifest["alignment"], 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.architecture().unwrap(), "llama");

    // Every key, in order, with its exact type and value.
    let kv = manifest["kv"].as_array().unwrap();
    assert_eq!(f.metadata.len(), kv.len());
    for ((key, value), entry) in f.metadata.iter().zip(kv) {
        let e = entry.as_array().unwrap();
        assert_eq!(key, e[0].as_str().unwrap(), "key order");
        let ty = type_from_py(e[1].as_str().unwrap());
        let sub = e[2].as_str().map(type_from_py);
        assert_eq!(value.value_type(), ty, "{key}");
        assert_eq!(value, &value_from_json(ty, sub, &e[3]), "{key}");
    }
    // Spot checks written independently of the manifest.
    let md = &f.metadata;
    assert_eq!(md.get("general.alignment"), Some(&Value::U32(64)));
    assert_eq!(md.get("py.u8"), Some(&Value::U8(250)));
    assert_eq!(md.get("py.i16"), Some(&Value::I16(-32000)));
    assert_eq!(md.get("py.f32"), Some(&Value::F32(0.1)));
    assert_eq!(md.get("py.u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(md.get("py.i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(md.get_str("py.string").unwrap(), "grüße ✓ \0 nul inside");
    assert_eq!(
        md.get_str_array("py.tokens").unwrap(),
        ["<unk>", "<s>", "</s>", "▁the", "|<MASK>|"]
    );
    assert_eq!(md.get_f32_array("py.scores").unwrap(), [0.0, -1.5, 3.25]);
    assert_eq!(md.get("py.token_type").unwrap().type_name(), "array<i32>");
    assert_eq!(md.get_u32_array("py.ids").unwrap(), [151645, 151643]);
    assert_eq!(
        md.get("py.flags").unwrap(),
        &Value::Array(
            ValueType::Bool,
            vec![Value::Bool(true), Value::Bool(false), Value::Bool(true)]
        )
    );

    // Tensors: names, ggml dims, types, offsets aligned to 64, bytes.
    let tensors = manifest["tensors"].as_array().unwrap();
    assert_eq!(f.tensors.len(), tensors.len());
    let mut expected_offset = 0;
    for (t, m) in f.tensors.iter().zip(tensors) {
        let m = m.as_array().unwrap();
        assert_eq!(t.name, m[0].as_str().unwrap());
        assert_eq!(t.ggml_type.0 as u64, m[1].as_u64().unwrap(), "{}", t.name);
        assert_eq!(serde_json::json!(t.dims), m[2], "{}", t.name);
        assert_eq!(hex(f.tensor_data(t)), m[3].as_str().unwrap(), "{}", t.name);
        assert_eq!(t.offset, expected_offset, "{}", t.name);
        expected_offset = (t.offset + t.n_bytes).next_multiple_of(64);
    }
    let names: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.ggml_type, t.dims.clone(), t.n_bytes))
        .collect();
    assert_eq!(
        names,
        [
            ("f32.weight", GgmlType::F32, vec![3, 2], 24),
            ("f16.weight", GgmlType::F16, vec![8, 4], 64),
            ("i32.weight", GgmlType::I32, vec![3], 12),
            ("q8.weight", GgmlType::Q8_0, vec![64, 2], 136),
            ("tq2.weight", GgmlType::TQ2_0, vec![256, 1], 66),
        ]
    );
    let f32s: Vec<f32> = f
        .tensor_data(&f.tensors[0])
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(f32s, [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]);
    let f16s: Vec<f32> = f
        .tensor_data(&f.tensors[1])
        .chunks(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(f16s[..3], [-2.0, -1.875, -1.75]);

    // And our writer reproduces their file byte for byte from what we read.
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata.iter() {
        w.add(k, v.clone()).unwrap();
    }
    for t in &f.tensors {
        w.add_tensor(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    let mut out = Vec::new();
    w.write(&mut out, |_, t, o| o.write_all(f.tensor_data(t)))
        .unwrap();
    assert!(
        out == std::fs::read(&path).unwrap(),
        "rewrite differs from gguf-py's file"
    );
}
