//! Architectures: which Hugging Face classes map to which GGUF `general.architecture`, their
//! hyper-parameters under llama.cpp's key names, and the checkpoint → GGUF tensor names.

use gguf::Value;

use crate::checkpoint::JsonConfig;
use crate::error::{ConvertError, Result};

/// The decoder families the converter knows. All are the llama block with small differences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Llama 2/3, SmolLM2, TinyStories: q/k permuted to llama.cpp's interleaved RoPE layout.
    Llama,
    /// Qwen2 / Qwen2.5 (and Fast-dLLM v2 Qwen): q/k/v biases, NEOX RoPE.
    Qwen2,
    /// Qwen3: per-head q/k RMSNorm, NEOX RoPE.
    Qwen3,
    /// BitNet b1.58 (2B-4T style): sub-norms, squared ReLU, NEOX RoPE, ternary projections.
    BitNet158,
    /// 1bitLLM BitNet (`BitnetForCausalLM` with a LlamaConfig and SiLU): ternary projections.
    BitNetLlama,
}

impl Family {
    /// The `general.architecture` string of the family's own engine (bitnet.cpp's name for
    /// BitNet b1.58); [`crate::Target::gguf_arch`] gives the name for a chosen engine.
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::BitNet158 => "bitnet-b1.58",
            Family::BitNetLlama => "bitnet",
        }
    }

    /// Whether the model was trained with ternary (BitLinear) projections.
    pub fn is_ternary(self) -> bool {
        matches!(self, Family::BitNet158 | Family::BitNetLlama)
    }
}

/// What the converter learned from `config.json`.
#[derive(Clone, Debug)]
pub struct ArchInfo {
    /// The family.
    pub family: Family,
    /// The class name found in `architectures`.
    pub hf_class: String,
    /// Rows of the embedding table.
    pub vocab_size: u64,
    /// Model width.
    pub hidden: u64,
    /// FFN width.
    pub ffn: u64,
    /// Number of decoder layers.
    pub layers: u64,
    /// Attention heads.
    pub heads: u64,
    /// Key/value heads (GQA).
    pub kv_heads: u64,
    /// Width of one head.
    pub head_dim: u64,
    /// Whether the LM head shares the embedding matrix.
    pub tied: bool,
    /// Block-diffusion block size (`bd_size`) if the config carries one.
    pub bd_size: Option<u64>,
    /// Whether `config.json` declares a BitNet quantization config (an offline ternary checkpoint).
    pub quantization_bitnet: bool,
}

const SUPPORTED: &[(&str, Family)] = &[
    ("LlamaForCausalLM", Family::Llama),
    ("MistralForCausalLM", Family::Llama),
    ("Qwen2ForCausalLM", Family::Qwen2),
    ("Fast_dLLM_QwenForCausalLM", Family::Qwen2),
    ("Qwen3ForCausalLM", Family::Qwen3),
    ("BitNetForCausalLM", Family::BitNet158),
    ("BitnetForCausalLM", Family::BitNet158),
];

impl ArchInfo {
    /// Reads the architecture and shape hyper-parameters from `config.json`.
    pub fn from_config(cfg: &JsonConfig) -> Result<ArchInfo> {
        let classes = cfg
            .get("architectures")
            .and_then(|v| v.as_array())
            .ok_or_else(|| ConvertError::config("config.json", "missing list `architectures`"))?;
        let hf_class = classes
            .first()
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                ConvertError::config(
                    "config.json",
                    "`architectures` is empty or not a list of strings",
                )
            })?
            .to_string();
        let mut family = SUPPORTED
            .iter()
            .find(|(name, _)| *name == hf_class)
            .map(|(_, f)| *f)
            .ok_or_else(|| ConvertError::UnsupportedArchitecture(hf_class.clone()))?;
        // The 1bitLLM models use the `BitnetForCausalLM` class with a plain LlamaConfig and SiLU;
        // BitNet b1.58 2B-4T style models say `relu2` (and carry sub-norms).
        let act = cfg.opt_str("hidden_act")?.unwrap_or("silu");
        if family == Family::BitNet158
            && act != "relu2"
            && cfg.opt_str("model_type")? != Some("bitnet")
        {
            family = Family::BitNetLlama;
        }

        let hidden = cfg.u64("hidden_size")?;
        let heads = cfg.u64("num_attention_heads")?;
        if heads == 0 || hidden == 0 {
            return Err(ConvertError::config(
                "config.json",
                "`hidden_size` and `num_attention_heads` must be positive",
            ));
        }
        let kv_heads = cfg.opt_u64("num_key_value_heads")?.unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(ConvertError::config(
                "config.json",
                format!("`num_attention_heads` ({heads}) must be a positive multiple of `num_key_value_heads` ({kv_heads})"),
            ));
        }
        let head_dim = match cfg.opt_u64("head_dim")? {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(ConvertError::config(
                    "config.json",
                    format!("`hidden_size` ({hidden}) is not a multiple of `num_attention_heads` ({heads}) and no `head_dim` is given"),
                ))
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ConvertError::config(
                "config.json",
                format!("head dimension {head_dim} must be even and positive (RoPE rotates pairs)"),
            ));
        }
        let tied_default = family == Family::BitNet158;
        let quantization_bitnet = cfg
            .get("quantization_config")
            .and_then(|q| q.get("quant_method"))
            .and_then(|m| m.as_str())
            .is_some_and(|m| m == "bitnet");
        Ok(ArchInfo {
            family,
            hf_class,
            vocab_size: cfg.u64("vocab_size")?,
            hidden,
            ffn: cfg.u64("intermediate_size")?,
            layers: cfg.u64("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            tied: cfg.opt_bool("tie_word_embeddings")?.unwrap_or(tied_default),
            bd_size: cfg.opt_u64("bd_size")?,
            quantization_bitnet,
        })
    }

    /// The `<arch>.*` hyper-parameter keys under the architecture name `arch` (which depends on
    /// the target engine), with llama.cpp's names and value types.
    pub fn metadata(&self, cfg: &JsonConfig, arch: &str) -> Result<Vec<(String, Value)>> {
        let key = |k: &str| format!("{arch}.{k}");
        let u32v = |v: u64, what: &str| -> Result<Value> {
            u32::try_from(v).map(Value::U32).map_err(|_| {
                ConvertError::config(
                    "config.json",
                    format!("`{what}` = {v} does not fit in 32 bits"),
                )
            })
        };
        let ctx = cfg.opt_u64("max_position_embeddings")?.unwrap_or(2048);
        let eps = cfg.opt_f64("rms_norm_eps")?.unwrap_or(1e-6);
        let default_theta = match self.family {
            Family::Qwen2 | Family::Qwen3 => 1_000_000.0,
            Family::BitNet158 => 500_000.0,
            _ => 10_000.0,
        };
        let theta = cfg.opt_f64("rope_theta")?.unwrap_or(default_theta);
        let mut kv = vec![
            (key("vocab_size"), u32v(self.vocab_size, "vocab_size")?),
            (key("context_length"), u32v(ctx, "max_position_embeddings")?),
            (key("embedding_length"), u32v(self.hidden, "hidden_size")?),
            (key("block_count"), u32v(self.layers, "num_hidden_layers")?),
            (
                key("feed_forward_length"),
                u32v(self.ffn, "intermediate_size")?,
            ),
            (
                key("attention.head_count"),
                u32v(self.heads, "num_attention_heads")?,
            ),
            (
                key("attention.head_count_kv"),
                u32v(self.kv_heads, "num_key_value_heads")?,
            ),
            (
                key("attention.layer_norm_rms_epsilon"),
                Value::F32(eps as f32),
            ),
            (key("rope.freq_base"), Value::F32(theta as f32)),
            (
                key("rope.dimension_count"),
                u32v(self.head_dim, "head_dim")?,
            ),
        ];
        if self.head_dim * self.heads != self.hidden || self.family == Family::Qwen3 {
            kv.push((
                key("attention.key_length"),
                u32v(self.head_dim, "head_dim")?,
            ));
            kv.push((
                key("attention.value_length"),
                u32v(self.head_dim, "head_dim")?,
            ));
        }
        if let Some(scaling) = cfg.get("rope_scaling").and_then(|v| v.as_object()) {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let factor = scaling.get("factor").and_then(|v| v.as_f64());
            match (kind, factor) {
                ("linear", Some(f)) | ("yarn", Some(f)) => {
                    kv.push((key("rope.scaling.type"), Value::String(kind.to_string())));
                    kv.push((key("rope.scaling.factor"), Value::F32(f as f32)));
                    if let Some(orig) = scaling.get("original_max_position_embeddings").and_then(|v| v.as_u64()) {
                        kv.push((key("rope.scaling.original_context_length"), u32v(orig, "original_max_position_embeddings")?));
                    }
                }
                ("default", _) => {}
                _ => {
                    return Err(ConvertError::config(
                        "config.json",
                        format!("`rope_scaling` of type `{kind}` is not supported (supported: linear, yarn)"),
                    ))
                }
            }
        }
        if let Some(act) = crate::target::hidden_activation(self.family) {
            kv.push((
                key(crate::target::HIDDEN_ACTIVATION),
                Value::String(act.into()),
            ));
        }
        Ok(kv)
    }

    /// Maps a checkpoint tensor name to its GGUF name; `Ok(None)` for tensors that are not
    /// model weights (rotary caches) or that the GGUF leaves out (a tied LM head).
    pub fn gguf_name(&self, hf: &str) -> Result<Option<String>> {
        let unknown = || {
            ConvertError::tensor(
                hf,
                format!(
                    "is not part of a {} model; refusing to guess where it goes",
                    self.hf_class
                ),
            )
        };
        if hf.ends_with("rotary_emb.inv_freq") {
            return Ok(None);
        }
        match hf {
            "model.embed_tokens.weight" => return Ok(Some("token_embd.weight".into())),
            "model.norm.weight" => return Ok(Some("output_norm.weight".into())),
            "lm_head.weight" => {
                return Ok(if self.tied {
                    None
                } else {
                    Some("output.weight".into())
                })
            }
            _ => {}
        }
        let rest = hf.strip_prefix("model.layers.").ok_or_else(unknown)?;
        let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
        let layer: u64 = layer.parse().map_err(|_| unknown())?;
        if layer >= self.layers {
            return Err(ConvertError::tensor(
                hf,
                format!(
                    "layer {layer} is beyond num_hidden_layers = {}",
                    self.layers
                ),
            ));
        }
        let (module, suffix) = rest.rsplit_once('.').ok_or_else(unknown)?;
        if !matches!(suffix, "weight" | "bias" | "weight_scale") {
            return Err(unknown());
        }
        let name = match module {
            "input_layernorm" => "attn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "self_attn.q_norm" => "attn_q_norm",
            "self_attn.k_norm" => "attn_k_norm",
            "self_attn.attn_sub_norm" => "attn_sub_norm",
            "post_attention_layernorm" => "ffn_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            "mlp.ffn_sub_norm" => "ffn_sub_norm",
            _ => return Err(unknown()),
        };
        Ok(Some(format!("blk.{layer}.{name}.{suffix}")))
    }

    /// The PyTorch shape `[out, in]` (or `[n]`) a GGUF tensor must have, when the config fixes it.
    pub fn expected_shape(&self, gguf_name: &str) -> Option<Vec<usize>> {
        let (h, f, qd, kvd, v) = (
            self.hidden as usize,
            self.ffn as usize,
            (self.heads * self.head_dim) as usize,
            (self.kv_heads * self.head_dim) as usize,
            self.vocab_size as usize,
        );
        let base = gguf_name
            .rsplit_once('.')
            .map(|(b, _)| b)
            .unwrap_or(gguf_name);
        let is_bias = gguf_name.ends_with(".bias");
        let kind = base.rsplit('.').next().unwrap_or(base);
        let shape = match (kind, is_bias) {
            ("token_embd" | "output", false) => vec![v, h],
            ("output_norm" | "attn_norm" | "ffn_norm", false) => vec![h],
            ("attn_q", false) => vec![qd, h],
            ("attn_k" | "attn_v", false) => vec![kvd, h],
            ("attn_q", true) => vec![qd],
            ("attn_k" | "attn_v", true) => vec![kvd],
            ("attn_output", false) => vec![h, qd],
            ("attn_q_norm" | "attn_k_norm", false) => vec![self.head_dim as usize],
            ("attn_sub_norm", false) => vec![qd],
            ("ffn_gate" | "ffn_up", false) => vec![f, h],
            ("ffn_down", false) => vec![h, f],
            ("ffn_sub_norm", false) => vec![f],
            _ => return None,
        };
        Some(shape)
    }

    /// Whether a GGUF tensor is one of the seven projections a BitNet model runs as BitLinear.
    pub fn is_projection(gguf_name: &str) -> bool {
        gguf_name.ends_with(".weight")
            && [
                "attn_q.",
                "attn_k.",
                "attn_v.",
                "attn_output.",
                "ffn_gate.",
                "ffn_up.",
                "ffn_down.",
            ]
            .iter()
            .any(|p| gguf_name.contains(p))
    }

    /// Whether the q/k projections must be permuted from HF's rotate-half layout to llama.cpp's
    /// interleaved layout (only the `llama` family; NEOX-RoPE families are stored as they are).
    pub fn permutes_qk(&self) -> bool {
        self.family == Family::Llama
    }
}

/// llama.cpp's q/k permutation for `llama` models (convert_hf_to_gguf.py `LlamaModel.permute`):
/// per head, rows `[0..d/2) ++ [d/2..d)` become interleaved `0, d/2, 1, d/2+1, …`.
/// `w` is row-major `[n_head * head_dim, cols]`.
pub fn permute_rope_rows(w: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                // numpy: reshape(n_head, 2, half, cols).swapaxes(1, 2) → new row (h, i, j) = old row (h, j, i)
                let src = h * head_dim + j * half + i;
                let dst = h * head_dim + i * 2 + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_numpy_reshape_swapaxes() {
        // One head of dim 4, 1 column: rows [a0 a1 | b0 b1] → [a0 b0 a1 b1].
        let w = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(permute_rope_rows(&w, 1, 1), vec![0.0, 2.0, 1.0, 3.0]);
        // Two heads of dim 4, 2 columns.
        let w: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let p = permute_rope_rows(&w, 2, 2);
        assert_eq!(
            p,
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
    }
}
