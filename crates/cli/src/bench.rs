//! `dlm bench`: measures what block diffusion buys on this machine for this model, instead of
//! promising a theoretical speed-up. Runs autoregressive greedy decoding and block diffusion at
//! several thresholds over a prompt set and reports speed, forward passes, tokens per forward and
//! how often the diffusion output equals the autoregressive one, plus what one block step costs in
//! decode steps on this CPU and the engine efficiency E = DLM tok/s ÷ (AR tok/s × tokens per
//! forward), i.e. how much of the ideal speed-up the block forwards keep.

use std::path::PathBuf;
use std::time::Instant;

use engine::{DlmParams, GenerateParams, Generation, SamplingParams};
use serde_json::{json, Value as Json};
use tokenizer::{ChatMessage, ChatTemplate, TemplateSource};

use crate::generate::{load, plan};
use engine::DecodeMode;
use server::{DecodeArgs, ModeArg};

/// Prompts used when no `--prompts` file is given: story openings for base models, questions for
/// chat models.
const DEFAULT_PROMPTS: &[&str] = &[
    "Once upon a time, there was a little dog",
    "Lily and Tom went to the park. They saw",
    "The sun was shining and the birds",
    "What is 2+2?",
    "Write a short story about a cat who finds a hat.",
    "Explain why the sky is blue in two sentences.",
];

/// `dlm bench`.
#[derive(clap::Args, Debug)]
pub struct BenchCmd {
    /// The GGUF model, a path or `hf://org/repo[:QUANT]` [default: the bundled demo model].
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// JSONL prompt file: one `{"prompt": "..."}` or `{"messages": [...]}` per line.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// New tokens per prompt.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Diffusion thresholds to sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1.0,0.95,0.9,0.7,0.5")]
    pub thresholds: Vec<f32>,
    /// Block-diffusion settings (the threshold flag is replaced by --thresholds).
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Run every threshold with and without the sub-block cache (--use-block-cache) and report
    /// how often the cached output equals the uncached one.
    #[arg(long)]
    pub compare_block_cache: bool,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
}

enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

fn read_prompts(cmd: &BenchCmd) -> Result<Vec<Prompt>, String> {
    let Some(path) = &cmd.prompts else {
        return Ok(DEFAULT_PROMPTS
            .iter()
            .map(|p| Prompt::Text(p.to_string()))
            .collect());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Json = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: invalid JSON: {e}", path.display(), i + 1))?;
        if let Some(p) = v.get("prompt").and_then(Json::as_str) {
            out.push(Prompt::Text(p.to_string()));
        } else if let Some(m) = v.get("messages") {
            let messages: Vec<ChatMessage> = serde_json::from_value(m.clone()).map_err(|e| {
                format!(
                    "{}:{}: `messages` must be a list of {{role, content}}: {e}",
                    path.display(),
                    i + 1
                )
            })?;
            out.push(Prompt::Chat(messages));
        } else {
            return Err(format!(
                "{}:{}: expected a `prompt` string or a `messages` list",
                path.display(),
                i + 1
            ));
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no prompts", path.display()));
    }
    Ok(out)
}

#[derive(Default)]
struct Row {
    label: String,
    tokens: usize,
    seconds: f64,
    prefill_seconds: f64,
    forwards: usize,
    identical: usize,
    runs: usize,
    /// Runs whose output equals the same threshold's uncached run (cached rows only).
    same_as_uncached: Option<usize>,
}

impl Row {
    fn add(&mut self, g: &Generation, identical: bool) {
        self.tokens += g.stats.generated_tokens;
        self.seconds += g.stats.prefill_seconds + g.stats.decode_seconds;
        self.prefill_seconds += g.stats.prefill_seconds;
        self.forwards += g.stats.forward_passes;
        self.identical += usize::from(identical);
        self.runs += 1;
    }

    fn json(&self, ar_tps: f64) -> Json {
        let tps = self.tokens as f64 / self.seconds.max(1e-12);
        let per_forward = self.tokens as f64 / self.forwards.max(1) as f64;
        json!({
            "mode": self.label,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "tokens_per_second": tps,
            "speedup_vs_ar": if ar_tps > 0.0 { tps / ar_tps } else { 0.0 },
            "forward_passes": self.forwards,
            "tokens_per_forward": per_forward,
            // Engine efficiency: the speed-up achieved over the one the tokens per forward would
            // give if a block forward cost what a decode step costs (1.0 = free block forwards).
            "efficiency": if ar_tps > 0.0 { tps / (ar_tps * per_forward.max(1e-12)) } else { 0.0 },
            "ms_per_forward": 1000.0 * self.seconds / self.forwards.max(1) as f64,
            "mean_prefill_ms": 1000.0 * self.prefill_seconds / self.runs.max(1) as f64,
            "identical_to_ar": self.identical as f64 / self.runs.max(1) as f64,
            "identical_to_uncached": self
                .same_as_uncached
                .map(|n| n as f64 / self.runs.max(1) as f64),
        })
    }
}

/// Runs `dlm bench`.
pub fn bench(cmd: BenchCmd) -> Result<(), String> {
    let path = cmd.model.clone().unwrap_or_else(server::default_model_path);
    let path = hub::resolve(&path, hub::Need::Gguf).map_err(|e| e.to_string())?;
    let (model, tok) = load(&path)?;
    let prompts = read_prompts(&cmd)?;
    let template =
        ChatTemplate::from_gguf(&model.file().metadata, &tok).map_err(|e| e.to_string())?;
    let mut encoded = Vec::new();
    for p in &prompts {
        let ids = match p {
            // Base models get raw text; chat models get the text as a user message.
            Prompt::Text(t) if template.source() == TemplateSource::PlainFallback => {
                tok.encode(t, tok.add_bos_token())
            }
            Prompt::Text(t) => template
                .render(
                    &[ChatMessage {
                        role: "user".into(),
                        content: t.clone(),
                    }],
                    true,
                )
                .and_then(|s| tok.encode(&s, false)),
            Prompt::Chat(m) => template.render(m, true).and_then(|s| tok.encode(&s, false)),
        };
        encoded.push(ids.map_err(|e| e.to_string())?);
    }
    let greedy = SamplingParams::default();
    let started = Instant::now();
    let mut ar = Row {
        label: "ar".into(),
        ..Default::default()
    };
    let mut ar_outputs = Vec::new();
    for ids in &encoded {
        let params = GenerateParams {
            max_tokens: cmd.max_tokens,
            stop: Vec::new(),
            sampling: greedy.clone(),
        };
        let g = engine::generate_ar(&model, &tok, ids, &params, &mut |_| {})
            .map_err(|e| e.to_string())?;
        ar.add(&g, true);
        ar_outputs.push(g.tokens);
    }
    let mut rows = vec![];
    let mut dlm_flags = cmd.decode.clone();
    if dlm_flags.mode.is_none() {
        dlm_flags.mode = Some(ModeArg::Dlm);
    }
    let mut block_cost = None;
    let note = match plan(&model, &tok, &dlm_flags) {
        Ok(DecodeMode::Dlm {
            mask_id,
            block_size,
        }) => {
            block_cost = Some(
                engine::block_step_cost(&model, block_size, cmd.decode.small_block_size, 64, 5)
                    .map_err(|e| e.to_string())?,
            );
            let caches: &[bool] = if cmd.compare_block_cache {
                &[false, true]
            } else if cmd.decode.use_block_cache {
                &[true]
            } else {
                &[false]
            };
            for &threshold in &cmd.thresholds {
                let mut uncached: Vec<Vec<u32>> = Vec::new();
                for &use_block_cache in caches {
                    let compared = cmd.compare_block_cache && use_block_cache;
                    let mut row = Row {
                        label: if use_block_cache {
                            format!("dlm t={threshold} cached")
                        } else {
                            format!("dlm t={threshold}")
                        },
                        same_as_uncached: compared.then_some(0),
                        ..Default::default()
                    };
                    for (i, (ids, ar_tokens)) in encoded.iter().zip(&ar_outputs).enumerate() {
                        let params = DlmParams {
                            block_size,
                            small_block_size: cmd.decode.small_block_size,
                            threshold,
                            max_tokens: cmd.max_tokens,
                            stop: Vec::new(),
                            sampling: greedy.clone(),
                            use_block_cache,
                        };
                        let g = engine::generate_dlm(
                            &model,
                            &tok,
                            ids,
                            mask_id,
                            &params,
                            &mut |_| {},
                            &mut |_| {},
                        )
                        .map_err(|e| e.to_string())?;
                        if let Some(n) = row.same_as_uncached.as_mut() {
                            *n += usize::from(g.tokens == uncached[i]);
                        } else if cmd.compare_block_cache {
                            uncached.push(g.tokens.clone());
                        }
                        let same = &g.tokens == ar_tokens;
                        row.add(&g, same);
                    }
                    rows.push(row);
                }
            }
            format!(
                "block size {block_size}, sub-block {}, mask token {mask_id}",
                cmd.decode.small_block_size
            )
        }
        Ok(DecodeMode::Ar) => "autoregressive only".to_string(),
        Err(e) => format!("autoregressive only: {e}"),
    };
    let ar_tps = ar.tokens as f64 / ar.seconds.max(1e-12);
    let table: Vec<Json> = std::iter::once(&ar)
        .chain(&rows)
        .map(|r| r.json(ar_tps))
        .collect();
    let report = json!({
        "model": path.display().to_string(),
        "prompts": encoded.len(),
        "max_tokens": cmd.max_tokens,
        "threads": rayon::current_num_threads(),
        "simd": quant::kernels::simd_level(),
        "setup": note,
        "block_step": block_cost.map(|c| json!({
            "rows": c.block_rows,
            "logit_rows": c.logit_rows,
            "decode_ms": c.decode_ms,
            "block_ms": c.block_ms,
            "decode_steps": c.decode_steps(),
        })),
        "wall_seconds": started.elapsed().as_secs_f64(),
        "results": table,
    });
    if cmd.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{}: {} prompts × {} tokens, {} threads, {} kernels; {}\n",
        report["model"].as_str().unwrap_or(""),
        encoded.len(),
        cmd.max_tokens,
        report["threads"],
        report["simd"].as_str().unwrap_or(""),
        note
    );
    if let Some(c) = block_cost {
        println!(
            "A {}-row block step costs {:.2} decode steps here ({:.2} ms vs {:.2} ms): block \
             diffusion wins when it commits more than that many tokens per forward.\n",
            c.block_rows,
            c.decode_steps(),
            c.block_ms,
            c.decode_ms
        );
    }
    println!("| mode | tokens/s | vs AR | forward passes | tokens/forward | E | ms/forward | mean prefill (ms) | identical to AR | identical to uncached |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &table {
        println!(
            "| {} | {:.1} | {:.2}× | {} | {:.2} | {:.2} | {:.3} | {:.2} | {:.0}% | {} |",
            r["mode"].as_str().unwrap_or(""),
            r["tokens_per_second"].as_f64().unwrap_or(0.0),
            r["speedup_vs_ar"].as_f64().unwrap_or(0.0),
            r["forward_passes"],
            r["tokens_per_forward"].as_f64().unwrap_or(0.0),
            r["efficiency"].as_f64().unwrap_or(0.0),
            r["ms_per_forward"].as_f64().unwrap_or(0.0),
            r["mean_prefill_ms"].as_f64().unwrap_or(0.0),
            100.0 * r["identical_to_ar"].as_f64().unwrap_or(0.0),
            r["identical_to_uncached"]
                .as_f64()
                .map_or("—".to_string(), |v| format!("{:.0}%", 100.0 * v))
        );
    }
    Ok(())
}
