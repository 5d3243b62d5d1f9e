//! `dlm convert`: a Hugging Face checkpoint directory → one GGUF file.
//!
//! The pipeline reads `config.json` ([`arch`]), the tokenizer files ([`vocab`]) and the
//! memory-mapped safetensors shards ([`checkpoint`]), decides a GGUF type for every tensor
//! ([`plan`]), and streams the tensors one at a time through the format codecs of the `quant`
//! crate into a [`gguf::GgufWriter`], which writes a temporary file and renames it into place.
//!
//! Ternary output (TQ1_0, TQ2_0, I2_S) is only produced from checkpoints trained ternary
//! (BitNet b1.58): their projections are ternarized with the absmean rule before packing, exactly
//! as the model computes them, so every ternary type holds the model's own weights. Other
//! checkpoints are refused unless `force_ternary` is set.

pub mod arch;
pub mod checkpoint;
pub mod error;
pub mod plan;
pub mod target;
pub mod tiny;
pub mod vocab;

use std::path::{Path, PathBuf};

use gguf::{GgufWriter, Value};
use indicatif::{ProgressBar, ProgressStyle};

pub use arch::{ArchInfo, Family};
pub use error::{ConvertError, Result};
pub use plan::{HeadTypes, OutType, TensorPlan, HEAD_TYPES};
pub use target::Target;

/// What to convert and how.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// The checkpoint directory.
    pub input: PathBuf,
    /// The GGUF to write; `None` = `<input>/<name>-<outtype>.gguf`.
    pub output: Option<PathBuf>,
    /// Output type of the weight matrices.
    pub outtype: OutType,
    /// The engine the file is for (architecture name and keys); `None` = [`Target::default_for`]
    /// the output type.
    pub target: Option<Target>,
    /// Types of the embedding and the LM head, when not the defaults for `outtype`.
    pub head_types: HeadTypes,
    /// Ternarize a checkpoint that was not trained ternary (destroys an ordinary model's quality).
    pub force_ternary: bool,
    /// Append a `|<MASK>|` token (and a mean embedding row) when the checkpoint has none. The
    /// model is not trained for it: only for exercising the block-diffusion path.
    pub add_mask_token: bool,
    /// `general.name`; defaults to the directory name.
    pub name: Option<String>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a conversion produced.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    /// The file written.
    pub output: PathBuf,
    /// `general.architecture`.
    pub arch: String,
    /// The engine the file was written for.
    pub target: Target,
    /// Known problems of that engine with this model (it loads the file but computes wrongly).
    pub warnings: Vec<String>,
    /// Number of tensors written.
    pub n_tensors: usize,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// Tensors that could not take the requested type, with the type used and why.
    pub fallbacks: Vec<String>,
    /// Mask token id, if the checkpoint is a block-diffusion model.
    pub mask_token_id: Option<u32>,
    /// Block size, if known.
    pub block_size: Option<u32>,
}

/// llama.cpp's `general.file_type` (LLAMA_FTYPE_*) for an output type.
fn file_type(outtype: OutType) -> u32 {
    match outtype {
        OutType::F32 => 0,
        OutType::F16 => 1,
        OutType::Q8_0 => 7,
        OutType::BF16 => 32,
        OutType::TQ1_0 => 36,
        OutType::TQ2_0 => 37,
        OutType::I2_S => 40,
    }
}

/// Converts a checkpoint directory to GGUF. On any error nothing is left at the output path.
pub fn convert(opts: &ConvertOptions) -> Result<ConvertReport> {
    let dir = opts.input.as_path();
    let config_json = checkpoint::read_json_opt(&dir.join("config.json"))?.ok_or_else(|| {
        ConvertError::MissingFile {
            dir: dir.to_path_buf(),
            what: "config.json".into(),
        }
    })?;
    let config = checkpoint::JsonConfig::new("config.json", config_json)?;
    let mut info = ArchInfo::from_config(&config)?;
    let weights = checkpoint::Weights::open(dir)?;
    let mut vocab = vocab::load(dir, info.vocab_size as usize, &config, false)?;
    let mut added_tokens = 0;
    if opts.add_mask_token && vocab.mask_token_id.is_none() {
        info.vocab_size += 1;
        added_tokens = 1;
        vocab = vocab::load(dir, info.vocab_size as usize, &config, true)?;
    }
    let target = opts
        .target
        .unwrap_or_else(|| Target::default_for(opts.outtype));
    target::check(target, &info, opts.outtype, opts.head_types)?;
    let arch = target.gguf_arch(info.family);
    let plan = plan::plan(
        &info,
        &weights,
        opts.outtype,
        opts.head_types,
        opts.force_ternary,
        added_tokens,
    )?;

    let name = opts.name.clone().unwrap_or_else(|| default_name(dir));
    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| dir.join(format!("{name}-{}.gguf", opts.outtype.name())));

    let mut writer = GgufWriter::new();
    writer.add("general.architecture", Value::String(arch.into()))?;
    writer.add("general.name", Value::String(name))?;
    writer.add("general.file_type", Value::U32(file_type(opts.outtype)))?;
    writer.add("general.quantization_version", Value::U32(2))?;
    writer.add(
        "dlm.source.architecture",
        Value::String(info.hf_class.clone()),
    )?;
    for (k, v) in info.metadata(&config, arch)? {
        writer.add(k, v)?;
    }
    for (k, v) in vocab.metadata {
        writer.add(k, v)?;
    }
    for t in &plan.tensors {
        writer.add_tensor(&t.gguf_name, &t.dims, t.ty)?;
    }

    let bar = if opts.progress {
        ProgressBar::new(plan.tensors.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The writer's callback can only return io::Error; keep the precise error to report it.
    let mut failure: Option<ConvertError> = None;
    let result = writer.write_file(&output, |i, _info, out| {
        let t = &plan.tensors[i];
        bar.set_message(t.gguf_name.clone());
        let bytes = match plan::encode(t, &weights) {
            Ok(b) => b,
            Err(e) => {
                let msg = e.to_string();
                failure = Some(e);
                return Err(std::io::Error::other(msg));
            }
        };
        bar.inc(1);
        out.write_all(&bytes)
    });
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    result?;
    let file_bytes = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    Ok(ConvertReport {
        output,
        arch: arch.to_string(),
        target,
        warnings: target::warnings(target, &info),
        n_tensors: plan.tensors.len(),
        file_bytes,
        fallbacks: plan.fallbacks,
        mask_token_id: vocab.mask_token_id,
        block_size: vocab.block_size,
    })
}

fn default_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "model".to_string())
}
