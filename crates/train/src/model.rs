//! The trainable decoder: a Hugging Face llama-family checkpoint as candle [`Var`]s.
//!
//! One config-driven forward serves `LlamaForCausalLM` (SmolLM2, stories260K), `Qwen2ForCausalLM`
//! (q/k/v biases), `Qwen3ForCausalLM` (per-head q/k RMSNorm) and `BitNetForCausalLM` (sub-norms
//! before `o_proj`/`down_proj`, squared ReLU, BitLinear). Every weight is an f32 master `Var`;
//! tied embeddings are one `Var` used by the embedding lookup and the LM head.
//!
//! candle's fused ops (`rms_norm`, `softmax_last_dim`, `rope`) have no backward pass, so this file
//! writes them from elementary ops. RoPE uses the Hugging Face "rotate half" convention on the
//! checkpoint's own q/k layout, as `transformers` does.
//!
//! With ternary QAT on, every projection is a BitLinear: the forward uses the absmean ternary
//! weights and per-token int8 activations computed by the very functions the converter and the
//! engine use (`quant::ternarize_absmean`, `quant::kernels::bitlinear_fake_quant`), and the
//! backward passes gradients straight through to the f32 masters.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use serde_json::Value as Json;

use crate::error::{Result, TrainError};

/// Which architecture family a checkpoint belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `LlamaForCausalLM` (SmolLM2, TinyStories).
    Llama,
    /// `Qwen2ForCausalLM` and the Fast-dLLM v2 Qwen variant.
    Qwen2,
    /// `Qwen3ForCausalLM`.
    Qwen3,
    /// `BitNetForCausalLM` / `BitnetForCausalLM`.
    BitNet,
}

/// The shape hyper-parameters read from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture family.
    pub family: Family,
    /// Model width.
    pub hidden: usize,
    /// FFN width.
    pub ffn: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Embedding rows (`vocab_size`).
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// LM head tied to the embedding.
    pub tied: bool,
    /// Squared ReLU (BitNet b1.58) instead of SiLU in the gated FFN.
    pub relu2: bool,
}

fn get_usize(c: &Json, key: &str, path: &Path) -> Result<Option<usize>> {
    match c.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0 && *n < (1 << 32))
            .map(|n| Some(n as usize))
            .ok_or_else(|| TrainError::json(path, format!("`{key}` must be a positive integer"))),
    }
}

fn need_usize(c: &Json, key: &str, path: &Path) -> Result<usize> {
    get_usize(c, key, path)?.ok_or_else(|| TrainError::json(path, format!("missing `{key}`")))
}

fn get_f64(c: &Json, key: &str, path: &Path, default: f64) -> Result<f64> {
    match c.get(key) {
        None | Some(Json::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| TrainError::json(path, format!("`{key}` must be a number"))),
    }
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json` (already parsed; `path` names it in errors).
    pub fn from_json(c: &Json, path: &Path) -> Result<ModelConfig> {
        let class = c
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Json::as_str)
            .ok_or_else(|| TrainError::json(path, "missing `architectures[0]`"))?;
        let family = match class {
            "LlamaForCausalLM" | "MistralForCausalLM" => Family::Llama,
            "Qwen2ForCausalLM" | "Fast_dLLM_QwenForCausalLM" => Family::Qwen2,
            "Qwen3ForCausalLM" => Family::Qwen3,
            "BitNetForCausalLM" | "BitnetForCausalLM" => Family::BitNet,
            other => {
                return Err(TrainError::json(
                    path,
                    format!("architecture `{other}` is not supported for training (supported: LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, BitNetForCausalLM)"),
                ))
            }
        };
        if let Some(s) = c.get("rope_scaling").filter(|s| !s.is_null()) {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Json::as_str)
                .unwrap_or("?");
            if kind != "default" {
                return Err(TrainError::json(
                    path,
                    format!("`rope_scaling` type `{kind}` is not supported for training"),
                ));
            }
        }
        if c.get("quantization_config").is_some_and(|q| !q.is_null()) {
            return Err(TrainError::json(
                path,
                "the checkpoint is quantized (`quantization_config`); train from the unquantized (bf16/f32 master) variant",
            ));
        }
        let hidden = need_usize(c, "hidden_size", path)?;
        let heads = need_usize(c, "num_attention_heads", path)?;
        let kv_heads = get_usize(c, "num_key_value_heads", path)?.unwrap_or(heads);
        let head_dim = get_usize(c, "head_dim", path)?.unwrap_or(hidden / heads);
        if !heads.is_multiple_of(kv_heads) || head_dim % 2 != 0 {
            return Err(TrainError::json(
                path,
                format!("{heads} heads, {kv_heads} KV heads and head_dim {head_dim}: heads must be a multiple of KV heads and head_dim even"),
            ));
        }
        let act = c.get("hidden_act").and_then(Json::as_str).unwrap_or("silu");
        let relu2 = match act {
            "silu" | "swish" => false,
            "relu2" => true,
            other => {
                return Err(TrainError::json(
                    path,
                    format!("`hidden_act` `{other}` is not supported (silu, relu2)"),
                ))
            }
        };
        let tied_default = family == Family::BitNet;
        Ok(ModelConfig {
            family,
            hidden,
            ffn: need_usize(c, "intermediate_size", path)?,
            layers: need_usize(c, "num_hidden_layers", path)?,
            heads,
            kv_heads,
            head_dim,
            vocab: need_usize(c, "vocab_size", path)?,
            eps: get_f64(c, "rms_norm_eps", path, 1e-6)?,
            rope_theta: get_f64(c, "rope_theta", path, 10000.0)?,
            tied: c
                .get("tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(tied_default),
            relu2,
        })
    }
}

/// A projection: weight `[out, in]` (PyTorch layout) and optional bias.
#[derive(Clone, Debug)]
pub struct Linear {
    /// The weight.
    pub weight: Var,
    /// The bias, if the checkpoint has one.
    pub bias: Option<Var>,
}

/// One decoder layer.
#[derive(Clone, Debug)]
pub struct Layer {
    /// `input_layernorm`.
    pub attn_norm: Var,
    /// `q_proj`.
    pub q: Linear,
    /// `k_proj`.
    pub k: Linear,
    /// `v_proj`.
    pub v: Linear,
    /// `o_proj`.
    pub o: Linear,
    /// Qwen3 per-head `q_norm`.
    pub q_norm: Option<Var>,
    /// Qwen3 per-head `k_norm`.
    pub k_norm: Option<Var>,
    /// BitNet `attn_sub_norm` (before `o_proj`).
    pub attn_sub_norm: Option<Var>,
    /// `post_attention_layernorm`.
    pub ffn_norm: Var,
    /// `gate_proj`.
    pub gate: Linear,
    /// `up_proj`.
    pub up: Linear,
    /// `down_proj`.
    pub down: Linear,
    /// BitNet `ffn_sub_norm` (before `down_proj`).
    pub ffn_sub_norm: Option<Var>,
}

/// The trainable model.
pub struct TrainModel {
    /// Shapes.
    pub config: ModelConfig,
    /// `model.embed_tokens.weight` (also the head when tied).
    pub embed: Var,
    /// Decoder layers.
    pub layers: Vec<Layer>,
    /// `model.norm.weight`.
    pub norm: Var,
    /// `lm_head.weight` when untied.
    pub lm_head: Option<Var>,
    /// BitLinear ternary QAT on every projection.
    pub ternary: bool,
    device: Device,
    inv_freq: Vec<f32>,
}

/// The memory-mapped safetensors of a checkpoint directory (one file or the shards of an index).
pub(crate) fn open_safetensors(
    dir: &Path,
) -> Result<(candle_core::safetensors::MmapedSafetensors, PathBuf)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if single.is_file() {
        vec![single.clone()]
    } else if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| TrainError::io(&index, e))?;
        let json: Json =
            serde_json::from_str(&text).map_err(|e| TrainError::json(&index, e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(Json::as_object)
            .ok_or_else(|| TrainError::json(&index, "missing `weight_map`"))?;
        let mut files: Vec<String> = map
            .values()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    TrainError::json(&index, "`weight_map` values must be file names")
                })
            })
            .collect::<Result<_>>()?;
        files.sort();
        files.dedup();
        files.into_iter().map(|f| dir.join(f)).collect()
    } else {
        return Err(TrainError::checkpoint(
            dir,
            "no model.safetensors or model.safetensors.index.json",
        ));
    };
    for f in &files {
        if !f.is_file() {
            return Err(TrainError::checkpoint(
                f,
                "shard listed in the index is missing",
            ));
        }
    }
    // SAFETY: the files are mapped read-only; nothing in this process writes them while mapped.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .map_err(|e| TrainError::checkpoint(dir, e.to_string()))?;
    let shown = if files.len() == 1 {
        files[0].clone()
    } else {
        index
    };
    Ok((st, shown))
}

/// Reads a checkpoint's tensors by name, checking shapes and remembering which were used.
struct Loader<'a> {
    st: &'a candle_core::safetensors::MmapedSafetensors,
    path: &'a Path,
    device: &'a Device,
    names: BTreeMap<String, bool>,
}

impl Loader<'_> {
    fn has(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn var(&mut self, name: &str, shape: &[usize]) -> Result<Var> {
        let Some(used) = self.names.get_mut(name) else {
            return Err(TrainError::checkpoint(
                self.path,
                format!("tensor `{name}` is missing"),
            ));
        };
        *used = true;
        let view = self
            .st
            .get(name)
            .map_err(|e| TrainError::checkpoint(self.path, format!("tensor `{name}`: {e}")))?;
        if view.shape() != shape {
            return Err(TrainError::checkpoint(
                self.path,
                format!(
                    "tensor `{name}` has shape {:?}, the config needs {shape:?}",
                    view.shape()
                ),
            ));
        }
        let t = self
            .st
            .load(name, self.device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| TrainError::checkpoint(self.path, format!("tensor `{name}`: {e}")))?;
        Ok(Var::from_tensor(&t)?)
    }

    fn opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Var>> {
        if self.has(name) {
            self.var(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.var(&format!("{prefix}.weight"), &[out, inp])?,
            bias: self.opt(&format!("{prefix}.bias"), &[out])?,
        })
    }
}

/// Reads and parses `dir/config.json`.
pub fn read_config_json(dir: &Path) -> Result<Json> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::json(&path, e.to_string()))
}

impl TrainModel {
    /// Loads `dir` (`config.json` + `model.safetensors` or shards) as f32 `Var`s on `device`.
    ///
    /// `ternary` forces BitLinear QAT on or off; `None` turns it on for BitNet checkpoints only.
    pub fn load(dir: &Path, device: &Device, ternary: Option<bool>) -> Result<TrainModel> {
        let config = ModelConfig::from_json(&read_config_json(dir)?, &dir.join("config.json"))?;
        let (st, path) = open_safetensors(dir)?;
        let names = st
            .tensors()
            .into_iter()
            .map(|(n, _)| (n, false))
            .collect::<BTreeMap<_, _>>();
        if let Some(packed) = names.keys().find(|n| n.ends_with("weight_scale")) {
            return Err(TrainError::checkpoint(
                &path,
                format!("tensor `{packed}`: offline-packed ternary weights cannot be trained; use the bf16/f32 master checkpoint"),
            ));
        }
        let mut ld = Loader {
            st: &st,
            path: &path,
            device,
            names,
        };
        let c = &config;
        let (h, f, hd) = (c.hidden, c.ffn, c.head_dim);
        let (qd, kvd) = (c.heads * hd, c.kv_heads * hd);
        let embed = ld.var("model.embed_tokens.weight", &[c.vocab, h])?;
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                attn_norm: ld.var(&format!("{p}.input_layernorm.weight"), &[h])?,
                q: ld.linear(&format!("{p}.self_attn.q_proj"), qd, h)?,
                k: ld.linear(&format!("{p}.self_attn.k_proj"), kvd, h)?,
                v: ld.linear(&format!("{p}.self_attn.v_proj"), kvd, h)?,
                o: ld.linear(&format!("{p}.self_attn.o_proj"), h, qd)?,
                q_norm: ld.opt(&format!("{p}.self_attn.q_norm.weight"), &[hd])?,
                k_norm: ld.opt(&format!("{p}.self_attn.k_norm.weight"), &[hd])?,
                attn_sub_norm: ld.opt(&format!("{p}.self_attn.attn_sub_norm.weight"), &[qd])?,
                ffn_norm: ld.var(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate: ld.linear(&format!("{p}.mlp.gate_proj"), f, h)?,
                up: ld.linear(&format!("{p}.mlp.up_proj"), f, h)?,
                down: ld.linear(&format!("{p}.mlp.down_proj"), h, f)?,
                ffn_sub_norm: ld.opt(&format!("{p}.mlp.ffn_sub_norm.weight"), &[f])?,
            });
            let l = &layers[l];
            if l.q_norm.is_some() != l.k_norm.is_some() {
                return Err(TrainError::checkpoint(
                    &path,
                    format!("{p}: q_norm and k_norm must both be present or both absent"),
                ));
            }
        }
        let norm = ld.var("model.norm.weight", &[h])?;
        let lm_head = if c.tied && !ld.has("lm_head.weight") {
            None
        } else {
            Some(ld.var("lm_head.weight", &[c.vocab, h])?)
        };
        let unused: Vec<&String> = ld
            .names
            .iter()
            .filter(|(n, used)| !**used && !n.ends_with("rotary_emb.inv_freq"))
            .map(|(n, _)| n)
            .collect();
        if let Some(first) = unused.first() {
            return Err(TrainError::checkpoint(
                &path,
                format!(
                    "{} tensor(s) not used by a {:?} model, first `{first}`",
                    unused.len(),
                    c.family
                ),
            ));
        }
        let half = hd / 2;
        let inv_freq = (0..half)
            .map(|i| 1.0 / (c.rope_theta as f32).powf(2.0 * i as f32 / hd as f32))
            .collect();
        Ok(TrainModel {
            ternary: ternary.unwrap_or(c.family == Family::BitNet),
            config,
            embed,
            layers,
            norm,
            lm_head,
            device: device.clone(),
            inv_freq,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every trainable tensor under its Hugging Face name, sorted by name (the tied head is not
    /// listed separately).
    pub fn params(&self) -> Vec<(String, Var)> {
        let mut p = vec![
            ("model.embed_tokens.weight".to_string(), self.embed.clone()),
            ("model.norm.weight".to_string(), self.norm.clone()),
        ];
        if let Some(head) = &self.lm_head {
            p.push(("lm_head.weight".to_string(), head.clone()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let mut add = |n: &str, v: &Var| p.push((format!("model.layers.{i}.{n}"), v.clone()));
            add("input_layernorm.weight", &l.attn_norm);
            add("post_attention_layernorm.weight", &l.ffn_norm);
            for (n, lin) in [
                ("self_attn.q_proj", &l.q),
                ("self_attn.k_proj", &l.k),
                ("self_attn.v_proj", &l.v),
                ("self_attn.o_proj", &l.o),
                ("mlp.gate_proj", &l.gate),
                ("mlp.up_proj", &l.up),
                ("mlp.down_proj", &l.down),
            ] {
                add(&format!("{n}.weight"), &lin.weight);
                if let Some(b) = &lin.bias {
                    add(&format!("{n}.bias"), b);
                }
            }
            for (n, v) in [
                ("self_attn.q_norm.weight", &l.q_norm),
                ("self_attn.k_norm.weight", &l.k_norm),
                ("self_attn.attn_sub_norm.weight", &l.attn_sub_norm),
                ("mlp.ffn_sub_norm.weight", &l.ffn_sub_norm),
            ] {
                if let Some(v) = v {
                    add(n, v);
                }
            }
        }
        p.sort_by(|a, b| a.0.cmp(&b.0));
        p
    }

    /// Names of the projection weights that BitLinear ternarizes.
    pub fn is_projection(name: &str) -> bool {
        name.starts_with("model.layers.") && name.ends_with("_proj.weight")
    }

    /// Grows the vocabulary to `rows` embedding rows (and head rows when untied), each new row the
    /// mean of the existing rows. Fewer or equal rows: nothing changes. Call before creating the
    /// optimizer (the grown weights are new `Var`s).
    pub fn grow_vocab(&mut self, rows: usize) -> Result<()> {
        let old = self.config.vocab;
        if rows <= old {
            return Ok(());
        }
        let grow = |v: &Var| -> Result<Var> {
            let t = v.as_tensor();
            let mean = t.mean_keepdim(0)?;
            let extra = mean.broadcast_as((rows - old, t.dim(1)?))?;
            Ok(Var::from_tensor(&Tensor::cat(&[t, &extra], 0)?)?)
        };
        self.embed = grow(&self.embed)?;
        if let Some(head) = &self.lm_head {
            self.lm_head = Some(grow(head)?);
        }
        self.config.vocab = rows;
        Ok(())
    }

    /// `x · Wᵀ + b` over rows `x: [n, in]`; a BitLinear (ternary weights, int8 tokens) when QAT is on.
    fn linear(&self, x: &Tensor, l: &Linear) -> Result<Tensor> {
        let (x, w) = if self.ternary {
            (
                straight_through(x, |v, cols| {
                    quant::kernels::bitlinear_fake_quant(v, cols);
                })?,
                straight_through(l.weight.as_tensor(), |v, _| {
                    quant::ternarize_absmean(v);
                })?,
            )
        } else {
            (x.clone(), l.weight.as_tensor().clone())
        };
        let y = x.matmul(&w.t()?)?;
        Ok(match &l.bias {
            Some(b) => y.broadcast_add(b.as_tensor())?,
            None => y,
        })
    }

    /// Rotary tables `[t, head_dim]` for `positions` (each frequency repeated for both halves).
    fn rope_tables(&self, positions: &[u32]) -> Result<(Tensor, Tensor)> {
        let hd = self.config.head_dim;
        let mut cos = Vec::with_capacity(positions.len() * hd);
        let mut sin = Vec::with_capacity(positions.len() * hd);
        for &p in positions {
            let row: Vec<(f32, f32)> = self
                .inv_freq
                .iter()
                .map(|f| (p as f32 * f).sin_cos())
                .collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|r| r.1));
                sin.extend(row.iter().map(|r| r.0));
            }
        }
        let n = positions.len();
        Ok((
            Tensor::from_vec(cos, (n, hd), &self.device)?,
            Tensor::from_vec(sin, (n, hd), &self.device)?,
        ))
    }

    /// Final hidden states `[b·t, hidden]` (before the final norm) of `ids: [b, t]`, where token
    /// `j` sits at RoPE position `positions[j]` and attends as `attn` says.
    pub fn hidden(&self, ids: &Tensor, positions: &[u32], attn: Attn) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = ids.dims2()?;
        let ok = match attn {
            Attn::Mask(mask) => mask.dims2()? == (t, t),
            Attn::BlockDiffusion(m) => t == 2 * m.l,
        };
        if positions.len() != t || !ok {
            return Err(TrainError::Config(format!(
                "forward over {t} tokens needs {t} positions and attention for {t} tokens"
            )));
        }
        let (nh, nkv, hd) = (c.heads, c.kv_heads, c.head_dim);
        let (cos, sin) = self.rope_tables(positions)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = self
            .embed
            .as_tensor()
            .index_select(&ids.flatten_all()?, 0)?;
        for l in &self.layers {
            let a = rms_norm(&x, l.attn_norm.as_tensor(), c.eps)?;
            let heads = |y: Tensor, n: usize, norm: &Option<Var>| -> Result<Tensor> {
                let y = y.reshape((b, t, n, hd))?;
                let y = match norm {
                    Some(w) => rms_norm(&y, w.as_tensor(), c.eps)?,
                    None => y,
                };
                Ok(y.transpose(1, 2)?.contiguous()?)
            };
            let q = heads(self.linear(&a, &l.q)?, nh, &l.q_norm)?;
            let k = heads(self.linear(&a, &l.k)?, nkv, &l.k_norm)?;
            let v = heads(self.linear(&a, &l.v)?, nkv, &None)?;
            let q = (rope(&q, &cos, &sin)? * scale)?;
            let k = repeat_kv(&rope(&k, &cos, &sin)?, nh / nkv)?;
            let v = repeat_kv(&v, nh / nkv)?;
            let o = attend(&q, &k, &v, attn)?;
            let o = o.transpose(1, 2)?.reshape((b * t, nh * hd))?;
            let o = match &l.attn_sub_norm {
                Some(w) => rms_norm(&o, w.as_tensor(), c.eps)?,
                None => o,
            };
            x = (x + self.linear(&o, &l.o)?)?;

            let a = rms_norm(&x, l.ffn_norm.as_tensor(), c.eps)?;
            let g = self.linear(&a, &l.gate)?;
            let u = self.linear(&a, &l.up)?;
            let g = if c.relu2 { g.relu()?.sqr()? } else { g.silu()? };
            let m = (g * u)?;
            let m = match &l.ffn_sub_norm {
                Some(w) => rms_norm(&m, w.as_tensor(), c.eps)?,
                None => m,
            };
            x = (x + self.linear(&m, &l.down)?)?;
        }
        Ok(x)
    }

    /// Logits `[n, vocab]` of hidden rows `[n, hidden]` (final norm, then the head).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let x = rms_norm(hidden, self.norm.as_tensor(), self.config.eps)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(x.matmul(&head.as_tensor().t()?)?)
    }

    /// Causal forward of `ids: [b, t]` at positions `0..t`: logits `[b·t, vocab]`.
    pub fn forward_causal(&self, ids: &Tensor) -> Result<Tensor> {
        let h = self.causal_hidden(ids)?;
        self.logits(&h)
    }

    /// Causal hidden states `[b·t, hidden]` of `ids: [b, t]`.
    pub fn causal_hidden(&self, ids: &Tensor) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let positions: Vec<u32> = (0..t as u32).collect();
        self.hidden(ids, &positions, Attn::Mask(&causal_mask(t, &self.device)?))
    }

    /// Block-diffusion training forward: `ids: [b, 2L]` is `[noisy | clean]`, both halves at
    /// positions `0..L`, with the block-diffusion attention of `masks`; returns the hidden states
    /// of the noisy half only, `[b·L, hidden]` (pass the rows that need them to
    /// [`TrainModel::logits`]).
    pub fn dlm_hidden(&self, ids: &Tensor, masks: &DlmMasks) -> Result<Tensor> {
        let (b, t2) = ids.dims2()?;
        let l = masks.l;
        if t2 != 2 * l {
            return Err(TrainError::Config(format!(
                "[noisy | clean] input of {t2} tokens for windows of {l}"
            )));
        }
        let positions: Vec<u32> = (0..l as u32).chain(0..l as u32).collect();
        let h = self.hidden(ids, &positions, Attn::BlockDiffusion(masks))?;
        let hd = h.dim(1)?;
        Ok(h.reshape((b, t2, hd))?
            .narrow(1, 0, l)?
            .reshape((b * l, hd))?)
    }

    /// Every parameter's current value by name (f32), for export and checkpoints.
    pub fn named_tensors(&self) -> HashMap<String, Tensor> {
        self.params()
            .into_iter()
            .map(|(n, v)| (n, v.as_detached_tensor()))
            .collect()
    }

    /// Overwrites every parameter from `tensors` (by name); each must be present with the same shape.
    pub fn set_from(&self, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
        for (name, var) in self.params() {
            let t = tensors.get(&name).ok_or_else(|| {
                TrainError::checkpoint(path, format!("tensor `{name}` is missing"))
            })?;
            if t.dims() != var.dims() {
                return Err(TrainError::checkpoint(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}, the model has {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        Ok(())
    }
}

/// How the tokens of a forward attend to each other.
#[derive(Clone, Copy, Debug)]
pub enum Attn<'a> {
    /// An additive mask `[t, t]` on every head's scores (0 = visible, −∞ = hidden).
    Mask(&'a Tensor),
    /// The Fast-dLLM v2 training layout `[noisy | clean]` (`recipe::block_diff_allowed`),
    /// computed blockwise without the `2L × 2L` score matrix, of which three quarters are masked.
    BlockDiffusion(&'a DlmMasks),
}

/// The `L × L` masks the blockwise block-diffusion attention needs.
#[derive(Clone, Debug)]
pub struct DlmMasks {
    /// Window length `L`.
    pub l: usize,
    /// Block size.
    pub bd: usize,
    /// Clean → clean: key block ≤ query block.
    clean: Tensor,
    /// Noisy → clean: key block < query block.
    earlier: Tensor,
}

impl DlmMasks {
    /// The masks for windows of `l` tokens in blocks of `bd` (`l` a positive multiple of `bd`).
    pub fn new(l: usize, bd: usize, device: &Device) -> Result<DlmMasks> {
        if bd == 0 || l == 0 || !l.is_multiple_of(bd) {
            return Err(TrainError::Config(format!(
                "windows of {l} tokens are not whole blocks of {bd}"
            )));
        }
        let mask = |allow: fn(usize, usize) -> bool| -> Result<Tensor> {
            let v: Vec<f32> = (0..l * l)
                .map(|i| {
                    if allow((i / l) / bd, (i % l) / bd) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            Ok(Tensor::from_vec(v, (l, l), device)?)
        };
        Ok(DlmMasks {
            l,
            bd,
            clean: mask(|q, k| k <= q)?,
            earlier: mask(|q, k| k < q)?,
        })
    }
}

/// Attention of pre-scaled `q` over `k`, `v` (all `[b, heads, t, d]`) → `[b, heads, t, d]`.
///
/// For [`Attn::BlockDiffusion`] the clean half is block-causal attention over the clean half;
/// noisy block `j` attends to the clean blocks before it and to itself, one softmax over both
/// parts: `(e₁·V_clean + e₂·V_block) / (Σe₁ + Σe₂)` with a shared row maximum.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, attn: Attn) -> Result<Tensor> {
    let m = match attn {
        Attn::Mask(mask) => {
            let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
            return Ok(softmax_last(&scores)?.matmul(v)?);
        }
        Attn::BlockDiffusion(m) => m,
    };
    let (b, h, _, d) = q.dims4()?;
    let (l, bd) = (m.l, m.bd);
    let nb = l / bd;
    let half =
        |x: &Tensor, i: usize| -> Result<Tensor> { Ok(x.narrow(2, i * l, l)?.contiguous()?) };
    let (qn, qc) = (half(q, 0)?, half(q, 1)?);
    let (kn, kc) = (half(k, 0)?, half(k, 1)?);
    let (vn, vc) = (half(v, 0)?, half(v, 1)?);
    let kc_t = kc.t()?;

    let oc = softmax_last(&qc.matmul(&kc_t)?.broadcast_add(&m.clean)?)?.matmul(&vc)?;

    let s1 = qn.matmul(&kc_t)?.broadcast_add(&m.earlier)?;
    let blocks = |x: &Tensor| x.reshape((b, h * nb, bd, d));
    let vb = blocks(&vn)?;
    let s2 = blocks(&qn)?.matmul(&blocks(&kn)?.t()?)?;
    let max = s1
        .max_keepdim(D::Minus1)?
        .maximum(&s2.max_keepdim(D::Minus1)?.reshape((b, h, l, 1))?)?
        .detach();
    let e1 = s1.broadcast_sub(&max)?.exp()?;
    let e2 = s2.broadcast_sub(&max.reshape((b, h * nb, bd, 1))?)?.exp()?;
    let denom = (e1.sum_keepdim(D::Minus1)? + e2.sum_keepdim(D::Minus1)?.reshape((b, h, l, 1))?)?;
    let on = (e1.matmul(&vc)? + e2.matmul(&vb)?.reshape((b, h, l, d))?)?.broadcast_div(&denom)?;
    Ok(Tensor::cat(&[&on, &oc], 2)?)
}

/// `q(x)` in the forward pass, identity in the backward pass: `q(x).detach() + (x − x.detach())`.
///
/// `q` is applied on the host to the contiguous rows of `x` (last dimension = `cols`), so the
/// forward values are exactly those of the shared quantization functions.
fn straight_through(x: &Tensor, q: impl Fn(&mut [f32], usize)) -> Result<Tensor> {
    let cols = x.dim(D::Minus1)?;
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    q(&mut v, cols);
    let qx = Tensor::from_vec(v, x.shape(), x.device())?;
    let zero = (x - x.detach())?;
    Ok((qx + zero)?)
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) · w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

/// Softmax over the last dimension (the max is subtracted as a constant).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Rotate-half RoPE of `x: [b, heads, t, d]` with tables `[t, d]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// `[b, kv, t, d]` → `[b, kv·group, t, d]`, query head `h` reading KV head `h / group`.
fn repeat_kv(x: &Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kv, group, t, d))?
        .contiguous()?
        .reshape((b, kv * group, t, d))?)
}

/// The additive causal mask `[t, t]`.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t <= i / t {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    Ok(Tensor::from_vec(v, (t, t), device)?)
}
