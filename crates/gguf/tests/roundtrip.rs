//! Writer → reader round trips: values and their types, key order, tensor directory, offsets,
//! alignment, data bytes; the writer's refusals; atomic `write_file`.

mod common;

use std::io::{self, Write};
use std::path::Path;

use common::*;
use gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType};

#[test]
fn every_value_type_round_trips_with_order_and_type() {
    let bytes = small_file();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    let expected = sample_metadata();
    let got: Vec<(String, Value)> = f
        .metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(got, expected);
    // Types are kept exactly: a u32 stays a u32, an empty u32 array stays array<u32>.
    assert_eq!(f.metadata.get("t.u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(
        f.metadata.get("t.arr_empty").unwrap().type_name(),
        "array<u32>"
    );
    assert_eq!(
        f.metadata.get_str_array("t.arr_str").unwrap(),
        vec!["<s>", "", "▁the", "\n"]
    );
    assert!(!f.metadata.contains_key("general.alignment"));
    assert_eq!(f.metadata, *sample_writer().metadata());
}

#[test]
fn tensor_directory_offsets_and_data_round_trip() {
    let w = sample_writer();
    let bytes = write_to_vec(&w);
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.tensors, w.tensors());
    let expect = [
        ("norm.weight", vec![5], GgmlType::F32, 20),
        ("embd.weight", vec![3, 7], GgmlType::F16, 42),
        ("q8.weight", vec![64, 2], GgmlType::Q8_0, 136),
        ("tq2.weight", vec![256, 1, 2], GgmlType::TQ2_0, 132),
        ("i2s.weight", vec![128, 2, 1, 1], GgmlType::I2_S, 96),
    ];
    let mut offset = 0;
    for (i, (name, dims, ty, n_bytes)) in expect.into_iter().enumerate() {
        let t = &f.tensors[i];
        assert_eq!(
            (t.name.as_str(), &t.dims, t.ggml_type, t.n_bytes),
            (name, &dims, ty, n_bytes)
        );
        assert_eq!(
            t.offset, offset,
            "{name}: offsets are contiguous, each rounded up to 32"
        );
        offset = (offset + n_bytes).next_multiple_of(32);
        assert_eq!(f.tensor_data(t), pattern(i, n_bytes).as_slice(), "{name}");
        assert_eq!(f.tensor(name), Some(t));
    }
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.file_size(), bytes.len() as u64);
    // Every tensor, the last one included, is padded to the alignment with zeros.
    assert_eq!(f.file_size(), f.data_offset() + offset);
    let mut padding = 0;
    for (t, next) in f
        .tensors
        .iter()
        .zip(f.tensors.iter().skip(1).map(|t| t.offset).chain([offset]))
    {
        let gap = &bytes
            [(f.data_offset() + t.offset + t.n_bytes) as usize..(f.data_offset() + next) as usize];
        assert!(gap.iter().all(|&b| b == 0), "{}", t.name);
        padding += gap.len();
    }
    assert_eq!(padding, 12 + 22 + 24 + 28);
    assert_eq!(f.n_elements_of("q8.weight"), 128);
    let f2 = GgufFile::parse(&bytes).unwrap();
    assert_eq!(
        (f2.data_offset, f2.alignment, f2.version),
        (f.data_offset(), 32, 3)
    );
    assert_eq!(f2.tensors, f.tensors);
}

trait ElementsOf {
    fn n_elements_of(&self, name: &str) -> u64;
}
impl ElementsOf for GgufFile {
    fn n_elements_of(&self, name: &str) -> u64 {
        self.tensor(name).unwrap().n_elements()
    }
}

#[test]
fn non_default_alignment_round_trips() {
    for align in [8u32, 64, 128, 4096] {
        let mut w = sample_writer();
        w.set_alignment(align).unwrap();
        assert_eq!(w.alignment(), align);
        let f = GgufFile::from_bytes(write_to_vec(&w)).unwrap();
        assert_eq!(f.alignment, u64::from(align));
        assert_eq!(
            f.metadata.get("general.alignment"),
            Some(&Value::U32(align))
        );
        assert_eq!(
            f.metadata.keys().last(),
            Some("general.alignment"),
            "appended after the existing keys"
        );
        assert_eq!(f.data_offset() % u64::from(align), 0);
        let mut offset = 0;
        for (i, t) in f.tensors.iter().enumerate() {
            assert_eq!(t.offset, offset, "align {align}, {}", t.name);
            offset = (offset + t.n_bytes).next_multiple_of(u64::from(align));
            assert_eq!(f.tensor_data(t), pattern(i, t.n_bytes).as_slice());
        }
        assert_eq!(f.file_size(), f.data_offset() + offset);
    }
    // Back to 32: the key goes away again, offsets follow.
    let mut w = sample_writer();
    w.set_alignment(64).unwrap();
    w.set_alignment(32).unwrap();
    assert!(!w.metadata().contains_key("general.alignment"));
    assert_eq!(w.tensors()[1].offset, 32);
    assert_eq!(write_to_vec(&w), small_file());
}

#[test]
fn alignment_added_as_a_key_keeps_its_place() {
    let mut w = GgufWriter::new();
    w.add("general.alignment", Value::U32(32)).unwrap();
    w.add("general.architecture", Value::String("llama".into()))
        .unwrap();
    w.add_tensor("a", &[3], GgmlType::F32).unwrap();
    w.add_tensor("b", &[3], GgmlType::F32).unwrap();
    let f = GgufFile::from_bytes(write_to_vec(&w)).unwrap();
    assert_eq!(
        f.metadata.keys().collect::<Vec<_>>(),
        ["general.alignment", "general.architecture"]
    );
    assert_eq!(f.tensors[1].offset, 32);

    let mut w = GgufWriter::new();
    w.add_tensor("a", &[3], GgmlType::F32).unwrap();
    w.add_tensor("b", &[3], GgmlType::F32).unwrap();
    w.add("general.alignment", Value::U32(16)).unwrap();
    assert_eq!(
        w.tensors()[1].offset,
        16,
        "offsets follow an alignment set after the tensors"
    );
    let f = GgufFile::from_bytes(write_to_vec(&w)).unwrap();
    assert_eq!((f.alignment, f.tensors[1].offset), (16, 16));

    let mut w = GgufWriter::new();
    let e = w.add("general.alignment", Value::U64(64)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "key `general.alignment` is u64, expected u32"
    );
    let e = w.add("general.alignment", Value::U32(48)).unwrap_err();
    assert!(
        matches!(e, GgufError::BadAlignment { value: 48, .. }),
        "{e}"
    );
    assert!(w.metadata().is_empty() && w.alignment() == 32);
}

#[test]
fn bad_alignments_are_refused() {
    let mut w = GgufWriter::new();
    for bad in [0u32, 1, 2, 4, 12, 24, 100] {
        let e = w.set_alignment(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "bad alignment {bad}: the alignment must be a power of two and a multiple of 8"
            )
        );
    }
    assert_eq!(w.alignment(), 32);
}

#[test]
fn writer_refusals() {
    let mut w = GgufWriter::new();
    w.add("a", Value::U8(1)).unwrap();
    assert!(matches!(w.add("a", Value::U8(2)), Err(GgufError::DuplicateKey(k)) if k == "a"));
    assert_eq!(w.metadata().get("a"), Some(&Value::U8(1)));
    let e = w
        .add("nested", Value::Array(ValueType::Array, vec![]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "key `nested`: nested arrays are not supported"
    );
    let e = w
        .add(
            "mixed",
            Value::Array(ValueType::U32, vec![Value::U32(1), Value::I32(2)]),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "key `mixed`: array element 1 is i32, but the array holds u32"
    );
    assert!(matches!(
        w.add("", Value::U8(0)),
        Err(GgufError::InvalidKey { .. })
    ));
    assert!(matches!(
        w.add("k".repeat(65536), Value::U8(0)),
        Err(GgufError::InvalidKey { .. })
    ));
    w.add("k".repeat(65535), Value::U8(0)).unwrap();

    w.add_tensor("t", &[32], GgmlType::Q8_0).unwrap();
    assert!(
        matches!(w.add_tensor("t", &[32], GgmlType::F32), Err(GgufError::DuplicateTensor(n)) if n == "t")
    );
    let e = w
        .add_tensor("five", &[1, 1, 1, 1, 1], GgmlType::F32)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `five` has 5 dimensions; at most 4 are allowed"
    );
    assert!(matches!(
        w.add_tensor("none", &[], GgmlType::F32),
        Err(GgufError::NoDims { .. })
    ));
    let e = w.add_tensor("q", &[33, 2], GgmlType::Q8_0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `q`: row length 33 is not a multiple of the Q8_0 block size 32"
    );
    let e = w
        .add_tensor(&"n".repeat(64), &[1], GgmlType::F32)
        .unwrap_err();
    assert!(matches!(e, GgufError::InvalidTensorName { .. }), "{e}");
    w.add_tensor(&"n".repeat(63), &[1], GgmlType::F32).unwrap();
    assert!(matches!(
        w.add_tensor("", &[1], GgmlType::F32),
        Err(GgufError::InvalidTensorName { .. })
    ));
    let e = w.add_tensor("u", &[1], GgmlType(1000)).unwrap_err();
    assert_eq!(e.to_string(), "tensor `u` has unknown ggml type id 1000");
    let e = w
        .add_tensor("big", &[1 << 40, 1 << 40], GgmlType::F32)
        .unwrap_err();
    assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e}");
    // Refusals leave no trace.
    assert_eq!(
        w.tensors().iter().map(|t| t.name.len()).collect::<Vec<_>>(),
        [1, 63]
    );
}

#[test]
fn type_39_is_refused_in_bitnet_files_whatever_the_order() {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("bitnet-b1.58".into()))
        .unwrap();
    let e = w
        .add_tensor("blk.0.ffn_up.weight", &[256, 4], GgmlType::MXFP4)
        .unwrap_err();
    assert!(matches!(e, GgufError::Tl2NotSupported { .. }), "{e}");
    assert!(e.to_string().contains("re-convert to I2_S"));
    w.add_tensor("blk.0.ffn_up.weight", &[256, 4], GgmlType::I2_S)
        .unwrap();

    let mut w = GgufWriter::new();
    w.add_tensor("x", &[64], GgmlType::MXFP4).unwrap();
    let e = w
        .add("general.architecture", Value::String("bitnet".into()))
        .unwrap_err();
    assert!(
        matches!(e, GgufError::Tl2NotSupported { ref tensor } if tensor == "x"),
        "{e}"
    );
    assert!(!w.metadata().contains_key("general.architecture"));
    // Elsewhere 39 is MXFP4: 32 elements in 17 bytes.
    w.add("general.architecture", Value::String("gpt-oss".into()))
        .unwrap();
    assert_eq!(w.tensors()[0].n_bytes, 34);
    let f = GgufFile::from_bytes(write_to_vec(&w)).unwrap();
    assert_eq!(f.tensors[0].ggml_type, GgmlType::MXFP4);
}

#[test]
fn data_callback_must_write_exactly_n_bytes() {
    let w = sample_writer();
    let mut out = Vec::new();
    let e = w
        .write(&mut out, |i, t, o| {
            o.write_all(&pattern(i, t.n_bytes - u64::from(i == 2)))
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `q8.weight`: the data callback wrote 135 bytes, expected exactly 136"
    );

    let e = w
        .write(io::sink(), |i, t, o| {
            o.write_all(&pattern(i, t.n_bytes))?;
            if i == 1 {
                o.write_all(&[1, 2, 3])?;
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `embd.weight`: the data callback wrote 45 bytes, expected exactly 42"
    );

    // Many small writes are fine.
    let mut out = Vec::new();
    w.write(&mut out, |i, t, o| {
        pattern(i, t.n_bytes)
            .iter()
            .try_for_each(|b| o.write_all(&[*b]))
    })
    .unwrap();
    assert_eq!(out, small_file());

    let e = w
        .write(io::sink(), |i, _, _| {
            if i == 3 {
                Err(io::Error::other("codec refused"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    // Tensor 0 wrote nothing: that is reported first.
    assert!(
        matches!(e, GgufError::DataSizeMismatch { ref tensor, written: 0, .. } if tensor == "norm.weight"),
        "{e}"
    );
    let e = w
        .write(io::sink(), |i, t, o| {
            if i == 3 {
                Err(io::Error::other("codec refused"))
            } else {
                o.write_all(&pattern(i, t.n_bytes))
            }
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `tq2.weight`: producing its data failed: codec refused"
    );
}

/// A sink that fails after `left` bytes.
struct Failing {
    left: usize,
}
impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn sink_errors_are_write_errors() {
    let w = sample_writer();
    let total = small_file().len();
    for left in [0, 10, 1000, total - 1] {
        let e = w
            .write(Failing { left }, |i, t, o| {
                o.write_all(&pattern(i, t.n_bytes))
            })
            .unwrap_err();
        assert!(matches!(e, GgufError::Write(_)), "left {left}: {e}");
        assert!(e.to_string().contains("disk full"), "{e}");
    }
    w.write(Failing { left: total }, |i, t, o| {
        o.write_all(&pattern(i, t.n_bytes))
    })
    .unwrap();
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    v.sort();
    v
}

#[test]
fn write_file_is_atomic_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let w = sample_writer();
    w.write_file(&path, |i, t, o| o.write_all(&pattern(i, t.n_bytes)))
        .unwrap();
    assert_eq!(dir_entries(dir.path()), ["model.gguf"]);
    assert_eq!(std::fs::read(&path).unwrap(), small_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.metadata, *w.metadata());
    assert_eq!(f.tensor_data(&f.tensors[2]), pattern(2, 136).as_slice());
    assert!(format!("{f:?}").contains("residency: Some(Mapped)"));

    // A failing callback: the old file stays, no temporary file is left behind.
    let e = w
        .write_file(&path, |i, t, o| {
            if i == 4 {
                Err(io::Error::other("boom"))
            } else {
                o.write_all(&vec![0; t.n_bytes as usize])
            }
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `i2s.weight`: producing its data failed: boom"
    );
    assert_eq!(dir_entries(dir.path()), ["model.gguf"]);
    assert_eq!(std::fs::read(&path).unwrap(), small_file());

    // A callback that panics: same.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.write_file(&path, |_, _, _| panic!("codec bug")).ok();
    }));
    assert!(r.is_err());
    assert_eq!(dir_entries(dir.path()), ["model.gguf"]);

    // Replacing works; a fresh path in a missing directory is an Io error naming it.
    let mut w2 = GgufWriter::new();
    w2.add("general.architecture", Value::String("qwen2".into()))
        .unwrap();
    w2.write_file(&path, |_, _, _| Ok(())).unwrap();
    assert_eq!(
        GgufFile::open(&path).unwrap().architecture().unwrap(),
        "qwen2"
    );
    let missing = dir.path().join("no/such/dir/m.gguf");
    let e = w2.write_file(&missing, |_, _, _| Ok(())).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
    assert!(e.to_string().contains("no/such/dir"), "{e}");
    assert_eq!(dir_entries(dir.path()), ["model.gguf"]);
}

#[test]
fn open_reports_the_path() {
    let e = GgufFile::open(Path::new("/nonexistent/x.gguf")).unwrap_err();
    assert!(matches!(e, GgufError::Io { action: "open", .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("cannot open `/nonexistent/x.gguf`: "),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err();
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                offset: 0,
                needed: 4,
                available: 0,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn empty_file_without_tensors() {
    let w = GgufWriter::new();
    let bytes = write_to_vec(&w);
    assert_eq!(bytes.len(), 32, "24-byte header padded to 32");
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert!(f.metadata.is_empty() && f.tensors.is_empty());
    assert_eq!(f.data_offset(), 32);
    assert!(matches!(f.architecture(), Err(GgufError::MissingKey(_))));
}

#[test]
fn zero_sized_tensors() {
    let mut w = GgufWriter::new();
    w.add_tensor("empty", &[4, 0], GgmlType::F32).unwrap();
    w.add_tensor("after", &[2], GgmlType::F16).unwrap();
    let f = GgufFile::from_bytes(write_to_vec(&w)).unwrap();
    assert_eq!(
        (
            f.tensors[0].n_bytes,
            f.tensors[0].n_elements(),
            f.tensors[1].offset
        ),
        (0, 0, 0)
    );
    assert_eq!(f.tensor_data(&f.tensors[0]), &[] as &[u8]);
    assert_eq!(f.tensor_data(&f.tensors[1]), pattern(1, 4).as_slice());
}

#[test]
fn foreign_tensor_info_gives_an_empty_slice() {
    let f = GgufFile::from_bytes(small_file()).unwrap();
    let mut t = f.tensors[0].clone();
    t.offset = u64::MAX - 3;
    assert!(f.tensor_data(&t).is_empty());
    t.offset = 0;
    t.n_bytes = f.file_size();
    assert!(f.tensor_data(&t).is_empty());
}

/// Reading a llama.cpp-written file and writing it back with the same metadata, directory and
/// tensor bytes gives the same file, byte for byte.
#[test]
fn rewriting_the_third_party_fixture_is_byte_identical() {
    let Some(orig) = fixture_bytes() else { return };
    let f = GgufFile::from_bytes(orig.clone()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata.iter() {
        w.add(k, v.clone()).unwrap();
    }
    for t in &f.tensors {
        w.add_tensor(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    assert_eq!(w.tensors(), f.tensors.as_slice());
    let mut out = Vec::new();
    w.write(&mut out, |_, t, o| o.write_all(f.tensor_data(t)))
        .unwrap();
    assert_eq!(out.len(), orig.len());
    assert!(
        out == orig,
        "first difference at byte {:?}",
        out.iter().zip(&orig).position(|(a, b)| a != b)
    );
}

/// A file big enough for a huge-page buffer (over 2 MiB), opened mapped and read into huge
/// pages: the same header, the same tensor bytes, each telling where its bytes live; a truncated
/// copy gives the same error both ways.
#[test]
fn mapped_and_huge_page_opens_agree() {
    use gguf::Residency;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    let mut w = sample_writer();
    w.add_tensor("big.weight", &[1024, 768], GgmlType::F32)
        .unwrap();
    w.write_file(&path, |i, t, o| o.write_all(&pattern(i, t.n_bytes)))
        .unwrap();
    let mapped = GgufFile::open_as(&path, Residency::Mapped).unwrap();
    let resident = GgufFile::open_as(&path, Residency::HugePages).unwrap();
    assert_eq!(mapped.residency(), Some(Residency::Mapped));
    assert_eq!(resident.residency(), Some(Residency::HugePages));
    assert_eq!(
        GgufFile::open(&path).unwrap().residency(),
        Some(Residency::Mapped)
    );
    assert!(resident.file_size() > 3 << 20);
    assert_eq!(mapped.metadata, resident.metadata);
    assert_eq!(mapped.tensors, resident.tensors);
    for (i, t) in resident.tensors.iter().enumerate() {
        let data = resident.tensor_data(t);
        assert_eq!(data, mapped.tensor_data(t), "{}", t.name);
        assert_eq!(data, pattern(i, t.n_bytes), "{}", t.name);
        // Offsets keep their alignment in memory, as in a mapping.
        assert_eq!(data.as_ptr() as u64 % resident.alignment, 0, "{}", t.name);
    }

    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let e1 = GgufFile::open_as(&cut, Residency::Mapped).err().unwrap();
    let e2 = GgufFile::open_as(&cut, Residency::HugePages).err().unwrap();
    assert!(matches!(e2, GgufError::TensorOutOfBounds { .. }), "{e2}");
    assert_eq!(e1.to_string(), e2.to_string());
    let missing = GgufFile::open_as(&dir.path().join("none.gguf"), Residency::HugePages);
    assert!(missing.err().unwrap().to_string().contains("none.gguf"));
}
