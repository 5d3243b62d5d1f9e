//! End-to-end conversion of tiny random checkpoints of every architecture to every output type,
//! checked against independently computed expectations (not against the converter's own code).

use std::path::{Path, PathBuf};

use convert::tiny::{TinyDtype, TinyFamily, TinySpec};
use convert::{ConvertError, ConvertOptions, OutType};
use gguf::{GgmlType, GgufFile, Value};

const FAMILIES: [TinyFamily; 4] = [
    TinyFamily::Llama,
    TinyFamily::Qwen2,
    TinyFamily::Qwen3,
    TinyFamily::BitNet,
];

fn opts(input: &Path, output: &Path, outtype: OutType) -> ConvertOptions {
    ConvertOptions {
        input: input.into(),
        output: Some(output.into()),
        outtype,
        target: None,
        force_ternary: false,
        add_mask_token: false,
        name: None,
        progress: false,
        head_types: Default::default(),
    }
}

/// Reads a checkpoint tensor as f32, independently of the converter (safetensors crate + half).
fn hf_tensor(dir: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            if let Ok(t) = st.tensor(name) {
                let data = t.data();
                let values = match t.dtype() {
                    safetensors::Dtype::F32 => data
                        .chunks(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    safetensors::Dtype::F16 => data
                        .chunks(2)
                        .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                        .collect(),
                    safetensors::Dtype::BF16 => data
                        .chunks(2)
                        .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
                        .collect(),
                    d => panic!("unexpected dtype {d:?}"),
                };
                return (t.shape().to_vec(), values);
            }
        }
    }
    panic!("tensor {name} not found in {}", dir.display());
}

fn dequant(file: &GgufFile, name: &str) -> Vec<f32> {
    let t = file
        .tensor(name)
        .unwrap_or_else(|| panic!("missing {name}"));
    quant::dequantize(
        t.ggml_type,
        file.tensor_data(t),
        t.dims[0] as usize,
        t.n_elements() as usize,
    )
    .unwrap()
}

/// HF transformers `WeightQuant` written out independently:
/// s = 1 / max(mean|W|, 1e-5); W_t = clamp(round_half_even(W * s), -1, 1) / s.
fn absmean(w: &[f32]) -> Vec<f32> {
    let s =
        1.0 / ((w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len() as f64) as f32).max(1e-5);
    w.iter()
        .map(|v| (v * s).round_ties_even().clamp(-1.0, 1.0) / s)
        .collect()
}

/// HF rotate-half → llama.cpp interleaved rows, written from the numpy definition.
fn permuted_row(row: usize, n_head: usize, rows: usize) -> usize {
    // new row (h, i, j) with i < half, j in {0,1} holds old row (h, j, i)
    let hd = rows / n_head;
    let (h, r) = (row / hd, row % hd);
    let (i, j) = (r / 2, r % 2);
    h * hd + j * (hd / 2) + i
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn every_family_converts_to_every_outtype_with_the_right_types() {
    for family in FAMILIES {
        let dir = tmp();
        let ckpt = dir.path().join("ckpt");
        let mut spec = TinySpec::new(family);
        spec.dlm_block_size = Some(32);
        spec.write(&ckpt).unwrap();
        for outtype in OutType::ALL {
            let out = dir.path().join(format!("{}.gguf", outtype.name()));
            let mut o = opts(&ckpt, &out, outtype);
            o.force_ternary = outtype.is_ternary() && family != TinyFamily::BitNet;
            let report =
                convert::convert(&o).unwrap_or_else(|e| panic!("{family:?} {outtype:?}: {e}"));
            assert!(
                report.fallbacks.is_empty(),
                "{family:?} {outtype:?}: {:?}",
                report.fallbacks
            );
            let f = GgufFile::open(&out).unwrap();
            let arch = f.architecture().unwrap().to_string();
            let expected_arch = match family {
                TinyFamily::Llama => "llama",
                TinyFamily::Qwen2 => "qwen2",
                TinyFamily::Qwen3 => "qwen3",
                // TQ1_0/TQ2_0 default to llama.cpp, which names BitNet b1.58 `bitnet`.
                TinyFamily::BitNet if matches!(outtype, OutType::TQ1_0 | OutType::TQ2_0) => {
                    "bitnet"
                }
                TinyFamily::BitNet => "bitnet-b1.58",
            };
            assert_eq!(arch, expected_arch);
            let md = &f.metadata;
            assert_eq!(md.get_u32(&format!("{arch}.block_count")).unwrap(), 2);
            assert_eq!(
                md.get_u32(&format!("{arch}.embedding_length")).unwrap(),
                256
            );
            assert_eq!(
                md.get_u32(&format!("{arch}.attention.head_count_kv"))
                    .unwrap(),
                2
            );
            assert_eq!(md.get_u32("dlm.block_size").unwrap(), 32);
            assert!(md.get_bool("diffusion.shift_logits").unwrap());
            let mask = md.get_u32("tokenizer.ggml.mask_token_id").unwrap() as usize;
            assert_eq!(
                md.get_str_array("tokenizer.ggml.tokens").unwrap()[mask],
                "|<MASK>|"
            );
            assert_eq!(
                md.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
                384
            );

            let proj = f.tensor("blk.1.ffn_down.weight").unwrap();
            assert_eq!(proj.dims, vec![512, 256]);
            assert_eq!(
                proj.ggml_type,
                outtype.ggml_type(),
                "{family:?} {outtype:?}"
            );
            let embd = f.tensor("token_embd.weight").unwrap();
            assert_eq!(embd.dims, vec![256, 384]);
            let embd_type = match outtype {
                OutType::F32 => GgmlType::F32,
                OutType::BF16 => GgmlType::BF16,
                OutType::Q8_0 => GgmlType::Q8_0,
                _ => GgmlType::F16,
            };
            assert_eq!(embd.ggml_type, embd_type);
            assert_eq!(
                f.tensor("blk.0.attn_norm.weight").unwrap().ggml_type,
                GgmlType::F32
            );
            let n_per_layer = match family {
                TinyFamily::Llama => 9,
                TinyFamily::Qwen2 => 12,
                TinyFamily::Qwen3 | TinyFamily::BitNet => 11,
            };
            let tied = matches!(family, TinyFamily::Qwen3 | TinyFamily::BitNet);
            assert_eq!(f.tensors.len(), 2 * n_per_layer + 2 + usize::from(!tied));
            assert_eq!(f.tensor("output.weight").is_some(), !tied);
        }
    }
}

#[test]
fn f32_conversion_is_exact_and_permutes_llama_qk_only() {
    for family in FAMILIES {
        let dir = tmp();
        let ckpt = dir.path().join("ckpt");
        TinySpec::new(family).write(&ckpt).unwrap();
        let out = dir.path().join("m.gguf");
        convert::convert(&opts(&ckpt, &out, OutType::F32)).unwrap();
        let f = GgufFile::open(&out).unwrap();
        let (shape, q) = hf_tensor(&ckpt, "model.layers.0.self_attn.k_proj.weight");
        let got = dequant(&f, "blk.0.attn_k.weight");
        let cols = shape[1];
        for r in 0..shape[0] {
            let src = if family == TinyFamily::Llama {
                permuted_row(r, 2, shape[0])
            } else {
                r
            };
            let bitnet = family == TinyFamily::BitNet;
            if !bitnet {
                assert_eq!(
                    &got[r * cols..(r + 1) * cols],
                    &q[src * cols..(src + 1) * cols],
                    "{family:?} row {r}"
                );
            }
        }
        let (_, norm) = hf_tensor(&ckpt, "model.layers.1.post_attention_layernorm.weight");
        assert_eq!(dequant(&f, "blk.1.ffn_norm.weight"), norm);
        let (_, embd) = hf_tensor(&ckpt, "model.embed_tokens.weight");
        assert_eq!(dequant(&f, "token_embd.weight"), embd);
    }
}

#[test]
fn bitnet_projections_hold_the_absmean_ternary_weights_in_every_format() {
    let dir = tmp();
    let ckpt = dir.path().join("ckpt");
    let mut spec = TinySpec::new(TinyFamily::BitNet);
    spec.dtype = TinyDtype::BF16;
    spec.write(&ckpt).unwrap();
    let (_, w) = hf_tensor(&ckpt, "model.layers.0.mlp.gate_proj.weight");
    let expected = absmean(&w);
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    for outtype in [
        OutType::F32,
        OutType::F16,
        OutType::Q8_0,
        OutType::TQ1_0,
        OutType::TQ2_0,
        OutType::I2_S,
    ] {
        let out = dir.path().join(format!("{}.gguf", outtype.name()));
        convert::convert(&opts(&ckpt, &out, outtype)).unwrap();
        let got = dequant(&GgufFile::open(&out).unwrap(), "blk.0.ffn_gate.weight");
        // I2_S keeps an f32 scale; F16/TQ store the scale as f16; Q8_0 quantizes m to 127 steps.
        let tol = if matches!(outtype, OutType::F32 | OutType::I2_S) {
            1e-7
        } else {
            scale * 2e-3
        };
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((g - e).abs() <= tol, "{outtype:?} element {i}: {g} vs {e}");
        }
        // The sign pattern must be exactly ternary.
        let nonzero = got.iter().filter(|v| **v != 0.0).count();
        assert_eq!(
            nonzero,
            expected.iter().filter(|v| **v != 0.0).count(),
            "{outtype:?}"
        );
    }
}

#[test]
fn offline_packed_bitnet_checkpoints_unpack_to_the_same_ternary_weights() {
    let dir = tmp();
    let (plain, packed) = (dir.path().join("plain"), dir.path().join("packed"));
    TinySpec::new(TinyFamily::BitNet).write(&plain).unwrap();
    let mut spec = TinySpec::new(TinyFamily::BitNet);
    spec.packed_ternary = true;
    spec.write(&packed).unwrap();
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    convert::convert(&opts(&plain, &a, OutType::I2_S)).unwrap();
    convert::convert(&opts(&packed, &b, OutType::I2_S)).unwrap();
    let (fa, fb) = (GgufFile::open(&a).unwrap(), GgufFile::open(&b).unwrap());
    for name in ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"] {
        let (x, y) = (dequant(&fa, name), dequant(&fb, name));
        let sign = |v: &f32| v.partial_cmp(&0.0).unwrap() as i8;
        let differing = x.iter().zip(&y).filter(|(a, b)| sign(a) != sign(b)).count();
        assert_eq!(
            differing,
            0,
            "{name}: {differing} of {} ternary values differ",
            x.len()
        );
        // Scales agree up to the packed checkpoint's bf16 weight_scale.
        let (mx, my) = (
            x.iter().fold(0f32, |m, v| m.max(v.abs())),
            y.iter().fold(0f32, |m, v| m.max(v.abs())),
        );
        assert!((mx - my).abs() <= mx * 4e-3, "{name}: {mx} vs {my}");
    }
}

#[test]
fn sharded_and_single_file_checkpoints_give_identical_gguf_bytes() {
    let dir = tmp();
    let (one, many) = (dir.path().join("one"), dir.path().join("many"));
    let mut spec = TinySpec::new(TinyFamily::Qwen2);
    spec.write(&one).unwrap();
    spec.shards = 3;
    spec.write(&many).unwrap();
    assert!(many.join("model.safetensors.index.json").exists());
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    let mut oa = opts(&one, &a, OutType::Q8_0);
    oa.name = Some("x".into());
    let mut ob = opts(&many, &b, OutType::Q8_0);
    ob.name = Some("x".into());
    convert::convert(&oa).unwrap();
    convert::convert(&ob).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn ternary_outtypes_are_refused_for_ordinary_checkpoints() {
    let dir = tmp();
    let ckpt = dir.path().join("ckpt");
    TinySpec::new(TinyFamily::Llama).write(&ckpt).unwrap();
    let out = dir.path().join("m.gguf");
    let err = convert::convert(&opts(&ckpt, &out, OutType::TQ2_0)).unwrap_err();
    assert!(matches!(err, ConvertError::NotTernary { .. }), "{err}");
    assert!(err.to_string().contains("--force-ternary"), "{err}");
    assert!(!out.exists());
}

fn expect_error(dir: &Path, out: &Path, needle: &str) {
    let err = convert::convert(&opts(dir, out, OutType::F16))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(needle),
        "error `{err}` should mention `{needle}`"
    );
    assert!(!out.exists(), "a failed conversion left {}", out.display());
    let leftovers: Vec<PathBuf> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn bad_checkpoints_give_errors_that_name_the_problem() {
    let dir = tmp();
    let fresh = |name: &str| {
        let p = dir.path().join(name);
        let mut spec = TinySpec::new(TinyFamily::Qwen2);
        spec.dlm_block_size = Some(32);
        spec.write(&p).unwrap();
        p
    };
    let out = dir.path().join("out.gguf");

    let c = fresh("arch");
    edit_json(&c.join("config.json"), |v| {
        v["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"])
    });
    expect_error(&c, &out, "unsupported architecture `GPTNeoXForCausalLM`");

    let c = fresh("shape");
    edit_json(&c.join("config.json"), |v| {
        v["intermediate_size"] = serde_json::json!(640)
    });
    expect_error(
        &c,
        &out,
        "has shape [256, 512] but config.json implies [256, 640]",
    );

    let c = fresh("missing");
    edit_json(&c.join("config.json"), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    expect_error(&c, &out, "config.json: missing `hidden_size`");

    let c = fresh("vocab");
    edit_json(&c.join("config.json"), |v| {
        v["vocab_size"] = serde_json::json!(200)
    });
    expect_error(&c, &out, "embedding has only 200 rows");

    let c = fresh("mask");
    edit_json(&c.join("dlm_config.json"), |v| {
        v["mask_token_id"] = serde_json::json!(5)
    });
    expect_error(&c, &out, "mask_token_id 5 is");

    let c = fresh("bd");
    edit_json(&c.join("dlm_config.json"), |v| {
        v["bd_size"] = serde_json::json!(16)
    });
    expect_error(&c, &out, "bd_size 16 disagrees");

    let c = fresh("nojson");
    std::fs::remove_file(c.join("config.json")).unwrap();
    expect_error(&c, &out, "missing config.json");

    let c = fresh("truncated");
    let st = c.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&c, &out, "invalid safetensors file");

    // An existing output file survives a failed conversion untouched.
    std::fs::write(&out, b"precious").unwrap();
    let c = fresh("keep");
    edit_json(&c.join("config.json"), |v| {
        v["num_hidden_layers"] = serde_json::json!(3)
    });
    let err = convert::convert(&opts(&c, &out, OutType::F16))
        .unwrap_err()
        .to_string();
    assert!(err.contains("blk.2.attn_norm.weight"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
}

fn stories() -> PathBuf {
    shared_fixtures().join("stories260K")
}

#[test]
fn stories260k_converts_to_f32_exactly_and_to_f16() {
    let dir = tmp();
    for outtype in [OutType::F32, OutType::F16] {
        let out = dir.path().join(format!("s-{}.gguf", outtype.name()));
        let report = convert::convert(&opts(&stories(), &out, outtype)).unwrap();
        assert_eq!(report.arch, "llama");
        assert_eq!(report.mask_token_id, None);
        let f = GgufFile::open(&out).unwrap();
        let md = &f.metadata;
        assert_eq!(md.get_u32("llama.embedding_length").unwrap(), 64);
        assert_eq!(md.get_u32("llama.feed_forward_length").unwrap(), 172);
        assert_eq!(md.get_u32("llama.attention.head_count").unwrap(), 8);
        assert_eq!(md.get_u32("llama.attention.head_count_kv").unwrap(), 4);
        assert_eq!(md.get_u32("llama.rope.dimension_count").unwrap(), 8);
        assert_eq!(md.get_str("tokenizer.ggml.model").unwrap(), "llama");
        let tokens = md.get_str_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens.len(), 512);
        assert_eq!(
            (tokens[1], tokens[2], tokens[13]),
            ("<s>", "</s>", "<0x0A>")
        );
        let types = md.get_i32_array("tokenizer.ggml.token_type").unwrap();
        assert_eq!((types[0], types[1], types[13], types[300]), (3, 3, 6, 1));
        assert_eq!(md.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
        assert_eq!(md.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);
        assert!(md.get_bool("tokenizer.ggml.add_bos_token").unwrap());
        assert!(md
            .get_str("tokenizer.huggingface.json")
            .unwrap()
            .contains("\"byte_fallback\": true"));
        assert!(!md.contains_key("tokenizer.ggml.mask_token_id"));
        assert!(
            f.tensor("output.weight").is_none(),
            "tied embeddings need no output tensor"
        );
        assert_eq!(f.tensors.len(), 5 * 9 + 2);

        let (shape, q) = hf_tensor(&stories(), "model.layers.3.self_attn.q_proj.weight");
        let got = dequant(&f, "blk.3.attn_q.weight");
        for r in 0..shape[0] {
            let src = permuted_row(r, 8, shape[0]);
            for c in 0..shape[1] {
                let (g, e) = (got[r * 64 + c], q[src * 64 + c]);
                if outtype == OutType::F32 {
                    assert_eq!(g, e);
                } else {
                    assert_eq!(g, half::f16::from_f32(e).to_f32());
                }
            }
        }
        let (_, down) = hf_tensor(&stories(), "model.layers.4.mlp.down_proj.weight");
        let got = dequant(&f, "blk.4.ffn_down.weight");
        assert_eq!(
            f.tensor("blk.4.ffn_down.weight").unwrap().dims,
            vec![172, 64]
        );
        assert!(got
            .iter()
            .zip(&down)
            .all(|(g, e)| (g - e).abs() <= e.abs() * 1e-3 + 1e-7));
    }
}

#[test]
fn q8_0_falls_back_to_f16_for_rows_it_cannot_encode() {
    // stories260K's ffn_down rows are 172 long, not a multiple of 32.
    let dir = tmp();
    let out = dir.path().join("s.gguf");
    let report = convert::convert(&opts(&stories(), &out, OutType::Q8_0)).unwrap();
    assert_eq!(report.fallbacks.len(), 5, "{:?}", report.fallbacks);
    assert!(report.fallbacks[0].contains("ffn_down"));
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.tensor("blk.0.ffn_down.weight").unwrap().ggml_type,
        GgmlType::F16
    );
    assert_eq!(
        f.tensor("blk.0.ffn_up.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
}

#[test]
fn the_real_fast_dllm_v2_tokenizer_yields_its_mask_token_and_block_size() {
    let dir = shared_fixtures().join("third-party/fast-dllm-v2-7b-tokenizer");
    let config = convert::checkpoint::read_json_opt(&dir.join("config.json"))
        .unwrap()
        .unwrap();
    let config = convert::checkpoint::JsonConfig::new("config.json", config).unwrap();
    let info = convert::ArchInfo::from_config(&config).unwrap();
    assert_eq!(info.family, convert::Family::Qwen2);
    assert_eq!(info.bd_size, Some(32));
    let vocab = convert::vocab::load(&dir, 152064, &config, false).unwrap();
    assert_eq!(vocab.mask_token_id, Some(151665));
    assert_eq!(vocab.block_size, Some(32));
    assert_eq!(vocab.n_tokens, 151666);
    let get = |k: &str| {
        vocab
            .metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("tokenizer.ggml.eos_token_id"), Some(Value::U32(151645)));
    assert_eq!(
        get("tokenizer.ggml.padding_token_id"),
        Some(Value::U32(151643))
    );
    assert_eq!(
        get("tokenizer.ggml.pre"),
        Some(Value::String("qwen2".into()))
    );
    assert_eq!(
        get("tokenizer.ggml.add_bos_token"),
        Some(Value::Bool(false))
    );
    assert_eq!(
        get("dlm.eog_token_ids"),
        Some(Value::Array(
            gguf::ValueType::U32,
            vec![Value::U32(151645), Value::U32(151643)]
        ))
    );
    let Some(Value::Array(_, tokens)) = get("tokenizer.ggml.tokens") else {
        panic!("no tokens")
    };
    assert_eq!(tokens.len(), 152064);
    assert_eq!(tokens[151665], Value::String("|<MASK>|".into()));
    assert_eq!(tokens[151666], Value::String("[PAD151666]".into()));
    let Some(Value::String(t)) = get("tokenizer.chat_template") else {
        panic!("no template")
    };
    assert!(t.contains("<|im_start|>"));
    let Some(Value::Array(_, merges)) = get("tokenizer.ggml.merges") else {
        panic!("no merges")
    };
    assert_eq!(merges.len(), 151387);
}

#[test]
fn the_bundled_model_is_what_the_converter_makes_from_the_fixture() {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K.gguf");
    let dir = tmp();
    let out = dir.path().join("stories260K.gguf");
    let mut o = opts(&stories(), &out, OutType::F32);
    o.name = Some("stories260K".into());
    convert::convert(&o).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&bundled).unwrap(),
        "models/stories260K.gguf is stale: regenerate it with the command in README.md"
    );
}

/// `../shared/fixtures` next to the repository, or `/work/shared/fixtures` where the checkout
/// lives elsewhere.
fn shared_fixtures() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("/work/shared/fixtures")
    }
}

/// Q8_0 reference written from the definition: per 32-block d = max|x| / 127 (stored as f16),
/// q = round(x / d); so every value is within d/2, plus |q| ≤ 127 times the f16 rounding of d
/// (2^-11 relative), of the original.
fn q8_0_tolerance(block: &[f32]) -> f32 {
    block.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0 * (0.5 + 127.0 / 2048.0) + 1e-6
}

#[test]
fn head_and_embedding_types_follow_the_options_and_a_tied_head_gets_its_own_tensor() {
    let dir = tmp();
    let ckpt = dir.path().join("ckpt");
    let spec = TinySpec::new(TinyFamily::BitNet);
    assert!(spec.tied, "the tiny BitNet ties its embeddings");
    spec.write(&ckpt).unwrap();
    let (_, embd) = hf_tensor(&ckpt, "model.embed_tokens.weight");
    let types = |f: &GgufFile| -> (GgmlType, Option<GgmlType>) {
        (
            f.tensor("token_embd.weight").unwrap().ggml_type,
            f.tensor("output.weight").map(|t| t.ggml_type),
        )
    };
    let convert_with = |name: &str, head: convert::HeadTypes| {
        let out = dir.path().join(name);
        let mut o = opts(&ckpt, &out, OutType::I2_S);
        o.head_types = head;
        convert::convert(&o).unwrap();
        GgufFile::open(&out).unwrap()
    };

    // Default: one F16 table, tied.
    let f = convert_with("default.gguf", Default::default());
    assert_eq!(types(&f), (GgmlType::F16, None));

    // A Q8_0 head: the embedding stays F16 and the head is its own Q8_0 tensor of the same rows.
    let f = convert_with(
        "q8head.gguf",
        convert::HeadTypes {
            token_embd: None,
            output: Some(GgmlType::Q8_0),
        },
    );
    assert_eq!(types(&f), (GgmlType::F16, Some(GgmlType::Q8_0)));
    let head = dequant(&f, "output.weight");
    assert_eq!(head.len(), embd.len());
    for (b, (got, want)) in head.chunks(32).zip(embd.chunks(32)).enumerate() {
        let tol = q8_0_tolerance(want);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "block {b}: {g} vs {w}");
        }
    }

    // A Q8_0 embedding, tied: one tensor, no separate head.
    let f = convert_with(
        "q8embd.gguf",
        convert::HeadTypes {
            token_embd: Some(GgmlType::Q8_0),
            output: None,
        },
    );
    assert_eq!(types(&f), (GgmlType::Q8_0, None));
    // The same type for both: still tied.
    let f = convert_with(
        "same.gguf",
        convert::HeadTypes {
            token_embd: Some(GgmlType::Q8_0),
            output: Some(GgmlType::Q8_0),
        },
    );
    assert_eq!(types(&f), (GgmlType::Q8_0, None));

    // A Q6_K head: byte-identical to the Q6_K encoding of the embedding's rows.
    let f = convert_with(
        "q6head.gguf",
        convert::HeadTypes {
            token_embd: None,
            output: Some(GgmlType::Q6_K),
        },
    );
    assert_eq!(types(&f), (GgmlType::F16, Some(GgmlType::Q6_K)));
    let t = f.tensor("output.weight").unwrap();
    let row_len = t.dims[0] as usize;
    assert_eq!(
        f.tensor_data(t),
        quant::quantize(GgmlType::Q6_K, &embd, row_len)
            .unwrap()
            .as_slice()
    );

    // Only float, 8/6/4-bit block types are offered for these tensors.
    assert!(convert::HeadTypes::parse_type("q8_0").is_ok());
    assert_eq!(convert::HeadTypes::parse_type("Q6_K"), Ok(GgmlType::Q6_K));
    let err = convert::HeadTypes::parse_type("tq2_0").unwrap_err();
    assert!(err.contains("q8_0") && err.contains("f16"), "{err}");
    let mut o = opts(&ckpt, &dir.path().join("bad.gguf"), OutType::I2_S);
    o.head_types.output = Some(GgmlType::TQ2_0);
    let err = convert::convert(&o).unwrap_err().to_string();
    assert!(err.contains("TQ2_0") && err.contains("LM head"), "{err}");
    assert!(!dir.path().join("bad.gguf").exists());
}
