//! Models whose LM head or embedding table is Q6_K (`dlm convert --output-type q6_k` /
//! `--token-embedding-type q6_k`) load and compute what the same model with F32 tables computes,
//! up to the 6-bit quantization of those tables.
//!
//! Each case converts one tiny checkpoint (width 256, vocabulary 384) twice, once with F32
//! tables and once with Q6_K ones, everything else equal, and compares the logits of 12 tokens.
//!
//! The tolerances. A Q6_K weight is off by at most half a step of its 16-weight group (a step
//! is about the group's max/32; the codec's unit test measures a relative RMS error of 1.7 %
//! on normal data), and the head's activations are rounded to Q8_K (1/254 of each 256-block's
//! max). With the random weights here a logit's error is then about 1.7 % of a typical logit;
//! measured as max |Δ| over max |logit| of a position it is 1.3–2.1 %, so a Q6_K head must stay
//! under 3 %. A Q6_K embedding perturbs the first layer's input by the same relative amount,
//! which then passes through the (random, untrained) layers, and in BitNet through their int8
//! activation roundings: measured 1.8–4.4 % (Llama) and 3–7 % (BitNet); the bound is 10 %.
//! A wrong code, scale or group order gives errors of order 100 %. The test also checks that
//! the error is not zero (the tables really are quantized) and which tensors are Q6_K.
//!
//! The lookup itself is checked exactly: a Q6_K embedding gives bit for bit the logits of an F32
//! embedding holding the Q6_K table's decoded values (a checkpoint rewritten with them).

use std::path::{Path, PathBuf};

use convert::tiny::{TinyFamily, TinySpec};
use convert::{ConvertOptions, HeadTypes, OutType};
use gguf::GgmlType;
use model::{Attention, Batch, Logits, Model};

const TOKENS: [u32; 12] = [1, 17, 200, 42, 7, 250, 3, 99, 12, 300, 64, 5];

fn convert_to(ckpt: &Path, out: PathBuf, outtype: OutType, head_types: HeadTypes) -> PathBuf {
    let opts = ConvertOptions {
        input: ckpt.to_path_buf(),
        output: Some(out.clone()),
        outtype,
        target: None,
        force_ternary: false,
        add_mask_token: false,
        name: None,
        progress: false,
        head_types,
    };
    convert::convert(&opts).unwrap();
    out
}

fn logits(path: &Path) -> (Model, Vec<f32>) {
    let model = Model::load(path).unwrap();
    let mut cache = model.new_cache(64);
    let batch = Batch {
        tokens: &TOKENS,
        attention: Attention::Causal,
        commit: true,
        logits: Logits::All,
    };
    let out = model.forward(&mut cache, &batch).unwrap();
    (model, out)
}

/// Per position: max |a − b| / max |b|.
fn rel_errors(ours: &[f32], reference: &[f32], vocab: usize) -> Vec<f32> {
    ours.chunks(vocab)
        .zip(reference.chunks(vocab))
        .map(|(a, b)| {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
        })
        .collect()
}

/// Converts `family` with F32 tables and with `q6_k` tables, checks the Q6_K tensors are there,
/// and returns the largest relative logit error over the positions.
fn compare(family: TinyFamily, outtype: OutType, q6_k: HeadTypes, f32_tables: HeadTypes) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let mut spec = TinySpec::new(family);
    spec.seed = 11;
    spec.write(&ckpt).unwrap();
    let reference = convert_to(&ckpt, dir.path().join("f32.gguf"), outtype, f32_tables);
    let quantized = convert_to(&ckpt, dir.path().join("q6k.gguf"), outtype, q6_k);

    let (model, got) = logits(&quantized);
    let file = model.file();
    let ty = |name: &str| file.tensor(name).map(|t| t.ggml_type);
    if q6_k.token_embd == Some(GgmlType::Q6_K) {
        assert_eq!(ty("token_embd.weight"), Some(GgmlType::Q6_K), "{family:?}");
    }
    if q6_k.output == Some(GgmlType::Q6_K) {
        assert_eq!(ty("output.weight"), Some(GgmlType::Q6_K), "{family:?}");
    }
    let (_, want) = logits(&reference);
    assert!(got.iter().all(|v| v.is_finite()));
    let errs = rel_errors(&got, &want, model.config.vocab);
    let worst = errs.iter().fold(0f32, |m, &e| m.max(e));
    eprintln!("{family:?} {outtype:?} {q6_k:?}: relative logit errors {errs:.4?}");
    assert!(
        worst > 0.0,
        "{family:?}: Q6_K tables gave the F32 logits exactly"
    );
    worst
}

const F32_TABLES: HeadTypes = HeadTypes {
    token_embd: Some(GgmlType::F32),
    output: Some(GgmlType::F32),
};

#[test]
fn untied_q6_k_head_and_embedding_stay_within_the_quantization_bound() {
    // Llama: untied head. Head only, embedding only, both.
    for q6_k in [
        HeadTypes {
            token_embd: Some(GgmlType::F32),
            output: Some(GgmlType::Q6_K),
        },
        HeadTypes {
            token_embd: Some(GgmlType::Q6_K),
            output: Some(GgmlType::F32),
        },
        HeadTypes {
            token_embd: Some(GgmlType::Q6_K),
            output: Some(GgmlType::Q6_K),
        },
    ] {
        let worst = compare(TinyFamily::Llama, OutType::F32, q6_k, F32_TABLES);
        let bound = error_bound(q6_k);
        assert!(
            worst < bound,
            "Llama {q6_k:?}: relative logit error {worst}"
        );
    }
}

/// The relative logit error allowed: 3 % for a Q6_K head alone (from the weights' ~1.7 %
/// quantization error), 10 % once a Q6_K embedding's error passes through the untrained layers.
fn error_bound(tables: HeadTypes) -> f32 {
    if tables.token_embd == Some(GgmlType::Q6_K) {
        0.1
    } else {
        3e-2
    }
}

#[test]
fn tied_q6_k_tables_stay_within_the_quantization_bound() {
    // BitNet (I2_S body) ties its head to the embedding: a Q6_K table used both ways, and an
    // F32 table with a separate Q6_K head.
    let f32_tied = HeadTypes {
        token_embd: Some(GgmlType::F32),
        output: None,
    };
    for q6_k in [
        HeadTypes {
            token_embd: Some(GgmlType::Q6_K),
            output: None,
        },
        HeadTypes {
            token_embd: Some(GgmlType::F32),
            output: Some(GgmlType::Q6_K),
        },
    ] {
        let worst = compare(TinyFamily::BitNet, OutType::I2_S, q6_k, f32_tied);
        let bound = error_bound(q6_k);
        assert!(
            worst < bound,
            "BitNet {q6_k:?}: relative logit error {worst}"
        );
    }
}

/// Rewrites `name` in the single-file F32 checkpoint `src` into `dst` as `f(values)`, copying
/// everything else.
fn rewrite_tensor(src: &Path, dst: &Path, name: &str, f: impl Fn(&[f32], usize) -> Vec<f32>) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
            for (n, t) in st.tensors() {
                let mut data = t.data().to_vec();
                if n == name {
                    assert_eq!(t.dtype(), safetensors::Dtype::F32);
                    let v: Vec<f32> = data
                        .chunks(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    let row_len = *t.shape().last().unwrap();
                    data = f(&v, row_len)
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect();
                }
                owned.push((n, t.dtype(), t.shape().to_vec(), data));
            }
            let views: Vec<(String, safetensors::tensor::TensorView)> = owned
                .iter()
                .map(|(n, d, s, b)| {
                    (
                        n.clone(),
                        safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize_to_file(views, None, &dst.join(file)).unwrap();
        } else {
            std::fs::copy(&path, dst.join(file)).unwrap();
        }
    }
}

#[test]
fn a_q6_k_embedding_looks_up_exactly_its_decoded_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let mut spec = TinySpec::new(TinyFamily::Llama);
    spec.seed = 13;
    spec.write(&ckpt).unwrap();
    let decoded = dir.path().join("decoded");
    rewrite_tensor(
        &ckpt,
        &decoded,
        "model.embed_tokens.weight",
        |v, row_len| {
            let bytes = quant::quantize(GgmlType::Q6_K, v, row_len).unwrap();
            quant::dequantize(GgmlType::Q6_K, &bytes, row_len, v.len()).unwrap()
        },
    );
    let q6_k = HeadTypes {
        token_embd: Some(GgmlType::Q6_K),
        output: Some(GgmlType::F32),
    };
    let a = convert_to(&ckpt, dir.path().join("q6k.gguf"), OutType::F32, q6_k);
    let b = convert_to(
        &decoded,
        dir.path().join("f32.gguf"),
        OutType::F32,
        F32_TABLES,
    );
    let (model, got) = logits(&a);
    assert_eq!(
        model.file().tensor("token_embd.weight").unwrap().ggml_type,
        GgmlType::Q6_K
    );
    let (_, want) = logits(&b);
    assert!(
        got.iter()
            .zip(&want)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "the Q6_K lookup differs from its decoded table"
    );
}
