//! Tiny random Hugging Face checkpoints, written with fixed seeds, for tests and demos.
//!
//! Each [`TinySpec`] writes a complete checkpoint directory exactly as `transformers` would save it
//! (`config.json`, `model.safetensors` or shards + index, `tokenizer.json`, `tokenizer_config.json`
//! with a chat template, `generation_config.json`, and for block-diffusion models `dlm_config.json`
//! and a `|<MASK>|` token), so the converter and everything after it can be tested end to end
//! without downloading a model.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value as Json};

/// Which architecture the tiny checkpoint imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TinyFamily {
    /// `LlamaForCausalLM` with a SentencePiece-style byte-fallback vocabulary.
    Llama,
    /// `Qwen2ForCausalLM` (q/k/v biases) with a byte-level BPE vocabulary.
    Qwen2,
    /// `Qwen3ForCausalLM` (q/k norms) with a byte-level BPE vocabulary.
    Qwen3,
    /// `BitNetForCausalLM` (b1.58: sub-norms, relu², tied embeddings).
    BitNet,
}

/// Storage dtype of the checkpoint's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TinyDtype {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
}

/// Shape and options of a tiny checkpoint.
#[derive(Clone, Debug)]
pub struct TinySpec {
    /// Architecture.
    pub family: TinyFamily,
    /// Model width.
    pub hidden: usize,
    /// FFN width.
    pub ffn: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Embedding rows (at least the tokenizer's size).
    pub vocab_size: usize,
    /// Make it a block-diffusion checkpoint with this `bd_size` (adds `|<MASK>|` and `dlm_config.json`).
    pub dlm_block_size: Option<u32>,
    /// Tensor dtype.
    pub dtype: TinyDtype,
    /// Number of safetensors shards (1 = a single `model.safetensors`).
    pub shards: usize,
    /// BitNet only: store projections offline-packed (U8 + `weight_scale`), as Microsoft's HF release does.
    pub packed_ternary: bool,
    /// Tie the LM head to the embedding.
    pub tied: bool,
    /// Multiplies the final norm's weights, scaling every logit: > 1 makes the output
    /// distribution peaked, so block-diffusion thresholds matter in tests.
    pub logit_scale: f32,
    /// RNG seed.
    pub seed: u64,
}

impl TinySpec {
    /// Defaults: width 256, FFN 512, 2 layers, 4 heads, 2 KV heads, 384 embedding rows — dims
    /// that every ternary format can encode.
    pub fn new(family: TinyFamily) -> TinySpec {
        TinySpec {
            family,
            hidden: 256,
            ffn: 512,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab_size: 384,
            dlm_block_size: None,
            dtype: TinyDtype::F32,
            shards: 1,
            packed_ternary: false,
            tied: matches!(family, TinyFamily::BitNet | TinyFamily::Qwen3),
            logit_scale: 1.0,
            seed: 42,
        }
    }

    /// The Hugging Face class name written to `config.json`.
    pub fn hf_class(&self) -> &'static str {
        match self.family {
            TinyFamily::Llama => "LlamaForCausalLM",
            TinyFamily::Qwen2 => "Qwen2ForCausalLM",
            TinyFamily::Qwen3 => "Qwen3ForCausalLM",
            TinyFamily::BitNet => "BitNetForCausalLM",
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Writes the checkpoint to `dir/ckpt` and converts it to `dir/model.gguf` with `outtype`
    /// (the usual start of a test that needs a small model file); returns the GGUF path.
    pub fn write_gguf(
        &self,
        dir: &Path,
        outtype: crate::OutType,
    ) -> crate::Result<std::path::PathBuf> {
        let ckpt = dir.join("ckpt");
        self.write(&ckpt)
            .map_err(|source| crate::ConvertError::Io {
                path: ckpt.clone(),
                source,
            })?;
        let gguf = dir.join("model.gguf");
        crate::convert(&crate::ConvertOptions {
            input: ckpt,
            output: Some(gguf.clone()),
            outtype,
            target: None,
            force_ternary: false,
            add_mask_token: false,
            name: None,
            progress: false,
            head_types: Default::default(),
        })?;
        Ok(gguf)
    }

    /// Writes the checkpoint directory (created if missing).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tokenizer = match self.family {
            TinyFamily::Llama => spm_tokenizer(self.dlm_block_size.is_some()),
            _ => byte_level_tokenizer(self.dlm_block_size.is_some()),
        };
        let n_tokens = tokenizer.n_tokens;
        if n_tokens > self.vocab_size {
            return Err(io::Error::other(format!(
                "vocab_size {} < {n_tokens} tokens",
                self.vocab_size
            )));
        }
        write_json(&dir.join("tokenizer.json"), &tokenizer.json)?;
        write_json(&dir.join("tokenizer_config.json"), &tokenizer.config)?;
        write_json(&dir.join("config.json"), &self.config_json(&tokenizer))?;
        write_json(
            &dir.join("generation_config.json"),
            &json!({"bos_token_id": tokenizer.bos, "eos_token_id": tokenizer.eos}),
        )?;
        if let (Some(bd), Some(mask)) = (self.dlm_block_size, tokenizer.mask) {
            write_json(
                &dir.join("dlm_config.json"),
                &json!({"bd_size": bd, "mask_token": "|<MASK>|", "mask_token_id": mask, "training_method": "fast-dllm-v2-sft"}),
            )?;
        }
        self.write_weights(dir)
    }

    fn config_json(&self, tok: &TinyTokenizer) -> Json {
        let mut c = json!({
            "architectures": [self.hf_class()],
            "model_type": match self.family { TinyFamily::Llama => "llama", TinyFamily::Qwen2 => "qwen2", TinyFamily::Qwen3 => "qwen3", TinyFamily::BitNet => "bitnet" },
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim(),
            "hidden_act": if self.family == TinyFamily::BitNet { "relu2" } else { "silu" },
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-5,
            "rope_theta": if self.family == TinyFamily::BitNet { 500000.0 } else { 10000.0 },
            "tie_word_embeddings": self.tied,
            "bos_token_id": tok.bos,
            "eos_token_id": tok.eos,
            "torch_dtype": match self.dtype { TinyDtype::F32 => "float32", TinyDtype::F16 => "float16", TinyDtype::BF16 => "bfloat16" },
        });
        if let Some(bd) = self.dlm_block_size {
            c["bd_size"] = json!(bd);
        }
        if self.packed_ternary {
            c["quantization_config"] = json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"});
        }
        c
    }

    /// Every tensor as (name, PyTorch shape, values).
    fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut t = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, rng: &mut ChaCha8Rng, kind: Init| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| match kind {
                    Init::Weight => rng.random_range(-0.12f32..0.12),
                    Init::Norm => rng.random_range(0.8f32..1.2),
                    Init::Bias => rng.random_range(-0.05f32..0.05),
                })
                .collect();
            t.push((name, shape, values));
        };
        let (h, f, hd) = (self.hidden, self.ffn, self.head_dim());
        let (qd, kvd) = (self.heads * hd, self.kv_heads * hd);
        add(
            "model.embed_tokens.weight".into(),
            vec![self.vocab_size, h],
            &mut rng,
            Init::Weight,
        );
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            add(
                format!("{p}.input_layernorm.weight"),
                vec![h],
                &mut rng,
                Init::Norm,
            );
            add(
                format!("{p}.self_attn.q_proj.weight"),
                vec![qd, h],
                &mut rng,
                Init::Weight,
            );
            add(
                format!("{p}.self_attn.k_proj.weight"),
                vec![kvd, h],
                &mut rng,
                Init::Weight,
            );
            add(
                format!("{p}.self_attn.v_proj.weight"),
                vec![kvd, h],
                &mut rng,
                Init::Weight,
            );
            add(
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, qd],
                &mut rng,
                Init::Weight,
            );
            if self.family == TinyFamily::Qwen2 {
                add(
                    format!("{p}.self_attn.q_proj.bias"),
                    vec![qd],
                    &mut rng,
                    Init::Bias,
                );
                add(
                    format!("{p}.self_attn.k_proj.bias"),
                    vec![kvd],
                    &mut rng,
                    Init::Bias,
                );
                add(
                    format!("{p}.self_attn.v_proj.bias"),
                    vec![kvd],
                    &mut rng,
                    Init::Bias,
                );
            }
            if self.family == TinyFamily::Qwen3 {
                add(
                    format!("{p}.self_attn.q_norm.weight"),
                    vec![hd],
                    &mut rng,
                    Init::Norm,
                );
                add(
                    format!("{p}.self_attn.k_norm.weight"),
                    vec![hd],
                    &mut rng,
                    Init::Norm,
                );
            }
            if self.family == TinyFamily::BitNet {
                add(
                    format!("{p}.self_attn.attn_sub_norm.weight"),
                    vec![qd],
                    &mut rng,
                    Init::Norm,
                );
                add(
                    format!("{p}.mlp.ffn_sub_norm.weight"),
                    vec![f],
                    &mut rng,
                    Init::Norm,
                );
            }
            add(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                &mut rng,
                Init::Norm,
            );
            add(
                format!("{p}.mlp.gate_proj.weight"),
                vec![f, h],
                &mut rng,
                Init::Weight,
            );
            add(
                format!("{p}.mlp.up_proj.weight"),
                vec![f, h],
                &mut rng,
                Init::Weight,
            );
            add(
                format!("{p}.mlp.down_proj.weight"),
                vec![h, f],
                &mut rng,
                Init::Weight,
            );
        }
        add("model.norm.weight".into(), vec![h], &mut rng, Init::Norm);
        if !self.tied {
            add(
                "lm_head.weight".into(),
                vec![self.vocab_size, h],
                &mut rng,
                Init::Weight,
            );
        }
        if let Some((_, _, norm)) = t.iter_mut().find(|(n, ..)| n == "model.norm.weight") {
            norm.iter_mut().for_each(|w| *w *= self.logit_scale);
        }
        t
    }

    fn write_weights(&self, dir: &Path) -> io::Result<()> {
        // (name, dtype, shape, bytes)
        let mut stored: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, shape, values) in self.tensors() {
            let is_proj = [
                "q_proj.weight",
                "k_proj.weight",
                "v_proj.weight",
                "o_proj.weight",
                "gate_proj.weight",
                "up_proj.weight",
                "down_proj.weight",
            ]
            .iter()
            .any(|s| name.ends_with(s));
            if self.packed_ternary && self.family == TinyFamily::BitNet && is_proj {
                let (packed, scale) = pack_bitnet(&values, shape[0], shape[1]);
                stored.push((
                    name.clone(),
                    Dtype::U8,
                    vec![shape[0] / 4, shape[1]],
                    packed,
                ));
                let scale_bytes = half::bf16::from_f32(scale).to_bits().to_le_bytes().to_vec();
                stored.push((format!("{name}_scale"), Dtype::BF16, vec![1], scale_bytes));
                continue;
            }
            let (dtype, bytes) = match self.dtype {
                TinyDtype::F32 => (
                    Dtype::F32,
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                TinyDtype::F16 => (
                    Dtype::F16,
                    values
                        .iter()
                        .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
                        .collect(),
                ),
                TinyDtype::BF16 => (
                    Dtype::BF16,
                    values
                        .iter()
                        .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
                        .collect(),
                ),
            };
            stored.push((name, dtype, shape, bytes));
        }
        let shards = self.shards.max(1);
        let per_shard = stored.len().div_ceil(shards);
        let mut weight_map = BTreeMap::new();
        for (i, chunk) in stored.chunks(per_shard).enumerate() {
            let file = if shards == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{:05}.safetensors", i + 1, shards)
            };
            let views: Vec<(String, TensorView)> = chunk
                .iter()
                .map(|(n, d, s, b)| {
                    TensorView::new(*d, s.clone(), b)
                        .map(|v| (n.clone(), v))
                        .map_err(io::Error::other)
                })
                .collect::<io::Result<_>>()?;
            safetensors::serialize_to_file(views, None, &dir.join(&file))
                .map_err(io::Error::other)?;
            for (n, ..) in chunk {
                weight_map.insert(n.clone(), file.clone());
            }
        }
        if shards > 1 {
            write_json(
                &dir.join("model.safetensors.index.json"),
                &json!({"metadata": {}, "weight_map": weight_map}),
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Init {
    Weight,
    Norm,
    Bias,
}

/// Ternarizes `w` ([rows, cols]) with the absmean rule and packs it like Microsoft's offline HF
/// checkpoints: packed row r holds rows r, r+R, r+2R, r+3R in bits 1:0, 3:2, 5:4, 7:6 as code = t+1.
fn pack_bitnet(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, f32) {
    // HF WeightQuant: s = 1 / max(mean|W|, 1e-5); W_t = clamp(round(W * s), -1, 1).
    let mean = (w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len() as f64) as f32;
    let s = 1.0 / mean.max(1e-5);
    let r4 = rows / 4;
    let mut packed = vec![0u8; r4 * cols];
    for r in 0..r4 {
        for c in 0..cols {
            let mut byte = 0u8;
            for k in 0..4 {
                let t = (w[(r + k * r4) * cols + c] * s)
                    .round_ties_even()
                    .clamp(-1.0, 1.0) as i32;
                byte |= ((t + 1) as u8) << (2 * k);
            }
            packed[r * cols + c] = byte;
        }
    }
    (packed, 1.0 / s)
}

struct TinyTokenizer {
    json: Json,
    config: Json,
    n_tokens: usize,
    bos: u32,
    eos: u32,
    mask: Option<u32>,
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
const WORDS: &[&str] = &[
    "the", "and", "was", "she", "he", "to", "day", "cat", "dog", "happy", "said", "play", "once",
    "upon", "time",
];

fn added(id: usize, content: &str) -> Json {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
}

/// BPE merges that build each word of [`WORDS`] (with the word-start marker `start`) left to right.
fn merges_for(start: &str, vocab: &mut Vec<String>) -> Vec<[String; 2]> {
    let mut merges = Vec::new();
    for w in WORDS {
        let chars: Vec<String> = std::iter::once(start.to_string())
            .chain(w.chars().map(String::from))
            .collect();
        let mut acc = chars[0].clone();
        for c in &chars[1..] {
            let merged = format!("{acc}{c}");
            if !vocab.contains(&merged) {
                merges.push([acc.clone(), c.clone()]);
                vocab.push(merged.clone());
            }
            acc = merged;
        }
    }
    merges
}

/// A SentencePiece-style BPE tokenizer (byte fallback, `▁` word marker), like Llama 2 / TinyStories.
fn spm_tokenizer(with_mask: bool) -> TinyTokenizer {
    let mut vocab: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    vocab.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    vocab.push("▁".into());
    vocab.extend(('a'..='z').map(String::from));
    let merges = merges_for("▁", &mut vocab);
    let mut added_tokens = vec![added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")];
    let mask = with_mask.then(|| {
        vocab.push("|<MASK>|".into());
        added_tokens.push(added(vocab.len() - 1, "|<MASK>|"));
        (vocab.len() - 1) as u32
    });
    let vocab_map: serde_json::Map<String, Json> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let json = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false, "vocab": vocab_map, "merges": merges},
    });
    let config = json!({"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                        "pad_token": null, "tokenizer_class": "LlamaTokenizerFast", "model_max_length": 512});
    TinyTokenizer {
        json,
        config,
        n_tokens: vocab.len(),
        bos: 1,
        eos: 2,
        mask,
    }
}

/// GPT-2's byte → printable character table (bytes_to_unicode).
fn byte_to_char(b: u8) -> char {
    let printable =
        |c: u32| (33..=126).contains(&c) || (161..=172).contains(&c) || (174..=255).contains(&c);
    if printable(b as u32) {
        return char::from(b);
    }
    let n = (0..b as u32).filter(|c| !printable(*c)).count() as u32;
    char::from_u32(256 + n).unwrap_or('?')
}

/// A byte-level BPE tokenizer with the Qwen2 pre-tokenizer and ChatML specials.
fn byte_level_tokenizer(with_mask: bool) -> TinyTokenizer {
    let mut vocab: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    let merges = merges_for(&byte_to_char(b' ').to_string(), &mut vocab);
    let mut specials = vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    if with_mask {
        specials.push("|<MASK>|");
    }
    let base = vocab.len();
    let added_tokens: Vec<Json> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| added(base + i, s))
        .collect();
    let vocab_map: serde_json::Map<String, Json> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let regex = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let json = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false}, byte_level]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab_map, "merges": merges},
    });
    let config = json!({"add_bos_token": false, "bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                        "tokenizer_class": "Qwen2Tokenizer", "chat_template": CHATML, "model_max_length": 512});
    let id = |s: &str| (base + specials.iter().position(|x| *x == s).unwrap_or(0)) as u32;
    TinyTokenizer {
        json,
        config,
        n_tokens: base + specials.len(),
        bos: id("<|endoftext|>"),
        eos: id("<|im_end|>"),
        mask: with_mask.then(|| id("|<MASK>|")),
    }
}

fn write_json(path: &Path, value: &Json) -> io::Result<()> {
    std::fs::write(
        path,
        serde_json::to_vec_pretty(value).map_err(io::Error::other)?,
    )
}
