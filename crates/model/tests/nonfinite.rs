//! Non-finite floats in a model file (issue 13) are refused at load with an error naming the key
//! or tensor: RMSNorm weights, the RoPE base and scaling factor, the RMSNorm epsilon and the I2_S
//! per-tensor scale. Each case copies a tiny converted BitNet GGUF through `GgufWriter`, changing
//! one value.

use convert::tiny::{TinyFamily, TinySpec};
use convert::OutType;
use gguf::{GgmlType, GgufFile, GgufWriter, Metadata, Value};
use model::{Attention, Batch, Logits, Model};

/// A tiny BitNet b1.58 model with I2_S projections, as a parsed GGUF.
fn tiny_i2s() -> GgufFile {
    let dir = tempfile::tempdir().unwrap();
    let path = TinySpec::new(TinyFamily::BitNet)
        .write_gguf(dir.path(), OutType::I2_S)
        .unwrap();
    GgufFile::open(&path).unwrap()
}

/// A change to one tensor's bytes: its name and the edit.
type Patch<'a> = (&'a str, &'a dyn Fn(&mut [u8]));

/// `src` rewritten through `GgufWriter`, with `md` changing the metadata and `data` changing the
/// bytes of the tensor it names.
fn rewrite(src: &GgufFile, md: impl FnOnce(&mut Metadata), data: Option<Patch>) -> GgufFile {
    let mut meta = src.metadata.clone();
    md(&mut meta);
    let mut w = GgufWriter::new();
    for (k, v) in meta.iter() {
        w.add(k, v.clone()).unwrap();
    }
    for t in &src.tensors {
        w.add_tensor(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes, |i, _, out| {
        let t = &src.tensors[i];
        let mut b = src.tensor_data(t).to_vec();
        if let Some((name, patch)) = data {
            if t.name == name {
                patch(&mut b);
            }
        }
        out.write_all(&b)
    })
    .unwrap();
    GgufFile::from_bytes(bytes).unwrap()
}

fn load_err(file: GgufFile) -> String {
    match Model::from_file(file) {
        Ok(_) => panic!("the model loaded"),
        Err(e) => e.to_string(),
    }
}

fn set_f32(key: &'static str, v: f32) -> impl FnOnce(&mut Metadata) {
    move |md| md.insert(key, Value::F32(v))
}

/// Sets element `i` of an F32 tensor.
fn f32_at(i: usize, v: f32) -> impl Fn(&mut [u8]) {
    move |b| b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes())
}

/// The logits of every position of a short prompt.
fn logits(model: &Model) -> Vec<f32> {
    let mut cache = model.new_cache(8);
    let batch = Batch {
        tokens: &[1, 17, 42, 99],
        attention: Attention::Causal,
        commit: true,
        logits: Logits::All,
    };
    model.forward(&mut cache, &batch).unwrap()
}

#[test]
fn the_unchanged_copy_loads_and_computes_the_same_logits() {
    let src = tiny_i2s();
    assert_eq!(
        src.metadata.get_str("general.architecture").unwrap(),
        "bitnet-b1.58"
    );
    let q = src.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ggml_type, GgmlType::I2_S);
    let copy = Model::from_file(rewrite(&src, |_| {}, None)).unwrap();
    let base = src.metadata.get_f32("bitnet-b1.58.rope.freq_base").unwrap();
    assert_eq!(copy.config.rope_base, base);
    let original = Model::from_file(src).unwrap();
    let (a, b) = (logits(&original), logits(&copy));
    assert_eq!(a.len(), 4 * original.config.vocab);
    assert!(a.iter().all(|x| x.is_finite()));
    assert_eq!(a, b);
}

#[test]
fn a_nan_norm_weight_is_refused_naming_the_tensor_and_element() {
    let src = tiny_i2s();
    let norm = src.tensor("blk.1.ffn_norm.weight").unwrap();
    assert_eq!(norm.ggml_type, GgmlType::F32);
    let err = load_err(rewrite(
        &src,
        |_| {},
        Some(("blk.1.ffn_norm.weight", &f32_at(3, f32::NAN))),
    ));
    assert_eq!(
        err,
        "tensor `blk.1.ffn_norm.weight`: element 3 is NaN; norm weights and biases must be finite"
    );
    let err = load_err(rewrite(
        &src,
        |_| {},
        Some(("output_norm.weight", &f32_at(0, f32::NEG_INFINITY))),
    ));
    assert_eq!(
        err,
        "tensor `output_norm.weight`: element 0 is -inf; norm weights and biases must be finite"
    );
}

#[test]
fn a_nan_rope_base_or_scaling_factor_or_epsilon_is_refused_naming_the_key() {
    let src = tiny_i2s();
    let cases = [
        (
            "bitnet-b1.58.rope.freq_base",
            f32::NAN,
            "model config: bitnet-b1.58.rope.freq_base is NaN; it must be a finite number > 0",
        ),
        (
            "bitnet-b1.58.rope.freq_base",
            0.0,
            "model config: bitnet-b1.58.rope.freq_base is 0; it must be a finite number > 0",
        ),
        (
            "bitnet-b1.58.rope.scaling.factor",
            f32::INFINITY,
            "model config: bitnet-b1.58.rope.scaling.factor is inf; it must be a finite number > 0",
        ),
        (
            "bitnet-b1.58.attention.layer_norm_rms_epsilon",
            f32::NAN,
            "model config: bitnet-b1.58.attention.layer_norm_rms_epsilon is NaN; it must be a \
             finite number ≥ 0",
        ),
    ];
    for (key, value, expected) in cases {
        assert_eq!(load_err(rewrite(&src, set_f32(key, value), None)), expected);
    }
}

#[test]
fn a_nan_i2s_scale_is_refused_naming_the_tensor() {
    let src = tiny_i2s();
    let at = src.tensor("blk.0.attn_q.weight").unwrap().n_bytes as usize - 32;
    let nan_scale = move |b: &mut [u8]| b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = load_err(rewrite(
        &src,
        |_| {},
        Some(("blk.0.attn_q.weight", &nan_scale)),
    ));
    assert_eq!(
        err,
        "tensor `blk.0.attn_q.weight`: the I2_S per-tensor scale is NaN; it must be finite"
    );
}
