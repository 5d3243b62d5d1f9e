//! The architecture of a GGUF model as one config struct: the llama block plus flags.

use gguf::Metadata;

use crate::error::{ModelError, Result};

/// How rotary position embedding pairs dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// llama.cpp "normal": pairs `(2i, 2i+1)`. Llama GGUFs store q/k permuted for this.
    Interleaved,
    /// GPT-NeoX: pairs `(i, i + d/2)` (HF rotate-half). Qwen and BitNet use it.
    Neox,
}

/// The gated FFN's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) * up`.
    Silu,
    /// `relu(gate)^2 * up` (BitNet b1.58).
    Relu2,
}

/// Everything the forward needs to know about the architecture.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// `general.architecture`.
    pub arch: String,
    /// Decoder layers.
    pub n_layers: usize,
    /// Model width.
    pub hidden: usize,
    /// FFN width.
    pub ffn: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Rows of the embedding / LM head.
    pub vocab: usize,
    /// Trained context length.
    pub context_length: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// Rotary dimensions (≤ head_dim).
    pub rope_dims: usize,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// FFN activation.
    pub activation: Activation,
    /// Per-head RMSNorm of q and k (Qwen3).
    pub qk_norm: bool,
    /// BitNet sub-norms before the output and down projections.
    pub sub_norm: bool,
    /// Projections are BitLinear: inputs quantized per token to int8 (BitNet).
    pub bitlinear: bool,
}

/// The largest width, head count, layer count or vocabulary a config may give (2^24): far above
/// any real model, low enough that products of two of them cannot overflow.
pub const MAX_DIM: usize = 1 << 24;

/// Architecture names this engine runs.
pub const SUPPORTED_ARCHS: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "bitnet-b1.58",
    "bitnet-25",
    "bitnet-1.58",
    "bitnet",
];

/// Refuses a float hyper-parameter that is not finite or fails `ok`, naming the key.
fn check_float(key: &str, value: f32, want: &str, ok: impl Fn(f32) -> bool) -> Result<()> {
    if value.is_finite() && ok(value) {
        return Ok(());
    }
    Err(ModelError::Config(format!(
        "{key} is {value}; it must be {want}"
    )))
}

impl ModelConfig {
    /// Reads the config from GGUF metadata; `has_tensor` tells which optional tensors exist.
    pub fn from_metadata(md: &Metadata, has_tensor: impl Fn(&str) -> bool) -> Result<ModelConfig> {
        let arch = md.get_str("general.architecture")?.to_string();
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(ModelError::UnsupportedArch(arch));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let usize_key = |s: &str| -> Result<usize> { Ok(md.get_u64(&k(s))? as usize) };
        let hidden = usize_key("embedding_length")?;
        let n_heads = usize_key("attention.head_count")?;
        let n_kv_heads = md
            .opt_u64(&k("attention.head_count_kv"))?
            .map(|v| v as usize)
            .unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(ModelError::Config(format!(
                "{n_heads} attention heads are not a multiple of {n_kv_heads} KV heads"
            )));
        }
        let head_dim = match md.opt_u64(&k("attention.key_length"))? {
            Some(d) => d as usize,
            None if hidden % n_heads == 0 => hidden / n_heads,
            None => {
                return Err(ModelError::Config(format!(
                    "width {hidden} is not divisible by {n_heads} heads"
                )))
            }
        };
        let rope_dims = md
            .opt_u64(&k("rope.dimension_count"))?
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope.dimension_count {rope_dims} must be even and ≤ head dim {head_dim}"
            )));
        }
        let bitnet = arch.starts_with("bitnet");
        // The FFN activation: recorded as `<arch>.hidden_activation` (files from dlm ≥ the
        // --target option; `hidden_act` in older ones). Without it, bitnet.cpp's b1.58 names mean
        // squared ReLU and plain `bitnet` (1bitLLM, and llama.cpp's name) means SiLU.
        let recorded = match md.opt_str(&k("hidden_activation"))? {
            Some(a) => Some(a),
            None => md.opt_str(&k("hidden_act"))?,
        };
        let relu2 = match recorded {
            Some("relu2") => true,
            Some("silu") => false,
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "{} is `{other}`; supported: silu, relu2",
                    k("hidden_activation")
                )))
            }
            None => bitnet && arch != "bitnet",
        };
        // Float hyper-parameters: a NaN or an infinity here turns every logit into NaN (or
        // garbage) far from its cause, so it is refused now, naming the key.
        let rope_base = md.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0);
        check_float(
            &k("rope.freq_base"),
            rope_base,
            "a finite number > 0",
            |v| v > 0.0,
        )?;
        // Not applied by the forward pass, but a converter wrote it: a non-finite float there is
        // a broken file (any other type is left alone, as before).
        let factor = k("rope.scaling.factor");
        if let Some(v) = md.get(&factor).and_then(|v| v.as_f64()) {
            check_float(&factor, v as f32, "a finite number > 0", |v| v > 0.0)?;
        }
        let eps = md
            .opt_f32(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6);
        check_float(
            &k("attention.layer_norm_rms_epsilon"),
            eps,
            "a finite number ≥ 0",
            |v| v >= 0.0,
        )?;
        let vocab = match md.opt_u64(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => md
                .get_str_array("tokenizer.ggml.tokens")
                .map(|t| t.len())
                .unwrap_or(0),
        };
        let config = ModelConfig {
            n_layers: usize_key("block_count")?,
            hidden,
            ffn: usize_key("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            context_length: md
                .opt_u64(&k("context_length"))?
                .map(|v| v as usize)
                .unwrap_or(2048),
            rope_base,
            rope_dims,
            rope_style: if arch == "llama" {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Neox
            },
            eps,
            activation: if relu2 {
                Activation::Relu2
            } else {
                Activation::Silu
            },
            qk_norm: has_tensor("blk.0.attn_q_norm.weight"),
            sub_norm: has_tensor("blk.0.attn_sub_norm.weight"),
            bitlinear: bitnet,
            arch,
        };
        config.check_sizes()?;
        Ok(config)
    }

    /// Refuses sizes no model has before anything is allocated from them: every width, count
    /// and product of them must be positive (layers may be zero) and at most [`MAX_DIM`].
    fn check_sizes(&self) -> Result<()> {
        let sizes = [
            ("block_count", self.n_layers, true),
            ("embedding_length", self.hidden, false),
            ("feed_forward_length", self.ffn, false),
            ("attention.head_count", self.n_heads, false),
            ("attention.head_count_kv", self.n_kv_heads, false),
            ("attention.key_length", self.head_dim, false),
            ("vocab_size", self.vocab, false),
            (
                "attention.head_count × attention.key_length",
                self.n_heads.saturating_mul(self.head_dim),
                false,
            ),
        ];
        for (key, v, zero_ok) in sizes {
            if (v == 0 && !zero_ok) || v > MAX_DIM {
                return Err(ModelError::Config(format!(
                    "{}.{key} is {v}; it must be between {} and {MAX_DIM}",
                    self.arch,
                    if zero_ok { 0 } else { 1 }
                )));
            }
        }
        Ok(())
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Width of all KV heads of one position.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
