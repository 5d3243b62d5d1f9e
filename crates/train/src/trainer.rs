//! The training loop: data → views → loss → AdamW, with metrics, checkpoints, resume and export.
//!
//! One optimizer step takes `grad_accum` micro-batches of `batch_size` windows. The windows of
//! step `s` are the global window indices `(s·grad_accum + m)·batch_size + i` read through a
//! per-epoch permutation seeded with `seed` (the data cursor), and their noise comes from
//! [`recipe::step_rng`]`(seed, s)`: a step is a pure function of its number and the state of the
//! weights and moments, which is what makes `--resume` continue bit for bit.
//!
//! The loss of a step (the seed's unified objective, §2.5 of the reference notes):
//!
//! ```text
//! DLM = Σ_{windows, views} CE(noisy-half row i → target i) / Σ_windows #supervised labels
//! AR  = Σ_windows CE(causal row i → label i+1) / #AR targets
//! loss = [ar.enabled]·AR + [dlm.enabled]·dlm.weight·DLM
//! ```
//!
//! Each micro-batch's share of both sums is back-propagated at once and the gradients added, so
//! the step's gradient is that of the whole step's loss. Files, beside the exported directory
//! `output.path` in `<output.path>.run/`: `metrics.jsonl` (one line per logged step), `loss.png`,
//! and `checkpoints/step-N/` (crash-safe: written to `step-N.tmp/`, fsynced, completed by a
//! manifest and renamed; `--resume` takes the newest one that matches its manifest, see
//! [`checkpoint`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint;
use crate::config::{self, TrainConfig};
use crate::data::{self, DataTokenizer, Window, MASK_TOKEN};
use crate::error::{Result, TrainError};
use crate::export::{self, ExportSpec};
use crate::loss::ce_sum;
use crate::model::{Attn, DlmMasks, TrainModel};
use crate::optim::{lr_at, warmup_steps, AdamW, AdamWConfig};
use crate::plot;
use crate::recipe::{self, NoiseConfig};

/// How a run is driven (beyond its [`TrainConfig`]).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue from the run's newest complete checkpoint (damaged or half-written ones are
    /// reported and skipped); with no checkpoint yet, start from step 0 (saying so), as a
    /// preempted job re-running its command line needs.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop after this many optimizer steps of this invocation, without exporting (as an
    /// interrupted run would; tests use it).
    pub stop_after: Option<u64>,
    /// Print what the run does (data, steps, files) on stderr.
    pub verbose: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// The exported directory (written only when `finished`).
    pub output: PathBuf,
    /// Metrics, plot and checkpoint directory.
    pub run_dir: PathBuf,
    /// Optimizer steps completed in total.
    pub steps: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Data tokens consumed in total (windows × seq_len).
    pub tokens: u64,
    /// Whether the run reached `total_steps` (and exported).
    pub finished: bool,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Data tokens per second in this invocation.
    pub tokens_per_s: f64,
    /// Held-out (DLM, AR) loss before the first step of the run, when there is a held-out set.
    pub held_out_start: Option<(f64, f64)>,
    /// Held-out (DLM, AR) loss at the end of this invocation.
    pub held_out_end: Option<(f64, f64)>,
    /// The mask token id.
    pub mask_token_id: u32,
    /// Training windows and held-out windows.
    pub windows: (usize, usize),
    /// The step of the checkpoint this invocation resumed from (`None`: it started from step 0,
    /// `--resume` included when there was no checkpoint yet).
    pub resumed_from: Option<u64>,
}

/// The checkpoint's `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    /// Optimizer steps completed.
    step: u64,
    /// Data tokens consumed.
    tokens: u64,
    /// AdamW's bias-correction count.
    optimizer_t: u64,
    /// The noise rng: step `s` draws from ChaCha8 seeded with `seed` on stream `s`.
    rng: RngState,
    /// The next global window index (`step · grad_accum · batch_size`).
    data_cursor: u64,
    /// Steps of the whole run.
    total_steps: u64,
    /// The mask token id.
    mask_token_id: u32,
    /// Embedding rows.
    vocab_rows: usize,
    /// The run's configuration.
    config: TrainConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RngState {
    seed: u64,
    next_stream: u64,
}

/// The device a config asks for.
pub fn device_for(d: config::Device) -> Result<Device> {
    match d {
        config::Device::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        config::Device::Cuda => Ok(Device::new_cuda(0)?),
        #[cfg(not(feature = "cuda"))]
        config::Device::Cuda => Err(TrainError::Config(
            "device=cuda needs a build with the `cuda` feature (cargo build --release -p cli --features train/cuda, on a machine with the CUDA toolkit)".into(),
        )),
    }
}

/// The run directory of an output directory: `<output>.run`.
pub fn run_dir(output: &Path) -> PathBuf {
    export::sibling(output, "run")
}

/// Global window index → training window, through a per-epoch permutation seeded with `seed`.
struct Order {
    perms: HashMap<u64, Vec<usize>>,
    n: usize,
    seed: u64,
}

impl Order {
    fn index(&mut self, k: u64) -> usize {
        let epoch = k / self.n as u64;
        let (n, seed) = (self.n, self.seed);
        let perm = self.perms.entry(epoch).or_insert_with(|| {
            let mut p: Vec<usize> = (0..n).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6461_7461);
            rng.set_stream(epoch);
            p.shuffle(&mut rng);
            p
        });
        perm[(k % n as u64) as usize]
    }
}

/// Sums of one batch's losses (as f64 for the metrics) and the graph to back-propagate.
struct BatchLoss {
    loss: Option<Tensor>,
    dlm_sum: f64,
    ar_sum: f64,
}

/// Which loss terms a batch computes.
#[derive(Clone, Copy, Debug)]
struct Objectives {
    dlm: bool,
    dlm_weight: f64,
    ar: bool,
}

/// Everything a step needs that does not change between steps.
struct Setup {
    model: TrainModel,
    noise: NoiseConfig,
    dlm_masks: DlmMasks,
    causal_mask: Tensor,
    cfg: TrainConfig,
}

impl Setup {
    /// The objectives the run trains.
    fn objectives(&self) -> Objectives {
        let o = &self.cfg.objectives;
        Objectives {
            dlm: o.dlm.enabled,
            dlm_weight: o.dlm.weight,
            ar: o.ar.enabled,
        }
    }

    /// The loss terms of `windows` with their `views`, each normalised by the step's totals.
    fn batch_loss(
        &self,
        windows: &[&Window],
        views: &[recipe::Views],
        n_dlm: usize,
        n_ar: usize,
        obj: Objectives,
    ) -> Result<BatchLoss> {
        let dev = self.model.device();
        let l = self.cfg.training.seq_len;
        let mut out = BatchLoss {
            loss: None,
            dlm_sum: 0.0,
            ar_sum: 0.0,
        };
        if obj.dlm && n_dlm > 0 {
            let mut ids = Vec::new();
            let mut targets = Vec::new();
            let mut rows = 0;
            for v in views.iter().flat_map(|v| &v.views) {
                ids.extend_from_slice(&v.input_ids);
                targets.extend_from_slice(&v.targets);
                rows += 1;
            }
            let ids = Tensor::from_vec(ids, (rows, 2 * l), dev)?;
            let hidden = self.model.dlm_hidden(&ids, &self.dlm_masks)?;
            let (ce, _) = ce_sum(&self.model, &hidden, &targets)?;
            out.dlm_sum = ce.to_scalar::<f32>()? as f64;
            out.loss = Some((ce * (obj.dlm_weight / n_dlm as f64))?);
        }
        if obj.ar && n_ar > 0 {
            let mut ids = Vec::new();
            let mut targets = Vec::new();
            for w in windows {
                ids.extend_from_slice(&w.input_ids);
                targets.extend(recipe::ar_targets(w));
            }
            let ids = Tensor::from_vec(ids, (windows.len(), l), dev)?;
            let positions: Vec<u32> = (0..l as u32).collect();
            let hidden = self
                .model
                .hidden(&ids, &positions, Attn::Mask(&self.causal_mask))?;
            let (ce, _) = ce_sum(&self.model, &hidden, &targets)?;
            out.ar_sum = ce.to_scalar::<f32>()? as f64;
            let term = (ce * (1.0 / n_ar as f64))?;
            out.loss = Some(match out.loss {
                Some(d) => (d + term)?,
                None => term,
            });
        }
        Ok(out)
    }

    /// The noisy views of `windows` drawn from `rng` (in order), with the loss normalisers:
    /// supervised labels of the DLM views and of the AR targets.
    fn noised(
        &self,
        windows: &[&Window],
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<(Vec<recipe::Views>, usize, usize)> {
        let views = windows
            .iter()
            .map(|w| recipe::sample_views(w, &self.noise, rng))
            .collect::<Result<Vec<_>>>()?;
        let n_dlm = views.iter().map(|v| v.n_supervised).sum();
        let n_ar = windows
            .iter()
            .map(|w| data::count_supervised(&recipe::ar_targets(w)))
            .sum();
        Ok((views, n_dlm, n_ar))
    }

    /// Held-out (DLM, AR) loss over at most 64 windows, with fixed noise (comparable across calls).
    fn evaluate(&self, windows: &[Window]) -> Result<(f64, f64)> {
        let windows: Vec<&Window> = windows.iter().take(64).collect();
        let mut rng = recipe::step_rng(self.cfg.seed ^ 0x6576_616c, 0);
        let (views, n_dlm, n_ar) = self.noised(&windows, &mut rng)?;
        let both = Objectives {
            dlm: true,
            dlm_weight: 1.0,
            ar: true,
        };
        let (mut dlm, mut ar) = (0.0, 0.0);
        let b = self.cfg.training.batch_size.max(1);
        for (ws, vs) in windows.chunks(b).zip(views.chunks(b)) {
            let r = self.batch_loss(ws, vs, n_dlm, n_ar, both)?;
            dlm += r.dlm_sum;
            ar += r.ar_sum;
        }
        Ok((dlm / n_dlm.max(1) as f64, ar / n_ar.max(1) as f64))
    }
}

/// Runs (or resumes) the training `cfg` describes and exports the result when it finishes.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainReport> {
    cfg.validate()?;
    let say = |s: String| {
        if opts.verbose {
            eprintln!("{s}");
        }
    };
    let source = cfg.source.path.clone().ok_or_else(|| {
        TrainError::Config("source.path is required (the Hugging Face checkpoint directory)".into())
    })?;
    let data_path = cfg.data.path.clone().ok_or_else(|| {
        TrainError::Config(
            "data.path is required (a .jsonl, .parquet or .txt file, or a directory of shards)"
                .into(),
        )
    })?;
    let device = device_for(cfg.device)?;
    let output = cfg.output_dir();
    let run = run_dir(&output);

    // Tokenizer and mask token.
    let mut tok = DataTokenizer::from_checkpoint(&source)?;
    let (mask_id, mask_text) = match cfg.objectives.dlm.mask_token_id {
        Some(id) => {
            let text = tok.tokenizer().id_to_token(id).ok_or_else(|| {
                TrainError::Config(format!(
                    "objectives.dlm.mask_token_id {id} is not a token of {}",
                    source.join("tokenizer.json").display()
                ))
            })?;
            (id, text)
        }
        None => (tok.add_mask_token()?.id, MASK_TOKEN.to_string()),
    };

    // Model, grown to the tokenizer.
    let mut model = TrainModel::load(&source, &device, None)?;
    model.ternary |= cfg.training.ternary;
    let rows = tok
        .tokenizer()
        .get_vocab_size(true)
        .max(mask_id as usize + 1);
    model.grow_vocab(rows)?;
    say(format!(
        "model: {:?}, {} layers, width {}, {} embedding rows, mask `{mask_text}` = {mask_id}{}",
        model.config.family,
        model.config.layers,
        model.config.hidden,
        model.config.vocab,
        if model.ternary { ", ternary QAT" } else { "" }
    ));

    // Data.
    let t = &cfg.training;
    let loaded = data::load_examples(&data_path, &tok, &cfg.data)?;
    let packed = data::pack(
        &loaded.examples,
        t.seq_len,
        cfg.conversion.bd_size,
        cfg.conversion.pad_to_block,
        mask_id,
    )?;
    let (train_w, held_w) =
        data::split_holdout(packed.windows, cfg.data.holdout_fraction, cfg.seed);
    if train_w.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no training window of {} tokens ({} examples, {} tokens after packing)",
            data_path.display(),
            t.seq_len,
            loaded.examples.len(),
            packed.stats.tokens
        )));
    }
    say(format!(
        "data: {} examples from {} file(s) → {} training + {} held-out windows of {} tokens",
        loaded.examples.len(),
        loaded.stats.files,
        train_w.len(),
        held_w.len(),
        t.seq_len
    ));

    // Budget and schedule.
    let windows_per_step = (t.batch_size * t.grad_accum) as u64;
    let tokens_per_step = windows_per_step * t.seq_len as u64;
    let total_steps = match cfg.conversion.total_tokens {
        Some(n) => n.div_ceil(tokens_per_step),
        None => (train_w.len() as u64).div_ceil(windows_per_step),
    }
    .max(1);
    let warmup = warmup_steps(total_steps, t.warmup_ratio);
    let mut opt = AdamW::new(
        model.params(),
        AdamWConfig {
            lr: t.lr,
            beta1: t.betas[0],
            beta2: t.betas[1],
            eps: t.adam_eps,
            weight_decay: t.weight_decay,
            max_grad_norm: Some(t.max_grad_norm),
        },
    )?;

    // Fresh start or resume.
    std::fs::create_dir_all(&run).map_err(|e| TrainError::io(&run, e))?;
    let ckpt_root = run.join(checkpoint::DIR);
    let legacy = run.join("checkpoint");
    let metrics_path = run.join("metrics.jsonl");
    let mut step = 0u64;
    let mut tokens = 0u64;
    let mut history: Vec<serde_json::Value> = Vec::new();
    let mut resumed_from = None;
    if !opts.resume {
        if let Some((s, dir)) = checkpoint::list(&ckpt_root)?.into_iter().next() {
            return Err(TrainError::checkpoint(
                &dir,
                format!("a checkpoint (step {s}) of an earlier run is here: pass --resume to continue it, or remove {}", ckpt_root.display()),
            ));
        }
        if legacy.exists() {
            return Err(TrainError::checkpoint(
                &legacy,
                "a checkpoint of an earlier run is here: pass --resume to continue it, or remove the directory",
            ));
        }
    }
    for p in checkpoint::clean_leftovers(&ckpt_root)? {
        let what = if p.extension().is_some_and(|e| e == "del") {
            "removal"
        } else {
            "writing"
        };
        eprintln!(
            "removed {}: a checkpoint whose {what} was interrupted",
            p.display()
        );
    }
    if opts.resume {
        let scan = checkpoint::scan(&ckpt_root)?;
        let using = match &scan.found {
            Some((s, _)) => format!("using step-{s}"),
            None => "no earlier complete checkpoint".to_string(),
        };
        // Damaged checkpoints are left for inspection; the next checkpoint written removes them.
        for d in &scan.damaged {
            eprintln!(
                "checkpoint step-{} is incomplete ({}), {using}",
                d.step, d.reason
            );
        }
        let dir = match scan.found {
            Some((_, dir)) => Some(dir),
            // A run directory of an earlier version: one `checkpoint/` without a manifest.
            None => [legacy.clone(), export::sibling(&legacy, "old")]
                .into_iter()
                .find(|d| d.join("state.json").is_file()),
        };
        if let Some(dir) = dir {
            let state = load_checkpoint(&dir, cfg, &model, &mut opt)?;
            if state.total_steps != total_steps || state.mask_token_id != mask_id {
                return Err(TrainError::checkpoint(
                    &dir,
                    format!(
                        "the checkpoint's run has {} steps and mask id {}, this one {total_steps} and {mask_id}",
                        state.total_steps, state.mask_token_id
                    ),
                ));
            }
            step = state.step;
            tokens = state.tokens;
            resumed_from = Some(step);
            history = read_metrics(&metrics_path)?
                .into_iter()
                .filter(|m| m["step"].as_u64().is_some_and(|s| s <= step))
                .collect();
            write_metrics(&metrics_path, &history)?;
            eprintln!("resumed at step {step} from {}", dir.display());
        } else {
            eprintln!(
                "no {}checkpoint in {} yet: starting from step 0",
                if scan.damaged.is_empty() {
                    ""
                } else {
                    "complete "
                },
                ckpt_root.display()
            );
            write_metrics(&metrics_path, &[])?;
        }
    } else {
        write_metrics(&metrics_path, &[])?;
    }

    let l = t.seq_len;
    let setup = Setup {
        model,
        noise: NoiseConfig::from_config(cfg, mask_id),
        dlm_masks: DlmMasks::new(l, cfg.conversion.bd_size, &device)?,
        causal_mask: Tensor::from_vec(recipe::causal_mask(l), (l, l), &device)?,
        cfg: cfg.clone(),
    };
    let mut order = Order {
        perms: HashMap::new(),
        n: train_w.len(),
        seed: cfg.seed,
    };

    let held_out_start = if held_w.is_empty() || step > 0 {
        None
    } else {
        Some(setup.evaluate(&held_w)?)
    };
    if let Some((d, a)) = held_out_start {
        say(format!(
            "held-out loss before training: DLM {d:.4}, AR {a:.4}"
        ));
        let line = json!({"step": 0, "tokens": 0, "held_out_dlm_loss": d, "held_out_ar_loss": a});
        append_metric(&metrics_path, &line)?;
        history.push(line);
    }

    let bar = if opts.progress {
        ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(step);

    let start = Instant::now();
    let first_step = step;
    let mut last_loss = f64::NAN;
    let params = opt.params().to_vec();
    let objectives = setup.objectives();
    while step < total_steps {
        if opts.stop_after.is_some_and(|n| step - first_step >= n) {
            break;
        }
        // The step's windows and their noise.
        let mut rng = recipe::step_rng(cfg.seed, step);
        let base = step * windows_per_step;
        let windows: Vec<&Window> = (0..windows_per_step)
            .map(|i| &train_w[order.index(base + i)])
            .collect();
        let (views, n_dlm, n_ar) = setup.noised(&windows, &mut rng)?;

        let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
        let (mut dlm_sum, mut ar_sum) = (0.0, 0.0);
        for (ws, vs) in windows.chunks(t.batch_size).zip(views.chunks(t.batch_size)) {
            let r = setup.batch_loss(ws, vs, n_dlm, n_ar, objectives)?;
            dlm_sum += r.dlm_sum;
            ar_sum += r.ar_sum;
            if let Some(loss) = r.loss {
                let g = loss.backward()?;
                for (slot, (_, var)) in grads.iter_mut().zip(&params) {
                    if let Some(gi) = g.get(var.as_tensor()) {
                        *slot = Some(match slot.take() {
                            Some(acc) => (acc + gi)?,
                            None => gi.clone(),
                        });
                    }
                }
            }
        }
        let lr = lr_at(t.lr, step, warmup);
        let stats = opt.step(&grads, lr)?;
        step += 1;
        tokens += tokens_per_step;

        let obj = &cfg.objectives;
        let dlm_loss = obj.dlm.enabled.then(|| dlm_sum / n_dlm.max(1) as f64);
        let ar_loss = obj.ar.enabled.then(|| ar_sum / n_ar.max(1) as f64);
        last_loss = ar_loss.unwrap_or(0.0) + dlm_loss.map_or(0.0, |d| d * obj.dlm.weight);
        let elapsed = start.elapsed().as_secs_f64();
        let tps = ((step - first_step) * tokens_per_step) as f64 / elapsed.max(1e-9);
        bar.set_position(step);
        bar.set_message(format!("loss {last_loss:.4}  {tps:.0} tok/s"));

        let at_checkpoint = (t.checkpoint_every > 0 && step.is_multiple_of(t.checkpoint_every))
            || step == total_steps;
        if step.is_multiple_of(t.log_every) || at_checkpoint {
            let mut line = json!({
                "step": step, "loss": last_loss, "dlm_loss": dlm_loss, "ar_loss": ar_loss,
                "lr": lr, "grad_norm": stats.grad_norm, "tokens": tokens,
                "tokens_per_s": tps, "elapsed_s": elapsed,
            });
            if at_checkpoint && !held_w.is_empty() {
                let (d, a) = setup.evaluate(&held_w)?;
                line["held_out_dlm_loss"] = json!(d);
                line["held_out_ar_loss"] = json!(a);
            }
            append_metric(&metrics_path, &line)?;
            history.push(line);
        }
        if at_checkpoint {
            let state = State {
                step,
                tokens,
                optimizer_t: opt.t,
                rng: RngState {
                    seed: cfg.seed,
                    next_stream: step,
                },
                data_cursor: step * windows_per_step,
                total_steps,
                mask_token_id: mask_id,
                vocab_rows: setup.model.config.vocab,
                config: cfg.clone(),
            };
            save_checkpoint(&ckpt_root, &state, &setup.model, &opt)?;
            plot_history(&run.join("loss.png"), &history)?;
        }
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let tokens_per_s = ((step - first_step) * tokens_per_step) as f64 / elapsed.max(1e-9);
    let finished = step >= total_steps;
    let held_out_end = if held_w.is_empty() {
        None
    } else {
        Some(setup.evaluate(&held_w)?)
    };
    if finished {
        export::export(
            &setup.model,
            &ExportSpec {
                source: &source,
                tokenizer: tok.tokenizer(),
                mask_token: &mask_text,
                mask_token_id: mask_id,
                bd_size: cfg.conversion.bd_size,
            },
            &output,
        )?;
        say(format!("exported {}", output.display()));
    }
    Ok(TrainReport {
        output,
        run_dir: run,
        steps: step,
        total_steps,
        tokens,
        finished,
        last_loss,
        tokens_per_s,
        held_out_start,
        held_out_end,
        mask_token_id: mask_id,
        windows: (train_w.len(), held_w.len()),
        resumed_from,
    })
}

/// Writes the checkpoint of `state.step` under `root` (`step-N/`: `model.safetensors`,
/// `optimizer.safetensors`, `state.json`, `manifest.json`), crash-safe: see [`checkpoint`].
fn save_checkpoint(root: &Path, state: &State, model: &TrainModel, opt: &AdamW) -> Result<()> {
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| TrainError::json(&root.join("state.json"), e.to_string()))?;
    let weights = |p: &Path| export::save_safetensors(&model.named_tensors(), p);
    let moments = |p: &Path| export::save_safetensors(&opt.state(), p);
    let state_json = |p: &Path| std::fs::write(p, &text).map_err(|e| TrainError::io(p, e));
    checkpoint::write(
        root,
        state.step,
        &[
            ("model.safetensors", &weights),
            ("optimizer.safetensors", &moments),
            ("state.json", &state_json),
        ],
    )?;
    Ok(())
}

/// Restores weights and moments from `dir` after checking that it belongs to the same run.
fn load_checkpoint(
    dir: &Path,
    cfg: &TrainConfig,
    model: &TrainModel,
    opt: &mut AdamW,
) -> Result<State> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    let state: State =
        serde_json::from_str(&text).map_err(|e| TrainError::json(&path, e.to_string()))?;
    if &state.config != cfg {
        let a = serde_json::to_value(&state.config).unwrap_or_default();
        let b = serde_json::to_value(cfg).unwrap_or_default();
        let diff = config_diff("", &a, &b).join(", ");
        return Err(TrainError::checkpoint(
            dir,
            format!("the configuration differs from the checkpoint's: {diff}"),
        ));
    }
    let load = |name: &str| -> Result<HashMap<String, Tensor>> {
        let p = dir.join(name);
        candle_core::safetensors::load(&p, model.device())
            .map_err(|e| TrainError::checkpoint(&p, e.to_string()))
    };
    model.set_from(&load("model.safetensors")?, &dir.join("model.safetensors"))?;
    opt.load_state(&load("optimizer.safetensors")?, state.optimizer_t)?;
    Ok(state)
}

/// The dotted keys where two serialised configs differ, with both values.
fn config_diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let mut out = Vec::new();
            for (k, va) in x {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let vb = y.get(k).cloned().unwrap_or_default();
                out.extend(config_diff(&key, va, &vb));
            }
            out
        }
        _ if a == b => Vec::new(),
        _ => vec![format!("{prefix} (checkpoint {a}, now {b})")],
    }
}

/// The lines of `metrics.jsonl`; a line a kill cut short is skipped.
fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(TrainError::io(path, e)),
    }
}

fn write_metrics(path: &Path, lines: &[serde_json::Value]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text).map_err(|e| TrainError::io(&tmp, e))?;
    checkpoint::sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

fn append_metric(path: &Path, line: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))
}

/// The loss curve: training loss (blue) and held-out DLM loss (red) against the step.
fn plot_history(path: &Path, history: &[serde_json::Value]) -> Result<()> {
    let series = |key: &str| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| Some((m["step"].as_f64()?, m[key].as_f64()?)))
            .collect()
    };
    let (train, held) = (series("loss"), series("held_out_dlm_loss"));
    plot::loss_png(
        path,
        &[
            plot::Series {
                color: plotters::style::RGBColor(31, 119, 180),
                points: &train,
            },
            plot::Series {
                color: plotters::style::RGBColor(214, 39, 40),
                points: &held,
            },
        ],
        800,
        500,
    )
}
