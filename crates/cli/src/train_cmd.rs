//! `dlm train` and `dlm validate`: the Fast-dLLM v2 SFT converter and the check of its output.

use std::path::PathBuf;

use engine::{DlmParams, GenerateParams};
use train::config::TrainConfig;
use train::trainer::{train, TrainOptions};

/// `dlm train [--config FILE] [--resume] [key.path=value …]`.
#[derive(clap::Args, Debug)]
pub struct TrainCmd {
    /// TOML or YAML file with configuration keys (applied after the preset, before overrides).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run from its newest complete checkpoint (`<output.path>.run/checkpoints/step-N`),
    /// bit for bit; damaged or half-written checkpoints are reported and skipped. With no
    /// checkpoint yet the run starts from step 0 (so a preempted job can re-run one command line).
    #[arg(long)]
    pub resume: bool,
    /// Train on this device (`cpu`, or `cuda` in a build with `--features train/cuda`); the same
    /// as the override `device=…`.
    #[arg(long)]
    pub device: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Hydra-style overrides: `model=smollm2_135m source.path=DIR conversion.total_tokens=100000000`.
    pub overrides: Vec<String>,
}

/// Runs `dlm train`.
pub fn run_train(cmd: TrainCmd) -> Result<(), String> {
    // candle runs element-wise ops on a spinning barrier pool beside the rayon pool of its
    // matmuls; on a few cores they fight over the same cores (2-3× slower on 2 cores). The
    // barrier pool gets no extra thread unless the user asks for one. Set before candle's first
    // op reads it; the rayon workers are idle.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let mut overrides = cmd.overrides.clone();
    if let Some(d) = &cmd.device {
        overrides.push(format!("device={d}"));
    }
    let mut cfg =
        TrainConfig::load(cmd.config.as_deref(), &overrides).map_err(|e| e.to_string())?;
    // `hf://` sources become local paths in the Hub cache before the trainer opens them.
    if let Some(p) = &cfg.source.path {
        cfg.source.path = Some(
            hub::resolve_quiet(p, hub::Need::Checkpoint, cmd.quiet)
                .map_err(|e| format!("source.path: {e}"))?,
        );
    }
    // Only the shards of `data.split` are downloaded (the trainer's own split rule).
    let split = cfg.data.split.clone();
    let in_split = |rel: &str| {
        split
            .as_deref()
            .is_none_or(|s| train::dataset::in_split(std::path::Path::new(rel), s))
    };
    if let Some(p) = &cfg.data.path {
        cfg.data.path = Some(
            hub::resolve_dataset(p, cmd.quiet, &in_split).map_err(|e| format!("data.path: {e}"))?,
        );
    }
    let report = train(
        &cfg,
        &TrainOptions {
            resume: cmd.resume,
            progress: !cmd.quiet,
            stop_after: None,
            verbose: !cmd.quiet,
        },
    )
    .map_err(|e| e.to_string())?;
    let held = |h: Option<(f64, f64)>| {
        h.map(|(d, a)| format!("DLM {d:.4}, AR {a:.4}"))
            .unwrap_or_else(|| "-".into())
    };
    eprintln!(
        "trained {} steps ({} tokens, {:.0} tokens/s), last loss {:.4}; held-out loss before: {}, after: {}",
        report.steps,
        report.tokens,
        report.tokens_per_s,
        report.last_loss,
        held(report.held_out_start),
        held(report.held_out_end)
    );
    eprintln!(
        "wrote {} (metrics and checkpoint in {})",
        report.output.display(),
        report.run_dir.display()
    );
    Ok(())
}

/// `dlm validate DIR`.
#[derive(clap::Args, Debug)]
pub struct ValidateCmd {
    /// The converted checkpoint directory (config.json, model.safetensors, tokenizer files,
    /// dlm_config.json).
    pub dir: PathBuf,
    /// Prompt for the AR-vs-DLM decode [default: a story opening].
    #[arg(long, default_value = "Once upon a time")]
    pub prompt: String,
    /// Tokens to generate in each mode.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Diffusion confidence threshold.
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f32,
    /// Only check the files; no conversion or decode.
    #[arg(long)]
    pub no_decode: bool,
}

/// Runs `dlm validate`: the file checks, then a conversion to a temporary F32 GGUF and greedy
/// AR and block-diffusion decodes of the prompt with the engine.
pub fn run_validate(cmd: ValidateCmd) -> Result<(), String> {
    let s = train::export::check_dir(&cmd.dir).map_err(|e| e.to_string())?;
    println!(
        "{}: ok — {:?}, {} layers, width {}, vocab {} ({} tokenizer tokens), {} tensors, {:.2}M parameters",
        cmd.dir.display(),
        s.config.family,
        s.config.layers,
        s.config.hidden,
        s.config.vocab,
        s.tokenizer_size,
        s.n_tensors,
        s.n_params as f64 / 1e6
    );
    println!(
        "  mask token `{}` = {} (in the vocabulary, the mask token), bd_size {}",
        s.mask_token, s.mask_token_id, s.bd_size
    );
    if cmd.no_decode {
        return Ok(());
    }
    let tmp = std::env::temp_dir().join(format!("dlm-validate-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let gguf = tmp.join("model.gguf");
    let result = decode_check(&cmd, &s, &gguf);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn decode_check(
    cmd: &ValidateCmd,
    s: &train::export::DirSummary,
    gguf: &std::path::Path,
) -> Result<(), String> {
    let report = convert::convert(&convert::ConvertOptions {
        input: cmd.dir.clone(),
        output: Some(gguf.to_path_buf()),
        outtype: convert::OutType::F32,
        target: None,
        force_ternary: false,
        add_mask_token: false,
        name: None,
        progress: false,
        head_types: Default::default(),
    })
    .map_err(|e| format!("converting {}: {e}", cmd.dir.display()))?;
    if report.mask_token_id != Some(s.mask_token_id) || report.block_size != Some(s.bd_size as u32)
    {
        return Err(format!(
            "the converted GGUF says mask {:?}, block size {:?}; the directory says {} and {}",
            report.mask_token_id, report.block_size, s.mask_token_id, s.bd_size
        ));
    }
    let (model, tok) = engine::load_model(gguf).map_err(|e| e.to_string())?;
    let add_bos = tok.add_bos_token();
    let prompt = tok
        .encode(&cmd.prompt, add_bos)
        .map_err(|e| format!("tokenizing the prompt: {e}"))?;
    let ar = engine::generate_ar(
        &model,
        &tok,
        &prompt,
        &GenerateParams {
            max_tokens: cmd.max_tokens,
            ..GenerateParams::default()
        },
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    let small = if s.bd_size.is_multiple_of(8) {
        8
    } else {
        s.bd_size
    };
    let dlm = engine::generate_dlm(
        &model,
        &tok,
        &prompt,
        s.mask_token_id,
        &DlmParams {
            block_size: s.bd_size,
            small_block_size: small,
            threshold: cmd.threshold,
            max_tokens: cmd.max_tokens,
            ..DlmParams::default()
        },
        &mut |_| {},
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    for (name, g) in [("AR ", &ar), ("DLM", &dlm)] {
        let st = &g.stats;
        println!(
            "  {name}: {} tokens in {} forwards ({:.2} tokens/forward): {:?}",
            st.generated_tokens,
            st.forward_passes,
            st.generated_tokens as f64 / st.forward_passes.max(1) as f64,
            g.text
        );
    }
    if dlm.tokens.contains(&s.mask_token_id) {
        return Err("the block-diffusion decode returned a mask token".into());
    }
    Ok(())
}
