//! Reading a real third-party GGUF (written by llama.cpp's converter; see the fixture's README).

mod common;

use common::*;
use gguf::{GgmlType, GgufFile, Value, ValueType};

/// Element `i` of F16 data, widened exactly.
fn f16_at(data: &[u8], i: usize) -> f64 {
    half::f16::from_le_bytes([data[2 * i], data[2 * i + 1]]).to_f64()
}

#[test]
fn llama_2_tiny_random() {
    if fixture_bytes().is_none() {
        return;
    }
    let f = GgufFile::open(&fixture_path()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.file_size(), 1_750_560);
    assert_eq!(f.data_offset(), 724_416);
    assert_eq!(f.architecture().unwrap(), "llama");
    let md = &f.metadata;
    assert_eq!(md.len(), 18);
    assert_eq!(md.get("llama.embedding_length"), Some(&Value::U32(8)));
    assert_eq!(md.get_u32("llama.block_count").unwrap(), 1);
    assert_eq!(md.get_u64("llama.context_length").unwrap(), 4096);
    assert_eq!(md.get_u32("llama.attention.head_count").unwrap(), 2);
    assert_eq!(
        md.get_f32("llama.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-5
    );
    assert_eq!(md.get_str("general.name").unwrap(), "LLaMA v2");
    assert_eq!(md.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(md.keys().next(), Some("general.architecture"));
    assert_eq!(md.keys().last(), Some("tokenizer.ggml.unknown_token_id"));

    let tokens = md.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 32000);
    assert_eq!(
        (tokens[0], tokens[1], tokens[2], tokens[13], tokens[31999]),
        ("<unk>", "<s>", "</s>", "<0x0A>", "给")
    );
    assert_eq!(
        md.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
        32000
    );
    let types = md.get_i32_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(
        (types.len(), types[0], types[1], types[5]),
        (32000, 2, 3, 6)
    );
    assert_eq!(
        md.get("tokenizer.ggml.token_type").unwrap().type_name(),
        "array<i32>"
    );
    assert!(matches!(
        md.get("tokenizer.ggml.scores"),
        Some(Value::Array(ValueType::F32, _))
    ));
    assert_eq!(md.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);

    assert_eq!(f.tensors.len(), 12);
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (
            embd.dims.as_slice(),
            embd.ggml_type,
            embd.offset,
            embd.n_bytes
        ),
        (&[8, 32000][..], GgmlType::F16, 0, 512_000)
    );
    let out = f.tensor("output.weight").unwrap();
    assert_eq!(
        (out.dims.as_slice(), out.ggml_type, out.n_bytes),
        (&[8, 32000][..], GgmlType::F16, 512_000)
    );
    assert_eq!(out.offset, 1_238_560 - 724_416);
    let norm = f.tensor("output_norm.weight").unwrap();
    assert_eq!(
        (norm.dims.as_slice(), norm.ggml_type),
        (&[8][..], GgmlType::F32)
    );
    assert_eq!(f.tensor("blk.0.ffn_down.weight").unwrap().dims, vec![32, 8]);
    assert!(f.tensor("blk.1.ffn_down.weight").is_none());

    // Values as gguf-py reads them.
    let d = f.tensor_data(embd);
    assert_eq!(d.len(), 512_000);
    assert_eq!(
        (f16_at(d, 0), f16_at(d, 255_998), f16_at(d, 255_999)),
        (0.0, -0.034515380859375, 0.00333404541015625)
    );
    let down = f.tensor_data(f.tensor("blk.0.ffn_down.weight").unwrap());
    assert_eq!(
        (f16_at(down, 0), f16_at(down, 1), f16_at(down, 255)),
        (0.0207366943359375, -0.007080078125, -0.0231170654296875)
    );
    assert!(f
        .tensor_data(norm)
        .chunks(4)
        .all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 1.0));

    // Offsets are tensor data inside the mapping: zero-copy.
    let base = f.tensor_data(embd).as_ptr() as usize;
    assert_eq!(
        f.tensor_data(out).as_ptr() as usize - base,
        out.offset as usize
    );
    assert_eq!(
        base % 32,
        0,
        "mappings are page-aligned, so tensor data is aligned in memory"
    );

    // The same from memory.
    let g = GgufFile::from_bytes(std::fs::read(fixture_path()).unwrap()).unwrap();
    assert_eq!(
        (g.metadata == f.metadata, g.tensors == f.tensors),
        (true, true)
    );
    assert_eq!(g.tensor_data(out), f.tensor_data(out));
}
