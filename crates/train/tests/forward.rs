//! The trainer's candle forward against an independent implementation: our inference engine
//! (`model` crate) on a GGUF written by our converter. The engine uses llama.cpp's interleaved
//! RoPE on permuted q/k and its own attention; the trainer uses Hugging Face's rotate-half on the
//! checkpoint layout, so agreement checks both.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use convert::tiny::{TinyFamily, TinySpec};
use convert::{ConvertOptions, OutType};
use model::{Attention, Batch, Logits, Model};
use train::model::{Attn, DlmMasks, TrainModel};

fn fixture(name: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for base in ["../../../shared/fixtures", "/work/shared/fixtures"] {
        let p = here.join(base).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("fixture {name} not found beside the checkout or under /work/shared/fixtures");
}

fn to_gguf(dir: &Path, out: &Path, outtype: OutType) -> Model {
    convert::convert(&ConvertOptions {
        input: dir.into(),
        output: Some(out.into()),
        outtype,
        target: None,
        force_ternary: false,
        add_mask_token: false,
        name: None,
        progress: false,
        head_types: Default::default(),
    })
    .unwrap();
    Model::load(out).unwrap()
}

fn engine_logits(model: &Model, tokens: &[u32], attention: Attention) -> Vec<f32> {
    let mut cache = model.new_cache(tokens.len());
    let batch = Batch {
        tokens,
        attention,
        commit: true,
        logits: Logits::All,
    };
    model.forward(&mut cache, &batch).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn tokens(n: usize, vocab: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) % vocab as u32)
        .collect()
}

fn trainer_causal(m: &TrainModel, toks: &[u32]) -> Vec<f32> {
    let ids = Tensor::from_vec(toks.to_vec(), (1, toks.len()), &Device::Cpu).unwrap();
    m.forward_causal(&ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn stories260k_causal_logits_match_the_engine() {
    let src = fixture("stories260K");
    let tmp = tempfile::tempdir().unwrap();
    let engine = to_gguf(&src, &tmp.path().join("s.gguf"), OutType::F32);
    let trainer = TrainModel::load(&src, &Device::Cpu, None).unwrap();
    assert!(!trainer.ternary);
    let toks = tokens(40, 512, 1);
    let a = engine_logits(&engine, &toks, Attention::Causal);
    let b = trainer_causal(&trainer, &toks);
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "max |Δlogit| = {d}");
}

#[test]
fn every_family_matches_the_engine_causal_and_block_causal() {
    for family in [
        TinyFamily::Llama,
        TinyFamily::Qwen2,
        TinyFamily::Qwen3,
        TinyFamily::BitNet,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = TinySpec::new(family);
        spec.hidden = 64;
        spec.ffn = 128;
        spec.shards = if family == TinyFamily::Qwen2 { 2 } else { 1 };
        spec.write(tmp.path()).unwrap();
        let engine = to_gguf(tmp.path(), &tmp.path().join("m.gguf"), OutType::F32);
        let trainer = TrainModel::load(tmp.path(), &Device::Cpu, None).unwrap();
        assert_eq!(trainer.ternary, family == TinyFamily::BitNet);
        let toks = tokens(24, spec.vocab_size, 7);
        let a = engine_logits(&engine, &toks, Attention::Causal);
        let b = trainer_causal(&trainer, &toks);
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-4, "{family:?} causal: max |Δlogit| = {d}");

        // Block-causal attention through the general mask entry point.
        let bs = 8;
        let t = toks.len();
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                if (i % t) / bs <= (i / t) / bs {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
        let ids = Tensor::from_vec(toks.clone(), (1, t), &Device::Cpu).unwrap();
        let positions: Vec<u32> = (0..t as u32).collect();
        let h = trainer.hidden(&ids, &positions, Attn::Mask(&mask)).unwrap();
        let b: Vec<f32> = trainer
            .logits(&h)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let a = engine_logits(&engine, &toks, Attention::BlockCausal { block_size: bs });
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-4, "{family:?} block-causal: max |Δlogit| = {d}");
    }
}

#[test]
fn blockwise_block_diffusion_attention_equals_the_full_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = TinySpec::new(TinyFamily::Qwen3);
    spec.hidden = 64;
    spec.ffn = 128;
    spec.write(tmp.path()).unwrap();
    let m = TrainModel::load(tmp.path(), &Device::Cpu, None).unwrap();
    let (l, bd) = (24, 8);
    let mut ids = tokens(2 * l, spec.vocab_size, 3);
    ids.extend(tokens(2 * l, spec.vocab_size, 11));
    let ids = Tensor::from_vec(ids, (2, 2 * l), &Device::Cpu).unwrap();
    let full = Tensor::from_vec(
        train::recipe::block_diff_mask(l, bd),
        (2 * l, 2 * l),
        &Device::Cpu,
    )
    .unwrap();
    let positions = train::recipe::positions_2l(l);
    let a: Vec<f32> = m
        .hidden(&ids, &positions, Attn::Mask(&full))
        .unwrap()
        .reshape((2, 2 * l, 64))
        .unwrap()
        .narrow(1, 0, l)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let masks = DlmMasks::new(l, bd, &Device::Cpu).unwrap();
    let b: Vec<f32> = m
        .dlm_hidden(&ids, &masks)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "max |Δh| = {d}");
}
