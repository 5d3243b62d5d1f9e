//! The loader reads every BitNet b1.58 variant `dlm convert` writes (`--target llama.cpp`: arch
//! `bitnet`; `--target bitnet.cpp`: `bitnet-b1.58`; both with `<arch>.hidden_activation`) and the
//! files written before the key existed, and computes the same model from all of them.

use convert::tiny::{TinyFamily, TinySpec};
use convert::{ConvertOptions, OutType, Target};
use gguf::{GgufFile, GgufWriter, Metadata, Value};
use model::{Attention, Batch, Logits, Model};

/// The tiny BitNet converted to F16 for `target`.
fn tiny(target: Target) -> GgufFile {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    TinySpec::new(TinyFamily::BitNet).write(&ckpt).unwrap();
    let out = dir.path().join("m.gguf");
    convert::convert(&ConvertOptions {
        input: ckpt,
        output: Some(out.clone()),
        outtype: OutType::F16,
        target: Some(target),
        force_ternary: false,
        add_mask_token: false,
        name: None,
        progress: false,
        head_types: Default::default(),
    })
    .unwrap();
    GgufFile::open(&out).unwrap()
}

/// `src` copied through `GgufWriter` with its metadata edited.
fn with_metadata(src: &GgufFile, edit: impl FnOnce(&mut Metadata)) -> GgufFile {
    let mut md = src.metadata.clone();
    edit(&mut md);
    let mut w = GgufWriter::new();
    for (k, v) in md.iter() {
        w.add(k, v.clone()).unwrap();
    }
    for t in &src.tensors {
        w.add_tensor(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes, |i, _, out| {
        out.write_all(src.tensor_data(&src.tensors[i]))
    })
    .unwrap();
    GgufFile::from_bytes(bytes).unwrap()
}

fn logits(file: GgufFile) -> Vec<f32> {
    let model = Model::from_file(file).unwrap();
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
fn both_targets_and_older_files_compute_the_same_model() {
    let llama = tiny(Target::LlamaCpp);
    let bitnet = tiny(Target::BitnetCpp);
    assert_eq!(llama.architecture().unwrap(), "bitnet");
    assert_eq!(bitnet.architecture().unwrap(), "bitnet-b1.58");
    assert_eq!(
        llama.metadata.get_str("bitnet.hidden_activation").unwrap(),
        "relu2"
    );
    let reference = logits(with_metadata(&bitnet, |_| {}));
    assert_eq!(
        logits(with_metadata(&llama, |_| {})),
        reference,
        "arch `bitnet` + relu2"
    );

    // A file from before the key: `bitnet-b1.58` alone means squared ReLU.
    let old = with_metadata(&bitnet, |md| {
        md.remove("bitnet-b1.58.hidden_activation");
    });
    assert_eq!(logits(old), reference, "old bitnet-b1.58 file");
    // The key as older dlm versions spelled it (`hidden_act`).
    let old_key = with_metadata(&llama, |md| {
        md.remove("bitnet.hidden_activation");
        md.insert("bitnet.hidden_act", Value::String("relu2".into()));
    });
    assert_eq!(logits(old_key), reference, "bitnet.hidden_act = relu2");

    // Plain `bitnet` without the key is the 1bitLLM model (SiLU), as llama.cpp computes it:
    // the logits change, so the key is what makes the llama.cpp-target file right.
    let silu = with_metadata(&llama, |md| {
        md.remove("bitnet.hidden_activation");
    });
    let silu = logits(silu);
    let diff = silu
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff > 1e-3, "SiLU and squared ReLU gave the same logits");
}

#[test]
fn an_unknown_activation_is_refused_naming_the_key() {
    let file = with_metadata(&tiny(Target::LlamaCpp), |md| {
        md.insert("bitnet.hidden_activation", Value::String("gelu".into()));
    });
    let err = Model::from_file(file).err().unwrap().to_string();
    assert!(
        err.contains("bitnet.hidden_activation") && err.contains("gelu"),
        "{err}"
    );
}
