//! End-to-end training runs on tiny models: the loss goes down, an interrupted run resumed ends
//! bit for bit where an uninterrupted one does, the export passes the directory check and
//! converts to a GGUF with the DLM keys, and ternary QAT exports convert to I2_S without loss.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use convert::tiny::{TinyFamily, TinySpec};
use convert::{ConvertOptions, OutType};
use model::{Attention, Batch, Logits, Model};
use train::config::TrainConfig;
use train::model::TrainModel;
use train::trainer::{train, TrainOptions};

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

/// The first `bytes` of the TinyStories sample, cut at a paragraph boundary.
fn stories_text(dir: &Path, bytes: usize) -> PathBuf {
    let text =
        std::fs::read_to_string(fixture("stories260K").join("tinystories_sample.txt")).unwrap();
    let cut = text[..bytes.min(text.len())]
        .rfind("\n\n")
        .unwrap_or(text.len());
    let path = dir.join("stories.txt");
    std::fs::write(&path, &text[..cut]).unwrap();
    path
}

fn config(overrides: &[String]) -> TrainConfig {
    TrainConfig::load(None, overrides).unwrap()
}

fn s(v: &str) -> String {
    v.to_string()
}

fn stories_overrides(data: &Path, out: &Path) -> Vec<String> {
    vec![
        s("model=stories260k"),
        format!("source.path={}", fixture("stories260K").display()),
        format!("data.path={}", data.display()),
        format!("output.path={}", out.display()),
        s("training.seq_len=64"),
        s("conversion.bd_size=16"),
        s("training.batch_size=4"),
        s("training.grad_accum=2"),
        s("training.log_every=1"),
    ]
}

fn quiet() -> TrainOptions {
    TrainOptions::default()
}

/// Training runs take both cores; running them one at a time is faster than side by side.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn stories260k_dlm_training_lowers_the_held_out_loss() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = stories_text(tmp.path(), 40_000);
    let mut o = stories_overrides(&data, &tmp.path().join("out"));
    o.extend([
        s("conversion.total_tokens=15360"), // 30 steps of 8 windows × 64 tokens
        s("data.holdout_fraction=0.1"),
        s("training.checkpoint_every=0"),
    ]);
    let report = train(&config(&o), &quiet()).unwrap();
    assert!(report.finished);
    assert_eq!(report.total_steps, 30);
    let (start, _) = report.held_out_start.unwrap();
    let (end, _) = report.held_out_end.unwrap();
    assert!(
        end < start - 0.3,
        "held-out DLM loss went from {start} to {end}"
    );
    let metrics = std::fs::read_to_string(report.run_dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The held-out line before training, then one line per step.
    assert_eq!(lines.len(), 31);
    assert_eq!(lines[30]["step"], 30);
    for key in [
        "loss",
        "dlm_loss",
        "lr",
        "grad_norm",
        "tokens",
        "tokens_per_s",
    ] {
        assert!(lines[30][key].is_number(), "metrics lack {key}");
    }
    assert!(lines[30]["held_out_dlm_loss"].is_number());
    let png = std::fs::read(report.run_dir.join("loss.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");

    // The export passes the checker and converts with the DLM keys.
    let summary = train::export::check_dir(&report.output).unwrap();
    assert_eq!(summary.mask_token_id, 512);
    assert_eq!(summary.config.vocab, 513);
    assert_eq!(summary.bd_size, 16);
    let gguf = tmp.path().join("out.gguf");
    let conv = convert::convert(&ConvertOptions {
        input: report.output.clone(),
        output: Some(gguf.clone()),
        outtype: OutType::F32,
        target: None,
        force_ternary: false,
        add_mask_token: false,
        name: None,
        progress: false,
        head_types: Default::default(),
    })
    .unwrap();
    assert_eq!(conv.mask_token_id, Some(512));
    assert_eq!(conv.block_size, Some(16));
    let file = gguf::GgufFile::open(&gguf).unwrap();
    assert_eq!(
        file.metadata
            .get_u32("tokenizer.ggml.mask_token_id")
            .unwrap(),
        512
    );
    assert_eq!(file.metadata.get_u32("dlm.block_size").unwrap(), 16);
}

#[test]
fn a_resumed_run_ends_bit_for_bit_where_an_uninterrupted_one_does() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = stories_text(tmp.path(), 12_000);
    let run = |out: &str, extra: &[&str], opts: TrainOptions| {
        let mut o = stories_overrides(&data, &tmp.path().join(out));
        o.extend([
            s("conversion.total_tokens=3072"), // 6 steps
            s("training.checkpoint_every=2"),
            s("objectives.ar.enabled=true"),
            s("objectives.dlm.weight=0.5"),
            s("training.warmup_ratio=0.3"),
        ]);
        o.extend(extra.iter().map(|e| e.to_string()));
        train(&config(&o), &opts)
    };
    let whole = run("whole", &[], quiet()).unwrap();
    assert!(whole.finished);

    // Interrupted after step 3 (one step past the checkpoint at 2), then resumed.
    let part = run(
        "parts",
        &[],
        TrainOptions {
            stop_after: Some(3),
            ..quiet()
        },
    )
    .unwrap();
    assert!(!part.finished);
    assert_eq!(part.steps, 3);
    assert!(!part.output.exists(), "an unfinished run exported");
    // Without --resume the checkpoint is not overwritten.
    let err = run("parts", &[], quiet()).err().unwrap().to_string();
    assert!(err.contains("--resume"), "{err}");
    // A different configuration is refused.
    let err = run(
        "parts",
        &["training.lr=0.5"],
        TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("training.lr"), "{err}");
    let resumed = run(
        "parts",
        &[],
        TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    assert!(resumed.finished);
    assert_eq!(resumed.steps, 6);
    assert_eq!(resumed.resumed_from, Some(2));
    let a = std::fs::read(whole.output.join("model.safetensors")).unwrap();
    let b = std::fs::read(resumed.output.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
    // The trained weights moved away from the source.
    let src = std::fs::read(fixture("stories260K").join("model.safetensors")).unwrap();
    assert_ne!(a.len(), src.len());

    // The metrics of the resumed run hold each step once, with the same losses.
    let read = |r: &train::trainer::TrainReport| -> Vec<(u64, f64)> {
        std::fs::read_to_string(r.run_dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter_map(|m| Some((m["step"].as_u64()?, m["loss"].as_f64()?)))
            .collect()
    };
    assert_eq!(read(&whole), read(&resumed));
}

/// A tiny chat model trained with ternary QAT: its export converts to I2_S and the engine's
/// logits on that file equal the trainer's QAT forward.
fn qat_round_trip(family: TinyFamily) {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut spec = TinySpec::new(family);
    spec.hidden = 128;
    spec.ffn = 256;
    spec.write(&src).unwrap();
    let data = tmp.path().join("chat.jsonl");
    let mut lines = String::new();
    for i in 0..40 {
        let (u, a) = if i % 2 == 0 {
            ("the cat", "once upon a time the cat was happy")
        } else {
            ("the dog", "the dog said play and the day was happy")
        };
        lines.push_str(
            &serde_json::json!({"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]})
                .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&data, lines).unwrap();
    let out = tmp.path().join("out");
    let mut o = vec![
        s("model=stories260k"),
        format!("source.path={}", src.display()),
        format!("data.path={}", data.display()),
        format!("output.path={}", out.display()),
        s("training.seq_len=32"),
        s("conversion.bd_size=16"),
        s("training.batch_size=2"),
        s("training.grad_accum=1"),
        s("conversion.total_tokens=128"),
        s("data.holdout_fraction=0"),
    ];
    if family != TinyFamily::BitNet {
        o.push(s("training.ternary=true"));
    }
    let report = train(&config(&o), &quiet()).unwrap();
    assert!(report.finished);
    train::export::check_dir(&out).unwrap();

    let gguf = tmp.path().join("m.gguf");
    convert::convert(&ConvertOptions {
        input: out.clone(),
        output: Some(gguf.clone()),
        outtype: OutType::I2_S,
        target: None,
        force_ternary: family != TinyFamily::BitNet,
        add_mask_token: false,
        name: None,
        progress: false,
        head_types: Default::default(),
    })
    .unwrap();
    // Every projection in the file is exactly the absmean ternarization of the exported master,
    // which is what the QAT forward multiplied with (the same function).
    let file = gguf::GgufFile::open(&gguf).unwrap();
    let masters =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    for (hf, gg) in [
        (
            "model.layers.0.self_attn.v_proj.weight",
            "blk.0.attn_v.weight",
        ),
        (
            "model.layers.1.self_attn.o_proj.weight",
            "blk.1.attn_output.weight",
        ),
        (
            "model.layers.0.mlp.down_proj.weight",
            "blk.0.ffn_down.weight",
        ),
        (
            "model.layers.1.mlp.gate_proj.weight",
            "blk.1.ffn_gate.weight",
        ),
    ] {
        let mut want: Vec<f32> = masters[hf].flatten_all().unwrap().to_vec1().unwrap();
        quant::ternarize_absmean(&mut want);
        let info = file.tensor(gg).unwrap();
        assert_eq!(info.ggml_type, gguf::GgmlType::I2_S);
        let got = quant::dequantize(
            info.ggml_type,
            file.tensor_data(info),
            info.dims[0] as usize,
            want.len(),
        )
        .unwrap();
        assert!(got == want, "{gg} is not the QAT weight");
    }

    // Logits: the engine's I2_S forward against the trainer's QAT forward, with the trainer's
    // embedding rounded to F16 as the converter stores it for ternary types.
    let engine = Model::load(&gguf).unwrap();
    let trainer = TrainModel::load(&out, &Device::Cpu, Some(true)).unwrap();
    let e = trainer.embed.as_tensor();
    trainer
        .embed
        .set(
            &e.to_dtype(candle_core::DType::F16)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap(),
        )
        .unwrap();
    if let Some(head) = &trainer.lm_head {
        let h = head.as_tensor();
        head.set(
            &h.to_dtype(candle_core::DType::F16)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap(),
        )
        .unwrap();
    }
    let toks: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % 290).collect();
    let mut cache = engine.new_cache(toks.len());
    let a = engine
        .forward(
            &mut cache,
            &Batch {
                tokens: &toks,
                attention: Attention::Causal,
                commit: true,
                logits: Logits::All,
            },
        )
        .unwrap();
    let ids = Tensor::from_vec(toks.clone(), (1, toks.len()), &Device::Cpu).unwrap();
    let b: Vec<f32> = trainer
        .forward_causal(&ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        d < 1e-3,
        "{family:?}: I2_S engine vs QAT trainer max |Δlogit| = {d}"
    );
}

#[test]
fn bitnet_qat_export_converts_to_i2s_without_loss() {
    qat_round_trip(TinyFamily::BitNet);
}

#[test]
fn ternary_qat_of_a_qwen2_model_converts_to_i2s_without_loss() {
    qat_round_trip(TinyFamily::Qwen2);
}

/// A newest checkpoint whose files did not all reach the disk (renamed into place, then found
/// truncated) is reported and skipped: the run resumes from the one before and still ends bit
/// for bit where an uninterrupted run does.
#[test]
fn a_damaged_newest_checkpoint_is_skipped_for_the_previous_one() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = stories_text(tmp.path(), 12_000);
    let run = |out: &str, opts: TrainOptions| {
        let mut o = stories_overrides(&data, &tmp.path().join(out));
        o.extend([
            s("conversion.total_tokens=3072"), // 6 steps
            s("training.checkpoint_every=2"),
            s("data.holdout_fraction=0"),
        ]);
        train(&config(&o), &opts)
    };
    let whole = run("whole", quiet()).unwrap();
    let part = run(
        "parts",
        TrainOptions {
            stop_after: Some(5),
            ..quiet()
        },
    )
    .unwrap();
    let root = part.run_dir.join(train::checkpoint::DIR);
    let steps: Vec<u64> = train::checkpoint::list(&root)
        .unwrap()
        .iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(steps, vec![4, 2]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("step-4/optimizer.safetensors"))
        .unwrap();
    f.set_len(100).unwrap();
    drop(f);
    let resumed = run(
        "parts",
        TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(resumed.resumed_from, Some(2));
    assert!(resumed.finished);
    let a = std::fs::read(whole.output.join("model.safetensors")).unwrap();
    let b = std::fs::read(resumed.output.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
    // The damaged checkpoint was replaced when the run got past step 4 again.
    let steps: Vec<u64> = train::checkpoint::list(&root)
        .unwrap()
        .iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(steps, vec![6, 4]);
    train::checkpoint::verify(&root.join("step-4")).unwrap();
}

/// `--resume` before the first checkpoint exists (a job preempted early re-running its command
/// line) starts from step 0 instead of failing, and its result is the uninterrupted run's.
#[test]
fn resume_before_any_checkpoint_starts_from_step_0() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = stories_text(tmp.path(), 12_000);
    let run = |out: &str, opts: TrainOptions| {
        let mut o = stories_overrides(&data, &tmp.path().join(out));
        o.extend([
            s("conversion.total_tokens=1536"), // 3 steps
            s("training.checkpoint_every=0"),  // only the final checkpoint
            s("data.holdout_fraction=0"),
        ]);
        train(&config(&o), &opts)
    };
    let resume = TrainOptions {
        resume: true,
        ..quiet()
    };
    // Preempted after one step, before any checkpoint.
    let first = run(
        "out",
        TrainOptions {
            stop_after: Some(1),
            ..resume.clone()
        },
    )
    .unwrap();
    assert_eq!(first.resumed_from, None);
    assert!(!first.finished);
    let root = first.run_dir.join(train::checkpoint::DIR);
    assert!(train::checkpoint::list(&root).unwrap().is_empty());
    let second = run("out", resume).unwrap();
    assert_eq!(second.resumed_from, None, "there was nothing to resume");
    assert!(second.finished);
    assert_eq!(second.steps, 3);
    let whole = run("whole", quiet()).unwrap();
    let a = std::fs::read(whole.output.join("model.safetensors")).unwrap();
    let b = std::fs::read(second.output.join("model.safetensors")).unwrap();
    assert!(a == b);
    // The metrics hold each step once.
    let metrics = std::fs::read_to_string(second.run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
}
