//! The training configuration, layered like the seed's Hydra config.
//!
//! [`TrainConfig::load`] builds it in four layers, each overriding the one before:
//!
//! 1. the defaults (the Fast-dLLM v2 paper's recipe: lr 2e-5, 3% warmup then constant, weight
//!    decay 0, AdamW betas 0.9/0.999, clipping 1.0, windows of 512 tokens, blocks of 32, "+pad",
//!    complementary masks, seed 42);
//! 2. the model preset named by a `model=NAME` override or, failing that, by the file's `model`
//!    key ([`PRESETS`]: `smollm2_135m`, `qwen3_4b`, `bitnet_2b`, `stories260k`);
//! 3. the `--config FILE` (TOML for `.toml`, YAML for `.yaml`/`.yml`), nested tables or dotted keys;
//! 4. `key.path=value` overrides, in order, with Hydra's value syntax: `null`, `true`/`false`,
//!    integers (`100000000`, `100_000_000`), floats (`2e-5`, `1e-3`, `.5`), lists (`[0.9,0.95]`),
//!    quoted or bare strings.
//!
//! So the seed's command line `model=smollm2_135m source.path=DIR conversion.total_tokens=100000000`
//! works as written. Every key is a leaf of [`KEYS`]; an unknown key is an error listing the valid
//! ones, and a value of the wrong type is an error naming the key and the expected type. The
//! result is checked as a whole ([`TrainConfig::validate`]) and serialises with serde (it is saved
//! in checkpoints and in the exported `dlm_config.json` for provenance).
//!
//! The loss the keys under `objectives` describe (the seed's "unified objective"):
//!
//! ```text
//! loss = [objectives.ar.enabled] · AR + [objectives.dlm.enabled] · objectives.dlm.weight · DLM
//! ```
//!
//! where DLM is the Fast-dLLM v2 loss (both complementary views, divided by the number of response
//! tokens, see [`crate::recipe`]) and AR the plain next-token loss on the clean window.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// The model presets `model=NAME` selects.
pub const PRESETS: &[&str] = &["smollm2_135m", "qwen3_4b", "bitnet_2b", "stories260k"];

/// Where training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU (always available).
    Cpu,
    /// The first CUDA GPU (needs the crate's `cuda` feature).
    Cuda,
}

/// How a plain `.txt` data file is cut into documents (each one BOS + text + EOS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSplit {
    /// At lines that are exactly `<|endoftext|>` (the TinyStories release format) when the file
    /// has any, else at blank lines.
    Auto,
    /// At blank lines: each paragraph is a document.
    Paragraph,
    /// Each non-empty line is a document.
    Line,
}

/// The whole training configuration. Field docs name the key (`training.lr`) and its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `model`: the preset the run started from (one of [`PRESETS`]); also names the default
    /// output directory `output/<model>`.
    pub model: String,
    /// `seed` (42): seeds the data order, the held-out split and the noise of every step.
    pub seed: u64,
    /// `device` (`cpu`): `cpu` or `cuda`.
    pub device: Device,
    /// `source.*`: the checkpoint to convert.
    pub source: SourceConfig,
    /// `data.*`: the training data.
    pub data: DataConfig,
    /// `output.*`: where the converted model goes.
    pub output: OutputConfig,
    /// `conversion.*`: the block-diffusion conversion itself.
    pub conversion: ConversionConfig,
    /// `training.*`: optimisation and bookkeeping.
    pub training: TrainingConfig,
    /// `objectives.*`: which losses are trained.
    pub objectives: ObjectivesConfig,
}

/// `source.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `source.path` (null): the Hugging Face checkpoint directory (`config.json`,
    /// `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`). Required to train.
    pub path: Option<PathBuf>,
}

/// `data.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `data.path` (null): JSONL (`{"messages": [...]}` chats or `{"text": ...}` lines), a
    /// `.txt` file of documents, a parquet file, or a directory of parquet/JSONL shards (see
    /// [`crate::dataset`]). Required to train.
    pub path: Option<PathBuf>,
    /// `data.text_split` (`auto`): how a `.txt` file is cut into documents: `auto`, `paragraph`,
    /// `line` (see [`TextSplit`]).
    pub text_split: TextSplit,
    /// `data.append_eos` (true): text documents end with the tokenizer's EOS token (supervised),
    /// so the model learns where a document stops.
    pub append_eos: bool,
    /// `data.holdout_fraction` (0): the fraction of windows kept out of training to measure
    /// held-out loss, chosen with `seed`.
    pub holdout_fraction: f64,
    /// `data.split` (null): the split of a dataset directory whose files name their splits
    /// (`train-00000-of-00002.parquet`, `train/0000.parquet`, `test.jsonl`); null takes every
    /// data file, and is an error when the files name more than one split.
    #[serde(default)]
    pub split: Option<String>,
    /// `data.columns.*`: the names a dataset uses for the columns (keys) training reads.
    #[serde(default)]
    pub columns: ColumnsConfig,
}

/// `data.columns.*`: differently named columns (null = detect: see [`crate::columns`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnsConfig {
    /// `data.columns.messages` (null): the chat column, a list of messages (`messages`, else
    /// ShareGPT's `conversations`).
    pub messages: Option<String>,
    /// `data.columns.text` (null): the plain-text column (`text`).
    pub text: Option<String>,
    /// `data.columns.role` (null): the role key inside a message (`role`, else `from`).
    pub role: Option<String>,
    /// `data.columns.content` (null): the content key inside a message (`content`, else
    /// `value`).
    pub content: Option<String>,
}

/// `output.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `output.path` (`output/<model>`): the directory the converted checkpoint is written to.
    pub path: Option<PathBuf>,
}

/// `conversion.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionConfig {
    /// `conversion.total_tokens` (preset; null = one pass over the data): the training budget in
    /// data tokens (window tokens, both views counting once).
    pub total_tokens: Option<u64>,
    /// `conversion.bd_size` (32): the block size; one noise level per block, and the attention
    /// blocks of the training mask. Stored in the output `config.json` as `bd_size`.
    pub bd_size: usize,
    /// `conversion.pad_to_block` (true): the paper's "+pad": every conversation is followed by
    /// `bd_size - len % bd_size` mask tokens (a whole block when already aligned), unsupervised,
    /// so no block mixes two conversations.
    pub pad_to_block: bool,
}

/// `training.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// `training.lr` (2e-5; stories260k 1e-3): the AdamW learning rate after warmup.
    pub lr: f64,
    /// `training.warmup_ratio` (0.03): linear warmup over this fraction of the steps, then
    /// constant (`constant_with_warmup`).
    pub warmup_ratio: f64,
    /// `training.weight_decay` (0): AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// `training.betas` ([0.9, 0.999]): AdamW β1, β2.
    pub betas: [f64; 2],
    /// `training.adam_eps` (1e-8): AdamW ε.
    pub adam_eps: f64,
    /// `training.max_grad_norm` (1.0): clip the global gradient norm to this; 0 disables.
    pub max_grad_norm: f64,
    /// `training.seq_len` (512; stories260k 256): window length in tokens, a multiple of
    /// `conversion.bd_size`. The model sees 2 × seq_len tokens (`[noisy | clean]`).
    pub seq_len: usize,
    /// `training.batch_size` (preset): windows per micro-batch.
    pub batch_size: usize,
    /// `training.grad_accum` (preset): micro-batches per optimizer step.
    pub grad_accum: usize,
    /// `training.checkpoint_every` (preset): write a checkpoint every N optimizer steps; 0 = only
    /// at the end.
    pub checkpoint_every: u64,
    /// `training.log_every` (preset): log metrics every N optimizer steps.
    pub log_every: u64,
    /// `training.eps` (1e-3): the noise floor ε: a block's mask probability is (1 − ε)·t + ε.
    pub eps: f64,
    /// `training.ternary` (false; bitnet_2b true): BitLinear quantisation-aware training (absmean
    /// ternary weights, per-token int8 activations, straight-through gradients).
    pub ternary: bool,
}

/// `objectives.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectivesConfig {
    /// `objectives.dlm.*`: the Fast-dLLM v2 block-diffusion loss.
    pub dlm: DlmObjective,
    /// `objectives.ar.*`: the autoregressive loss of the unified objective.
    pub ar: ArObjective,
}

/// `objectives.dlm.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlmObjective {
    /// `objectives.dlm.enabled` (true): train the block-diffusion loss.
    pub enabled: bool,
    /// `objectives.dlm.weight` (1.0): its weight in the sum (the seed's unified config uses 0.5).
    pub weight: f64,
    /// `objectives.dlm.mask_prob` (null): null draws the paper's noise level t ~ U(0,1) per block
    /// (mask probability (1 − ε)·t + ε); a number p in (0, 1] masks every supervised token with
    /// the fixed probability p instead (the seed's older objective, e.g. 0.15), no t drawn.
    pub mask_prob: Option<f64>,
    /// `objectives.dlm.mask_token_id` (null): null uses `|<MASK>|`, added to the tokenizer when
    /// missing; a number uses that existing token id as the mask (it must match inference).
    pub mask_token_id: Option<u32>,
    /// `objectives.dlm.use_complementary_masks` (true): also train the complementary view, so
    /// every response token is masked in exactly one of the two views.
    pub use_complementary_masks: bool,
}

/// `objectives.ar.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArObjective {
    /// `objectives.ar.enabled` (false): add the plain next-token loss on the clean window
    /// (causal attention), weight 1.
    pub enabled: bool,
}

/// The type of a configuration key, for checking and converting values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// A string, or null.
    OptStr,
    /// A path, or null.
    OptPath,
    /// A non-negative integer.
    UInt,
    /// A non-negative integer, or null.
    OptUInt,
    /// A number.
    Float,
    /// A number, or null.
    OptFloat,
    /// `true` or `false`.
    Bool,
    /// Two numbers.
    FloatPair,
    /// `cpu` or `cuda`.
    Device,
    /// `auto`, `paragraph` or `line`.
    TextSplit,
}

impl Kind {
    /// How the type is named in error messages.
    fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::OptPath => "a path or null",
            Kind::OptStr => "a string or null",
            Kind::UInt => "a non-negative integer",
            Kind::OptUInt => "a non-negative integer or null",
            Kind::Float => "a number",
            Kind::OptFloat => "a number or null",
            Kind::Bool => "true or false",
            Kind::FloatPair => "a list of two numbers",
            Kind::Device => "`cpu` or `cuda`",
            Kind::TextSplit => "`auto`, `paragraph` or `line`",
        }
    }
}

/// Every configuration key and its type, in the order of [`TrainConfig`]'s fields.
pub const KEYS: &[(&str, Kind)] = &[
    ("model", Kind::Str),
    ("seed", Kind::UInt),
    ("device", Kind::Device),
    ("source.path", Kind::OptPath),
    ("data.path", Kind::OptPath),
    ("data.text_split", Kind::TextSplit),
    ("data.append_eos", Kind::Bool),
    ("data.holdout_fraction", Kind::Float),
    ("data.split", Kind::OptStr),
    ("data.columns.messages", Kind::OptStr),
    ("data.columns.text", Kind::OptStr),
    ("data.columns.role", Kind::OptStr),
    ("data.columns.content", Kind::OptStr),
    ("output.path", Kind::OptPath),
    ("conversion.total_tokens", Kind::OptUInt),
    ("conversion.bd_size", Kind::UInt),
    ("conversion.pad_to_block", Kind::Bool),
    ("training.lr", Kind::Float),
    ("training.warmup_ratio", Kind::Float),
    ("training.weight_decay", Kind::Float),
    ("training.betas", Kind::FloatPair),
    ("training.adam_eps", Kind::Float),
    ("training.max_grad_norm", Kind::Float),
    ("training.seq_len", Kind::UInt),
    ("training.batch_size", Kind::UInt),
    ("training.grad_accum", Kind::UInt),
    ("training.checkpoint_every", Kind::UInt),
    ("training.log_every", Kind::UInt),
    ("training.eps", Kind::Float),
    ("training.ternary", Kind::Bool),
    ("objectives.dlm.enabled", Kind::Bool),
    ("objectives.dlm.weight", Kind::Float),
    ("objectives.dlm.mask_prob", Kind::OptFloat),
    ("objectives.dlm.mask_token_id", Kind::OptUInt),
    ("objectives.dlm.use_complementary_masks", Kind::Bool),
    ("objectives.ar.enabled", Kind::Bool),
];

impl TrainConfig {
    /// The paper's defaults with the preset `name` applied; an unknown name is an error listing
    /// [`PRESETS`].
    ///
    /// | preset | lr | seq_len | batch × accum | total_tokens | ternary |
    /// |---|---|---|---|---|---|
    /// | `stories260k` | 1e-3 | 256 | 4 × 4 | 2M | no |
    /// | `smollm2_135m` | 2e-5 | 512 | 8 × 4 | 100M | no |
    /// | `qwen3_4b` | 2e-5 | 512 | 1 × 32 | 1B | no |
    /// | `bitnet_2b` | 2e-5 | 512 | 2 × 16 | 1B | yes |
    ///
    /// stories260k follows the CPU trial in `reference/demo-dlm-notes.md` (lr 2e-5 barely moves a
    /// 260K-parameter model; 1e-3 converts it) and holds out 5% of the windows; the others take
    /// the seed's and the paper's recipe.
    pub fn preset(name: &str) -> Result<TrainConfig> {
        let mut c = TrainConfig::paper(name);
        match name {
            "stories260k" => {
                c.training.lr = 1e-3;
                c.training.seq_len = 256;
                // 16 windows per step as micro-batches of 4: a batch of 16 [noisy | clean]
                // pairs makes attention tensors of ~64 MiB, which glibc maps and unmaps on
                // every op (2.2× slower on 2 cores than 4 × 4).
                c.training.batch_size = 4;
                c.training.grad_accum = 4;
                c.training.checkpoint_every = 50;
                c.training.log_every = 5;
                c.conversion.total_tokens = Some(2_000_000);
                c.data.holdout_fraction = 0.05;
            }
            "smollm2_135m" => {
                c.training.batch_size = 8;
                c.training.grad_accum = 4;
                c.conversion.total_tokens = Some(100_000_000);
            }
            "qwen3_4b" => {
                c.training.batch_size = 1;
                c.training.grad_accum = 32;
            }
            "bitnet_2b" => {
                c.training.batch_size = 2;
                c.training.grad_accum = 16;
                c.training.ternary = true;
            }
            _ => {
                return Err(TrainError::Config(format!(
                    "unknown model preset `{name}`; presets: {}",
                    PRESETS.join(", ")
                )))
            }
        }
        Ok(c)
    }

    /// The paper's recipe (§2.6 of the reference notes) under the model name `model`.
    fn paper(model: &str) -> TrainConfig {
        TrainConfig {
            model: model.to_string(),
            seed: 42,
            device: Device::Cpu,
            source: SourceConfig { path: None },
            data: DataConfig {
                path: None,
                text_split: TextSplit::Auto,
                append_eos: true,
                holdout_fraction: 0.0,
                split: None,
                columns: ColumnsConfig::default(),
            },
            output: OutputConfig { path: None },
            conversion: ConversionConfig {
                total_tokens: Some(1_000_000_000),
                bd_size: 32,
                pad_to_block: true,
            },
            training: TrainingConfig {
                lr: 2e-5,
                warmup_ratio: 0.03,
                weight_decay: 0.0,
                betas: [0.9, 0.999],
                adam_eps: 1e-8,
                max_grad_norm: 1.0,
                seq_len: 512,
                batch_size: 1,
                grad_accum: 1,
                checkpoint_every: 500,
                log_every: 10,
                eps: 1e-3,
                ternary: false,
            },
            objectives: ObjectivesConfig {
                dlm: DlmObjective {
                    enabled: true,
                    weight: 1.0,
                    mask_prob: None,
                    mask_token_id: None,
                    use_complementary_masks: true,
                },
                ar: ArObjective { enabled: false },
            },
        }
    }

    /// Builds the configuration from the preset, `config_file` (TOML or YAML by extension) and
    /// `overrides` (`key.path=value`, applied in order); see the module docs. The model preset is
    /// the last `model=` override, else the file's `model` key; neither is an error. A relative
    /// `output.path` default is `output/<model>`.
    pub fn load(config_file: Option<&Path>, overrides: &[String]) -> Result<TrainConfig> {
        let file = config_file.map(read_file).transpose()?;
        let overrides = overrides
            .iter()
            .map(|o| parse_override(o))
            .collect::<Result<Vec<_>>>()?;

        let from_overrides = overrides
            .iter()
            .rev()
            .find(|o| o.key == "model")
            .map(|o| scalar_text(&o.value));
        let from_file = file
            .as_ref()
            .and_then(|(_, tree)| tree.get("model"))
            .map(scalar_text);
        let model = from_overrides.or(from_file).ok_or_else(|| {
            TrainError::Config(format!(
                "no model: pass model=NAME or set `model` in the config file (presets: {})",
                PRESETS.join(", ")
            ))
        })?;

        let preset = TrainConfig::preset(&model)?;
        let mut tree = serde_json::to_value(&preset)
            .map_err(|e| TrainError::Config(format!("serialising the preset: {e}")))?;
        if let Some((path, value)) = &file {
            let origin = path.display().to_string();
            let mut leaves = Vec::new();
            flatten(&origin, "", value, &mut leaves)?;
            for (key, value) in leaves {
                set(&mut tree, &origin, &key, value)?;
            }
        }
        for o in overrides {
            let origin = format!("override `{}`", o.text);
            set(&mut tree, &origin, &o.key, o.value)?;
        }

        let mut config: TrainConfig = serde_json::from_value(tree)
            .map_err(|e| TrainError::Config(format!("invalid configuration: {e}")))?;
        if config.output.path.is_none() {
            config.output.path = Some(Path::new("output").join(&config.model));
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the values together: ranges, `seq_len` a multiple of `bd_size`, at least one
    /// objective. Each error names the key.
    pub fn validate(&self) -> Result<()> {
        let t = &self.training;
        let bad = |key: &str, msg: String| Err(TrainError::Config(format!("{key}: {msg}")));
        if !PRESETS.contains(&self.model.as_str()) {
            return bad(
                "model",
                format!(
                    "unknown preset `{}`; presets: {}",
                    self.model,
                    PRESETS.join(", ")
                ),
            );
        }
        let bd = self.conversion.bd_size;
        if bd == 0 {
            return bad("conversion.bd_size", "must be at least 1".into());
        }
        if t.seq_len == 0 || !t.seq_len.is_multiple_of(bd) {
            return bad(
                "training.seq_len",
                format!(
                    "{} is not a positive multiple of conversion.bd_size {bd}",
                    t.seq_len
                ),
            );
        }
        let positive = [("training.lr", t.lr), ("training.adam_eps", t.adam_eps)];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, format!("{v} must be a positive number"));
            }
        }
        let non_negative = [
            ("training.weight_decay", t.weight_decay),
            ("training.max_grad_norm", t.max_grad_norm),
            ("objectives.dlm.weight", self.objectives.dlm.weight),
        ];
        for (key, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, format!("{v} must be a number ≥ 0"));
            }
        }
        let unit = [
            ("training.warmup_ratio", t.warmup_ratio, true),
            ("training.betas", t.betas[0], false),
            ("training.betas", t.betas[1], false),
            ("training.eps", t.eps, false),
            ("data.holdout_fraction", self.data.holdout_fraction, false),
        ];
        for (key, v, closed) in unit {
            let ok = v >= 0.0 && (v < 1.0 || (closed && v == 1.0));
            if !ok {
                let range = if closed { "[0, 1]" } else { "[0, 1)" };
                return bad(key, format!("{v} is outside {range}"));
            }
        }
        if let Some(p) = self.objectives.dlm.mask_prob {
            if !(p > 0.0 && p <= 1.0) {
                return bad("objectives.dlm.mask_prob", format!("{p} is outside (0, 1]"));
            }
        }
        for (key, v) in [
            ("training.batch_size", t.batch_size),
            ("training.grad_accum", t.grad_accum),
            ("training.log_every", t.log_every as usize),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.conversion.total_tokens == Some(0) {
            return bad(
                "conversion.total_tokens",
                "must be at least 1 (or null for one pass)".into(),
            );
        }
        if !self.objectives.dlm.enabled && !self.objectives.ar.enabled {
            return bad(
                "objectives",
                "objectives.dlm.enabled and objectives.ar.enabled are both false: nothing to train"
                    .into(),
            );
        }
        Ok(())
    }

    /// The output directory (`output.path`, `output/<model>` when unset).
    pub fn output_dir(&self) -> PathBuf {
        self.output
            .path
            .clone()
            .unwrap_or_else(|| Path::new("output").join(&self.model))
    }
}

/// One parsed `key=value` override.
struct Override {
    /// The override as written.
    text: String,
    /// The dotted key.
    key: String,
    /// The value, parsed like Hydra.
    value: Value,
}

/// Splits `key=value` and parses the value.
fn parse_override(text: &str) -> Result<Override> {
    let (key, value) = text.split_once('=').ok_or_else(|| {
        TrainError::Config(format!(
            "override `{text}` is not KEY=VALUE (e.g. training.lr=1e-4)"
        ))
    })?;
    let key = key.trim();
    if key.is_empty() {
        return Err(TrainError::Config(format!("override `{text}` has no key")));
    }
    Ok(Override {
        text: text.to_string(),
        key: key.to_string(),
        value: parse_value(value.trim()),
    })
}

/// Parses an override value the way Hydra does: `null`, booleans, integers, floats, `[a, b]`
/// lists, quoted strings, and anything else as a bare string.
pub fn parse_value(text: &str) -> Value {
    let t = text.trim();
    if t == "null" || t == "~" {
        return Value::Null;
    }
    match t.to_ascii_lowercase().as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return Value::String(t[1..t.len() - 1].to_string());
        }
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if inner.trim().is_empty() {
            return Value::Array(Vec::new());
        }
        return Value::Array(inner.split(',').map(parse_value).collect());
    }
    let digits = t.replace('_', "");
    let numeric = digits
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
        && digits.chars().any(|c| c.is_ascii_digit());
    if numeric {
        if let Ok(i) = digits.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = digits.parse::<u64>() {
            return Value::from(u);
        }
        if let Ok(f) = digits.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(t.to_string())
}

/// The text of a scalar value (a model name given as `model=...` or in a file).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads a TOML or YAML config file into a JSON tree.
fn read_file(path: &Path) -> Result<(PathBuf, Value)> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let value: Value = match ext.as_deref() {
        Some("toml") => toml::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?,
        Some("yaml" | "yml") => serde_yaml::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?,
        _ => {
            return Err(TrainError::Config(format!(
                "{}: a config file must end in .toml, .yaml or .yml",
                path.display()
            )))
        }
    };
    let value = match value {
        Value::Null => Value::Object(Map::new()),
        v @ Value::Object(_) => v,
        _ => {
            return Err(TrainError::Config(format!(
                "{}: the top level must be a table of keys",
                path.display()
            )))
        }
    };
    Ok((path.to_path_buf(), value))
}

/// The type of `key`, if it is one.
fn kind_of(key: &str) -> Option<Kind> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, kind)| *kind)
}

/// The unknown-key error of `origin`.
fn unknown_key(origin: &str, key: &str) -> TrainError {
    let valid: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    TrainError::Config(format!(
        "{origin}: unknown key `{key}`; valid keys: {}",
        valid.join(", ")
    ))
}

/// Collects the leaves of a file's tree as (dotted key, value): a table whose path is a prefix of
/// known keys is descended into; anything else must be a known key.
fn flatten(
    origin: &str,
    prefix: &str,
    value: &Value,
    out: &mut Vec<(String, Value)>,
) -> Result<()> {
    let Value::Object(map) = value else {
        return Err(unknown_key(origin, prefix));
    };
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if kind_of(&key).is_some() {
            out.push((key, v.clone()));
        } else if v.is_object()
            && KEYS
                .iter()
                .any(|(known, _)| known.starts_with(&format!("{key}.")))
        {
            flatten(origin, &key, v, out)?;
        } else {
            return Err(unknown_key(origin, &key));
        }
    }
    Ok(())
}

/// Sets `key` in the tree to `value`, checked and converted to the key's type.
fn set(tree: &mut Value, origin: &str, key: &str, value: Value) -> Result<()> {
    let kind = kind_of(key).ok_or_else(|| unknown_key(origin, key))?;
    let value = coerce(kind, &value).ok_or_else(|| {
        TrainError::Config(format!(
            "{origin}: {key} must be {}, not {value}",
            kind.describe()
        ))
    })?;
    let mut node = tree;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Object(map) = node else {
            return Err(unknown_key(origin, key));
        };
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return Ok(());
        }
        node = map.get_mut(part).ok_or_else(|| unknown_key(origin, key))?;
    }
    Err(unknown_key(origin, key))
}

/// `value` as a value of `kind`, or `None` when it is not one. Strings are re-read with the
/// override syntax (YAML 1.1 writes `1e-3` as a string), whole floats become integers (`1e8`).
fn coerce(kind: Kind, value: &Value) -> Option<Value> {
    if let Value::String(s) = value {
        if !matches!(
            kind,
            Kind::Str | Kind::OptStr | Kind::OptPath | Kind::Device | Kind::TextSplit
        ) {
            let reparsed = parse_value(s);
            return match reparsed {
                Value::String(_) => None,
                v => coerce(kind, &v),
            };
        }
    }
    let optional = matches!(
        kind,
        Kind::OptStr | Kind::OptPath | Kind::OptUInt | Kind::OptFloat
    );
    if value.is_null() {
        return optional.then_some(Value::Null);
    }
    match kind {
        Kind::Str | Kind::OptStr | Kind::OptPath => match value {
            Value::String(_) => Some(value.clone()),
            Value::Number(n) => Some(Value::String(n.to_string())),
            _ => None,
        },
        Kind::UInt | Kind::OptUInt => {
            if let Some(u) = value.as_u64() {
                return Some(Value::from(u));
            }
            let f = value.as_f64()?;
            (f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64).then(|| Value::from(f as u64))
        }
        Kind::Float | Kind::OptFloat => value.as_f64().map(Value::from),
        Kind::Bool => value.as_bool().map(Value::Bool),
        Kind::FloatPair => match value {
            Value::Array(items) if items.len() == 2 => {
                let a = coerce(Kind::Float, &items[0])?;
                let b = coerce(Kind::Float, &items[1])?;
                Some(Value::Array(vec![a, b]))
            }
            _ => None,
        },
        Kind::Device => {
            let s = value.as_str()?.to_ascii_lowercase();
            matches!(s.as_str(), "cpu" | "cuda").then_some(Value::String(s))
        }
        Kind::TextSplit => {
            let s = value.as_str()?.to_ascii_lowercase();
            matches!(s.as_str(), "auto" | "paragraph" | "line").then_some(Value::String(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn err(config_file: Option<&Path>, overrides: &[&str]) -> String {
        TrainConfig::load(config_file, &strings(overrides))
            .unwrap_err()
            .to_string()
    }

    /// Every leaf of the serialised config, as dotted keys.
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn the_key_table_lists_exactly_the_fields() {
        let tree = serde_json::to_value(TrainConfig::preset("qwen3_4b").unwrap()).unwrap();
        let mut found = Vec::new();
        leaves("", &tree, &mut found);
        let listed: Vec<String> = KEYS.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(found, listed);
    }

    #[test]
    fn the_seed_command_line_parses_as_written() {
        let c = TrainConfig::load(
            None,
            &strings(&[
                "model=smollm2_135m",
                "source.path=/models/SmolLM2-135M-Instruct",
                "conversion.total_tokens=100000000",
            ]),
        )
        .unwrap();
        assert_eq!(c.model, "smollm2_135m");
        assert_eq!(
            c.source.path.as_deref(),
            Some(Path::new("/models/SmolLM2-135M-Instruct"))
        );
        assert_eq!(c.conversion.total_tokens, Some(100_000_000));
        assert_eq!(
            c.output.path.as_deref(),
            Some(Path::new("output/smollm2_135m"))
        );
        // The paper's recipe underneath.
        assert_eq!(c.training.lr, 2e-5);
        assert_eq!(c.training.warmup_ratio, 0.03);
        assert_eq!(c.training.weight_decay, 0.0);
        assert_eq!(c.training.betas, [0.9, 0.999]);
        assert_eq!(c.training.max_grad_norm, 1.0);
        assert_eq!(c.training.seq_len, 512);
        assert_eq!(c.training.eps, 1e-3);
        assert_eq!(c.conversion.bd_size, 32);
        assert!(c.conversion.pad_to_block);
        assert_eq!(c.seed, 42);
        assert!(c.objectives.dlm.enabled && c.objectives.dlm.use_complementary_masks);
        assert_eq!(c.objectives.dlm.mask_prob, None);
        assert!(!c.objectives.ar.enabled);
        assert_eq!(c.device, Device::Cpu);
    }

    #[test]
    fn presets_set_their_model_specific_values() {
        let s = TrainConfig::load(None, &strings(&["model=stories260k"])).unwrap();
        assert_eq!(
            (
                s.training.lr,
                s.training.seq_len,
                s.training.batch_size,
                s.training.grad_accum
            ),
            (1e-3, 256, 4, 4)
        );
        assert!(!s.training.ternary);
        let b = TrainConfig::load(None, &strings(&["model=bitnet_2b"])).unwrap();
        assert!(b.training.ternary);
        assert_eq!((b.training.lr, b.training.seq_len), (2e-5, 512));
        let q = TrainConfig::load(None, &strings(&["model=qwen3_4b"])).unwrap();
        assert_eq!(q.conversion.total_tokens, Some(1_000_000_000));
        assert!(!q.training.ternary);
        let e = err(None, &["model=gpt5"]);
        assert!(e.contains("unknown model preset `gpt5`"), "{e}");
        assert!(e.contains("stories260k"), "{e}");
        let e = err(None, &["training.lr=1"]);
        assert!(e.contains("no model"), "{e}");
    }

    #[test]
    fn overrides_parse_like_hydra_and_apply_in_order() {
        let c = TrainConfig::load(
            None,
            &strings(&[
                "model=stories260k",
                "training.lr=1e-3",
                "training.lr=3e-4",
                "training.betas=[0.9,0.95]",
                "training.ternary=True",
                "objectives.dlm.mask_prob=0.15",
                "objectives.dlm.mask_token_id=0",
                "objectives.dlm.weight=0.5",
                "objectives.ar.enabled=true",
                "conversion.total_tokens=null",
                "conversion.total_tokens=1_000",
                "training.seq_len=1e3",
                "conversion.bd_size=8",
                "output.path='out dir'",
                "device=CUDA",
                "seed=7",
            ]),
        )
        .unwrap();
        assert_eq!(c.training.lr, 3e-4);
        assert_eq!(c.training.betas, [0.9, 0.95]);
        assert!(c.training.ternary);
        assert_eq!(c.objectives.dlm.mask_prob, Some(0.15));
        assert_eq!(c.objectives.dlm.mask_token_id, Some(0));
        assert_eq!(c.objectives.dlm.weight, 0.5);
        assert!(c.objectives.ar.enabled);
        assert_eq!(c.conversion.total_tokens, Some(1000));
        assert_eq!(c.training.seq_len, 1000);
        assert_eq!(c.output.path.as_deref(), Some(Path::new("out dir")));
        assert_eq!(c.device, Device::Cuda);
        assert_eq!(c.seed, 7);
        // The preset is chosen by the last model= override, before any other key applies.
        let c = TrainConfig::load(
            None,
            &strings(&["training.lr=0.5", "model=qwen3_4b", "model=stories260k"]),
        )
        .unwrap();
        assert_eq!((c.model.as_str(), c.training.seq_len), ("stories260k", 256));
        assert_eq!(c.training.lr, 0.5);
    }

    #[test]
    fn parse_value_reads_hydra_scalars() {
        assert_eq!(parse_value("null"), Value::Null);
        assert_eq!(parse_value("false"), Value::Bool(false));
        assert_eq!(parse_value("42"), Value::from(42));
        assert_eq!(parse_value("-3"), Value::from(-3));
        assert_eq!(parse_value("1e-3"), Value::from(1e-3));
        assert_eq!(parse_value(".5"), Value::from(0.5));
        assert_eq!(parse_value("\"7\""), Value::from("7"));
        assert_eq!(parse_value("hf://org/ckpt"), Value::from("hf://org/ckpt"));
        assert_eq!(parse_value("e"), Value::from("e"));
        assert_eq!(
            parse_value("[1, 2.5]"),
            Value::Array(vec![Value::from(1), Value::from(2.5)])
        );
    }

    #[test]
    fn unknown_keys_are_errors_listing_the_valid_ones() {
        let e = err(None, &["model=stories260k", "training.learning_rate=1"]);
        assert!(e.contains("unknown key `training.learning_rate`"), "{e}");
        assert!(e.contains("override `training.learning_rate=1`"), "{e}");
        for key in [
            "training.lr",
            "conversion.bd_size",
            "objectives.dlm.mask_prob",
        ] {
            assert!(e.contains(key), "{e}");
        }
        let e = err(None, &["model=stories260k", "training=3"]);
        assert!(e.contains("unknown key `training`"), "{e}");
        let e = err(None, &["model=stories260k", "training.lr"]);
        assert!(e.contains("not KEY=VALUE"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_type() {
        let e = err(None, &["model=stories260k", "training.lr=fast"]);
        assert!(e.contains("training.lr must be a number"), "{e}");
        let e = err(None, &["model=stories260k", "training.seq_len=-5"]);
        assert!(
            e.contains("training.seq_len must be a non-negative integer"),
            "{e}"
        );
        let e = err(None, &["model=stories260k", "training.seq_len=2.5"]);
        assert!(
            e.contains("training.seq_len must be a non-negative integer"),
            "{e}"
        );
        let e = err(
            None,
            &["model=stories260k", "conversion.pad_to_block=maybe"],
        );
        assert!(
            e.contains("conversion.pad_to_block must be true or false"),
            "{e}"
        );
        let e = err(None, &["model=stories260k", "device=tpu"]);
        assert!(e.contains("device must be `cpu` or `cuda`"), "{e}");
        let e = err(None, &["model=stories260k", "training.betas=[0.9]"]);
        assert!(
            e.contains("training.betas must be a list of two numbers"),
            "{e}"
        );
        let e = err(None, &["model=stories260k", "training.lr=null"]);
        assert!(e.contains("training.lr must be a number"), "{e}");
        // Checks across keys.
        let e = err(None, &["model=stories260k", "training.seq_len=100"]);
        assert!(
            e.contains("training.seq_len: 100 is not a positive multiple"),
            "{e}"
        );
        let e = err(None, &["model=stories260k", "objectives.dlm.mask_prob=0"]);
        assert!(e.contains("objectives.dlm.mask_prob"), "{e}");
        let e = err(None, &["model=stories260k", "training.eps=1"]);
        assert!(e.contains("training.eps"), "{e}");
        let e = err(None, &["model=stories260k", "objectives.dlm.enabled=false"]);
        assert!(e.contains("nothing to train"), "{e}");
    }

    #[test]
    fn toml_and_yaml_files_layer_between_preset_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("run.toml");
        std::fs::write(
            &toml_path,
            "model = \"stories260k\"\nseed = 3\n\"data.path\" = \"stories.txt\"\n\n\
             [training]\nlr = 5e-4\nbetas = [0.8, 0.9]\n\n[objectives.dlm]\nweight = 0.5\n",
        )
        .unwrap();
        let c = TrainConfig::load(Some(&toml_path), &strings(&["seed=9"])).unwrap();
        assert_eq!(c.model, "stories260k");
        assert_eq!(c.training.seq_len, 256); // preset
        assert_eq!(c.training.lr, 5e-4); // file
        assert_eq!(c.training.betas, [0.8, 0.9]);
        assert_eq!(c.objectives.dlm.weight, 0.5);
        assert_eq!(c.data.path.as_deref(), Some(Path::new("stories.txt")));
        assert_eq!(c.seed, 9); // override beats file

        // The seed's unified-objective YAML, as its docs write it; YAML 1.1's string `1e-3`.
        let yaml_path = dir.path().join("unified.yaml");
        std::fs::write(
            &yaml_path,
            "model: smollm2_135m\nobjectives:\n  dlm:\n    enabled: true\n    weight: 0.5\n    \
             mask_prob: 0.15\n    mask_token_id: 0  # MUST match inference\n    \
             use_complementary_masks: true\ntraining:\n  lr: \"1e-3\"\n",
        )
        .unwrap();
        let c = TrainConfig::load(Some(&yaml_path), &[]).unwrap();
        assert_eq!(c.model, "smollm2_135m");
        assert_eq!(c.objectives.dlm.mask_prob, Some(0.15));
        assert_eq!(c.objectives.dlm.mask_token_id, Some(0));
        assert_eq!(c.training.lr, 1e-3);
        // model= on the command line picks the preset even when the file names another.
        let c = TrainConfig::load(Some(&yaml_path), &strings(&["model=stories260k"])).unwrap();
        assert_eq!((c.model.as_str(), c.training.seq_len), ("stories260k", 256));

        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "model: stories260k\ntraining:\n  lr: 1e-3\n  warmup: 5\n",
        )
        .unwrap();
        let e = err(Some(&bad), &[]);
        assert!(e.contains("bad.yaml: unknown key `training.warmup`"), "{e}");
        assert!(e.contains("training.warmup_ratio"), "{e}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "model = \"stories260k\"\n[training]\nseq_len = \"long\"\n",
        )
        .unwrap();
        let e = err(Some(&bad), &[]);
        assert!(
            e.contains("bad.toml: training.seq_len must be a non-negative integer"),
            "{e}"
        );
        let ini = dir.path().join("run.ini");
        std::fs::write(&ini, "").unwrap();
        assert!(err(Some(&ini), &["model=stories260k"]).contains(".toml, .yaml or .yml"));
        let missing = dir.path().join("missing.toml");
        assert!(err(Some(&missing), &["model=stories260k"]).contains("missing.toml"));
    }

    #[test]
    fn the_config_round_trips_through_json() {
        let c =
            TrainConfig::load(None, &strings(&["model=bitnet_2b", "source.path=ckpt"])).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"bd_size\":32"), "{json}");
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.output_dir(), Path::new("output/bitnet_2b"));
    }
}
