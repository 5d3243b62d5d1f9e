//! Files no correct writer produces: each must give the precise error, never a panic or a huge
//! allocation.

mod common;

use common::*;
use gguf::{
    GgmlType, GgufError, GgufFile, MAX_ARRAY_LEN, MAX_KV_COUNT, MAX_NAME_LEN, MAX_STRING_LEN,
    MAX_TENSOR_COUNT,
};

fn err(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("expected an error, got {f:?}"),
        Err(e) => e,
    }
}

/// A file with `kv` metadata entries (pre-encoded) and one F32 tensor `[4]` at `offset`.
fn one_tensor(
    kv_count: u64,
    kvs: &[u8],
    name: &str,
    dims: &[u64],
    ty: u32,
    offset: u64,
) -> Vec<u8> {
    let mut r = Raw::header(3, 1, kv_count);
    r.bytes(kvs).tensor(name, dims, ty, offset).data(32, 16);
    r.build()
}

#[test]
fn every_prefix_of_a_valid_file_is_an_error() {
    let bytes = small_file();
    let full = GgufFile::from_bytes(bytes.clone()).unwrap();
    for len in 0..bytes.len() {
        let e = match std::panic::catch_unwind(|| GgufFile::from_bytes(bytes[..len].to_vec())) {
            Ok(Ok(_)) => panic!("prefix of {len} bytes parsed"),
            Ok(Err(e)) => e,
            Err(_) => panic!("prefix of {len} bytes panicked"),
        };
        if len as u64 >= full.data_offset() {
            assert!(
                matches!(e, GgufError::TensorOutOfBounds { .. }),
                "len {len}: {e}"
            );
        } else {
            assert!(
                matches!(
                    e,
                    GgufError::Truncated { .. } | GgufError::TensorOutOfBounds { .. }
                ),
                "len {len}: {e}"
            );
        }
        if len < 24 {
            assert!(
                matches!(e, GgufError::Truncated { offset, .. } if offset <= len as u64),
                "len {len}: {e}"
            );
        }
    }
    let e = err(bytes[..30].to_vec());
    assert_eq!(
        e.to_string(),
        "file truncated while reading 28 × metadata key/value (at least 13 bytes each) at offset 24: 364 bytes needed, 6 left"
    );
}

#[test]
fn wrong_magic() {
    let mut b = small_file();
    b[..4].copy_from_slice(b"GGML");
    let e = err(b);
    assert!(matches!(
        e,
        GgufError::BadMagic {
            found: [b'G', b'G', b'M', b'L']
        }
    ));
    assert_eq!(
        e.to_string(),
        "not a GGUF file: it starts with 47 47 4d 4c (\"GGML\"), expected \"GGUF\" (47 47 55 46)"
    );
    let e = err(vec![0x7f, b'E', b'L', b'F', 0, 0, 0, 0]);
    assert!(e.to_string().contains("7f 45 4c 46 (\".ELF\")"), "{e}");
}

#[test]
fn versions() {
    let e = err(Raw::header(1, 0, 0).build());
    assert!(matches!(e, GgufError::UnsupportedVersion(1)));
    assert_eq!(
        e.to_string(),
        "unsupported GGUF version 1: only versions 2 and 3 can be read"
    );
    assert!(matches!(
        err(Raw::header(4, 0, 0).build()),
        GgufError::UnsupportedVersion(4)
    ));
    // A big-endian v3 file: the version reads 0x03000000 little-endian.
    let mut be = b"GGUF".to_vec();
    be.extend_from_slice(&3u32.to_be_bytes());
    be.extend_from_slice(&[0; 16]);
    let e = err(be);
    assert!(matches!(e, GgufError::BigEndian { raw: 0x0300_0000 }));
    assert!(
        e.to_string().starts_with("big-endian GGUF not supported"),
        "{e}"
    );
    // Version 2 has the same layout and is read.
    let f = GgufFile::from_bytes(
        Raw::header(2, 0, 1)
            .kv_str("general.architecture", "llama")
            .build(),
    )
    .unwrap();
    assert_eq!((f.version, f.architecture().unwrap()), (2, "llama"));
}

#[test]
fn absurd_counts() {
    let e = err(Raw::header(3, 0, u64::MAX).build());
    assert!(
        matches!(
            e,
            GgufError::TooLarge {
                value: u64::MAX,
                limit: MAX_KV_COUNT,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "absurd metadata key/value count: {} (limit {MAX_KV_COUNT})",
            u64::MAX
        )
    );
    let e = err(Raw::header(3, u64::MAX, 0).build());
    assert!(
        matches!(
            e,
            GgufError::TooLarge {
                value: u64::MAX,
                limit: MAX_TENSOR_COUNT,
                ..
            }
        ),
        "{e}"
    );
    // Under the cap, but more than the bytes left can hold: refused before allocating.
    let e = err(Raw::header(3, 0, 1000).kv_u32("a", 1).build());
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                needed: 13000,
                available: 17,
                ..
            }
        ),
        "{e}"
    );
    let e = err(Raw::header(3, MAX_TENSOR_COUNT, 0).build());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
}

#[test]
fn absurd_string_lengths() {
    let e = err(Raw::header(3, 0, 1).u64(u64::MAX).bytes(&[0; 16]).build());
    assert!(
        matches!(
            e,
            GgufError::TooLarge {
                value: u64::MAX,
                limit: MAX_NAME_LEN,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!("absurd length of key #0: {} (limit 65535)", u64::MAX)
    );
    let e = err(Raw::header(3, 0, 1).str(b"k").u32(8).u64(u64::MAX).build());
    assert!(
        matches!(
            e,
            GgufError::TooLarge {
                value: u64::MAX,
                limit: MAX_STRING_LEN,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("absurd length of value of key `k`"),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1)
        .str(b"k")
        .u32(8)
        .u64(1 << 29)
        .bytes(b"abc")
        .build());
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                needed: 536_870_912,
                available: 3,
                offset: 45,
                ..
            }
        ),
        "{e}"
    );
    let e = err(Raw::header(3, 1, 0).u64(1 << 62).bytes(&[0; 32]).build());
    assert!(matches!(e, GgufError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("name of tensor #0"), "{e}");
    // A string inside an array.
    let e = err(Raw::header(3, 0, 1)
        .str(b"toks")
        .u32(9)
        .u32(8)
        .u64(2)
        .str(b"a")
        .u64(u64::MAX - 1)
        .build());
    assert!(
        e.to_string()
            .starts_with("absurd length of element 1 of array `toks`"),
        "{e}"
    );
}

#[test]
fn absurd_array_counts() {
    for elem in [0u32, 4, 8, 10] {
        let e = err(Raw::header(3, 0, 1)
            .str(b"arr")
            .u32(9)
            .u32(elem)
            .u64(u64::MAX)
            .build());
        assert!(
            matches!(
                e,
                GgufError::TooLarge {
                    value: u64::MAX,
                    limit: MAX_ARRAY_LEN,
                    ..
                }
            ),
            "elem {elem}: {e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "absurd array `arr` element count: {} (limit {MAX_ARRAY_LEN})",
                u64::MAX
            )
        );
    }
    // 1 Mi strings need at least 8 MiB.
    let e = err(Raw::header(3, 0, 1)
        .str(b"arr")
        .u32(9)
        .u32(8)
        .u64(1 << 20)
        .bytes(&[0; 64])
        .build());
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                needed: 8_388_608,
                available: 64,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn dims_product_overflow() {
    let e = err(one_tensor(0, &[], "w", &[1 << 32, 1 << 32], 0, 0));
    assert!(
        matches!(e, GgufError::DimsOverflow { ref tensor, ref dims } if tensor == "w" && dims == &[1 << 32, 1 << 32]),
        "{e}"
    );
    let e = err(one_tensor(0, &[], "w", &[u64::MAX], 0, 0));
    assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e}");
    let e = err(one_tensor(0, &[], "w", &[2, 3, 1 << 61, 1], 0, 0));
    assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e}");
    // A product that fits i64 but whose byte size does not fit u64.
    let e = err(one_tensor(0, &[], "w", &[1 << 62], 0, 0));
    assert!(matches!(e, GgufError::DimsOverflow { .. }), "{e}");
}

#[test]
fn offset_past_end() {
    let e = err(one_tensor(0, &[], "w", &[4], 0, 1 << 40));
    assert!(
        matches!(
            e,
            GgufError::TensorOutOfBounds {
                offset: 1_099_511_627_776,
                size: 16,
                ..
            }
        ),
        "{e}"
    );
    let e = err(one_tensor(0, &[], "w", &[4], 0, u64::MAX - 31));
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    // The data ends 1 byte early.
    let e = err(one_tensor(0, &[], "w", &[5], 0, 0));
    let GgufError::TensorOutOfBounds {
        size,
        data_offset,
        file_size,
        ..
    } = e
    else {
        panic!("{e}")
    };
    assert_eq!((size, file_size - data_offset), (20, 16));
    // Huge dims with a small type are still bounded by the file.
    let e = err(one_tensor(0, &[], "w", &[1 << 40, 1 << 20], 24, 0));
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    // Exactly at the end is fine.
    let f = GgufFile::from_bytes(one_tensor(0, &[], "w", &[4], 0, 0)).unwrap();
    assert_eq!(f.tensor_data(&f.tensors[0]), &[0xab; 16]);
    assert_eq!(f.data_offset(), 64);
}

#[test]
fn unknown_value_type_ids() {
    let e = err(Raw::header(3, 0, 1).str(b"k").u32(13).u32(0).build());
    assert!(
        matches!(e, GgufError::UnknownValueType { ref key, id: 13 } if key == "k"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "unknown metadata value type id 13 for key `k`"
    );
    let e = err(Raw::header(3, 0, 1)
        .str(b"arr")
        .u32(9)
        .u32(u32::MAX)
        .u64(0)
        .build());
    assert!(
        matches!(e, GgufError::UnknownValueType { id: u32::MAX, .. }),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1)
        .str(b"arr")
        .u32(9)
        .u32(9)
        .u64(1)
        .u32(4)
        .u64(1)
        .u32(7)
        .build());
    assert!(
        matches!(e, GgufError::NestedArray { ref key } if key == "arr"),
        "{e}"
    );
}

#[test]
fn unknown_tensor_type_ids() {
    for id in [37u32, 1000, u32::MAX] {
        let e = err(one_tensor(0, &[], "blk.0.w", &[4], id, 0));
        assert!(
            matches!(e, GgufError::UnknownTensorType { ref tensor, id: i } if tensor == "blk.0.w" && i == id),
            "{e}"
        );
    }
    assert_eq!(
        err(one_tensor(0, &[], "w", &[4], 37, 0)).to_string(),
        "tensor `w` has unknown ggml type id 37"
    );
}

#[test]
fn non_utf8_strings() {
    let e = err(Raw::header(3, 0, 1).str(b"ke\xffy").u32(4).u32(1).build());
    assert!(
        matches!(e, GgufError::InvalidUtf8 { ref what, offset: 32 } if what == "key #0"),
        "{e}"
    );
    assert_eq!(e.to_string(), "key #0 at offset 32 is not valid UTF-8");
    let e = err(Raw::header(3, 0, 1)
        .str(b"k")
        .u32(8)
        .str(b"\xc3\x28")
        .build());
    assert_eq!(
        e.to_string(),
        "value of key `k` at offset 45 is not valid UTF-8"
    );
    let e = err(Raw::header(3, 0, 1)
        .str(b"t")
        .u32(9)
        .u32(8)
        .u64(2)
        .str(b"ok")
        .str(b"\xed\xa0\x80")
        .build());
    assert!(
        e.to_string()
            .starts_with("element 1 of array `t` at offset"),
        "{e}"
    );
    let e = err(Raw::header(3, 1, 0)
        .str(b"w\xfe")
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .data(32, 16)
        .build());
    assert!(
        matches!(e, GgufError::InvalidUtf8 { ref what, .. } if what == "name of tensor #0"),
        "{e}"
    );
}

#[test]
fn misaligned_offset() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[1], 0, 0)
        .tensor("b", &[1], 0, 4)
        .data(32, 64);
    let e = err(r.build());
    assert!(
        matches!(e, GgufError::MisalignedOffset { ref tensor, offset: 4, alignment: 32 } if tensor == "b"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "tensor `b` offset 4 is not a multiple of the alignment 32"
    );
    // With general.alignment = 4 the same offsets are fine.
    let mut kv = Raw::default();
    kv.kv_u32("general.alignment", 4);
    let mut r = Raw::header(3, 2, 1);
    r.bytes(&kv.0)
        .tensor("a", &[1], 0, 0)
        .tensor("b", &[1], 0, 4)
        .data(4, 8);
    let f = GgufFile::from_bytes(r.build()).unwrap();
    assert_eq!((f.alignment, f.tensors[1].offset), (4, 4));
}

#[test]
fn too_many_dims() {
    let e = err(one_tensor(0, &[], "w", &[1, 1, 1, 1, 4], 0, 0));
    assert!(
        matches!(e, GgufError::TooManyDims { ref tensor, n_dims: 5 } if tensor == "w"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "tensor `w` has 5 dimensions; at most 4 are allowed"
    );
    let e = err(Raw::header(3, 1, 0)
        .str(b"w")
        .u32(u32::MAX)
        .bytes(&[0; 32])
        .build());
    assert!(
        matches!(
            e,
            GgufError::TooManyDims {
                n_dims: 4_294_967_295,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn zero_dims_and_zero_sized_dims_are_accepted() {
    // n_dims 0 is a scalar (one element), as in ggml.
    let f = GgufFile::from_bytes(one_tensor(0, &[], "s", &[], 0, 0)).unwrap();
    assert_eq!((f.tensors[0].n_elements(), f.tensors[0].n_bytes), (1, 4));
    let f = GgufFile::from_bytes(one_tensor(0, &[], "e", &[4, 0], 0, 0)).unwrap();
    assert_eq!(f.tensors[0].n_bytes, 0);
}

#[test]
fn duplicates() {
    let mut kv = Raw::default();
    kv.kv_u32("a", 1).kv_u32("a", 2);
    let e = err(Raw::header(3, 0, 2).bytes(&kv.0).build());
    assert!(
        matches!(e, GgufError::DuplicateKey(ref k) if k == "a"),
        "{e}"
    );
    let mut r = Raw::header(3, 2, 0);
    r.tensor("t", &[1], 0, 0)
        .tensor("t", &[1], 0, 0)
        .data(32, 4);
    let e = err(r.build());
    assert_eq!(e.to_string(), "duplicate tensor `t`");
}

#[test]
fn bad_alignment_values() {
    for a in [0u32, 3, 24, u32::MAX] {
        let mut kv = Raw::default();
        kv.kv_u32("general.alignment", a);
        let e = err(one_tensor(1, &kv.0, "w", &[4], 0, 0));
        assert!(
            matches!(e, GgufError::BadAlignment { value, .. } if value == u64::from(a)),
            "{a}: {e}"
        );
    }
    let mut kv = Raw::default();
    kv.str(b"general.alignment").u32(10).u64(32);
    let e = err(one_tensor(1, &kv.0, "w", &[4], 0, 0));
    assert_eq!(
        e.to_string(),
        "key `general.alignment` is u64, expected u32"
    );
    // A huge power of two: the data section starts past the end, so the tensor is out of bounds.
    let mut kv = Raw::default();
    kv.kv_u32("general.alignment", 1 << 31);
    let e = err(one_tensor(1, &kv.0, "w", &[4], 0, 0));
    assert!(
        matches!(
            e,
            GgufError::TensorOutOfBounds {
                data_offset: 2_147_483_648,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn type_39_depends_on_the_architecture() {
    let mut kv = Raw::default();
    kv.kv_str("general.architecture", "bitnet-b1.58");
    let e = err(one_tensor(
        1,
        &kv.0,
        "blk.0.attn_q.weight",
        &[256, 4],
        39,
        0,
    ));
    assert!(
        matches!(e, GgufError::Tl2NotSupported { ref tensor } if tensor == "blk.0.attn_q.weight"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "TL2 (type 39 in a bitnet file) is not supported: its layout depends on compile-time tile parameters; \
         re-convert to I2_S (tensor `blk.0.attn_q.weight`)"
    );
    // Elsewhere it is MXFP4: 32 elements in 17 bytes.
    let mut kv = Raw::default();
    kv.kv_str("general.architecture", "gpt-oss");
    let mut r = Raw::header(3, 1, 1);
    r.bytes(&kv.0).tensor("w", &[64], 39, 0).data(32, 34);
    let f = GgufFile::from_bytes(r.build()).unwrap();
    assert_eq!(
        (f.tensors[0].ggml_type, f.tensors[0].n_bytes),
        (GgmlType::MXFP4, 34)
    );
    // I2_S is n/4 + 32 bytes, whatever the architecture.
    let mut r = Raw::header(3, 1, 1);
    r.bytes(&kv.0).tensor("w", &[128, 2], 36, 0).data(32, 95);
    assert!(matches!(
        err(r.build()),
        GgufError::TensorOutOfBounds { size: 96, .. }
    ));
}

#[test]
fn invalid_bool_and_row_length() {
    let e = err(Raw::header(3, 0, 1).str(b"b").u32(7).u8(2).build());
    assert_eq!(
        e.to_string(),
        "key `b` holds a bool stored as byte 2; only 0 and 1 are valid"
    );
    let e = err(Raw::header(3, 0, 1)
        .str(b"b")
        .u32(9)
        .u32(7)
        .u64(2)
        .u8(1)
        .u8(255)
        .build());
    assert!(matches!(e, GgufError::InvalidBool { byte: 255, .. }), "{e}");
    let e = err(one_tensor(0, &[], "q", &[33, 1], 8, 0));
    assert!(
        matches!(
            e,
            GgufError::BadRowLength {
                row_len: 33,
                block_size: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn no_tensors_and_no_padding() {
    // llama.cpp pads even without tensors, but a file ending right after the metadata is fine.
    let f = GgufFile::from_bytes(Raw::header(3, 0, 1).kv_u32("a", 7).build()).unwrap();
    assert_eq!(f.metadata.get_u32("a").unwrap(), 7);
    assert!(f.data_offset() > f.file_size());
}

#[test]
fn stored_offsets_are_trusted_in_any_order() {
    // The BitNet fork's reader trusts offsets: tensors need not be contiguous or in order.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[2], 0, 64)
        .tensor("b", &[2], 0, 0)
        .data(32, 72);
    let f = GgufFile::from_bytes(r.build()).unwrap();
    assert_eq!((f.tensors[0].offset, f.tensors[1].offset), (64, 0));
    assert_eq!(f.tensor_data(&f.tensors[0]), &[0xab; 8]);
}
