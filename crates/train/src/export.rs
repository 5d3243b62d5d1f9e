//! The converted checkpoint directory, exactly as the seed describes it, and its checker.
//!
//! ```text
//! output/<model>/
//! ├── config.json           the source config + bd_size, vocab_size = embedding rows, torch_dtype float32
//! ├── model.safetensors     every weight (f32 masters, Hugging Face names; tied head not repeated)
//! ├── tokenizer.json        the tokenizer with |<MASK>|
//! ├── tokenizer_config.json the source's, with |<MASK>| as an additional special token
//! └── dlm_config.json       {bd_size, mask_token, mask_token_id, training_method: "fast-dllm-v2-sft"}
//! ```
//!
//! The directory is written under a temporary name and renamed into place, so a failed export
//! leaves the previous one (or nothing). Ternary-trained (QAT) checkpoints keep their f32 master
//! weights, as Hugging Face's bf16 BitNet release does: the converter ternarizes every projection
//! with the same absmean function the QAT forward used, so a ternary GGUF (I2_S, TQ1_0, TQ2_0)
//! holds exactly the weights that were trained. (Re-ternarizing already ternary values is not the
//! identity — the scale becomes m·(fraction of non-zeros) — which is why the masters are kept.)
//! A non-BitNet architecture trained ternary converts with `--force-ternary`.
//!
//! [`check_dir`] checks such a directory without loading the weights: the keys of the JSON files
//! agree, the mask id is in the vocabulary and is the mask token, and every tensor's shape fits
//! the config.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::{json, Value as Json};
use tokenizers::Tokenizer;

use crate::error::{Result, TrainError};
use crate::model::{read_config_json, Family, ModelConfig, TrainModel};

/// `training_method` in `dlm_config.json`.
pub const TRAINING_METHOD: &str = "fast-dllm-v2-sft";

/// What [`export`] needs besides the model.
pub struct ExportSpec<'a> {
    /// The source checkpoint directory (its `config.json` and `tokenizer_config.json` are the base).
    pub source: &'a Path,
    /// The tokenizer with the mask token.
    pub tokenizer: &'a Tokenizer,
    /// The mask token's text.
    pub mask_token: &'a str,
    /// The mask token's id.
    pub mask_token_id: u32,
    /// The block size.
    pub bd_size: usize,
}

fn write_json(path: &Path, value: &Json) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| TrainError::json(path, e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| TrainError::io(path, e))
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| TrainError::json(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::io(path, e)),
    }
}

/// The model's weights as they are exported: the f32 masters by Hugging Face name.
pub fn export_tensors(model: &TrainModel) -> HashMap<String, Tensor> {
    model.named_tensors()
}

/// Writes `tensors` as an f32 safetensors file at `path`.
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let cpu: HashMap<&String, Tensor> = tensors
        .iter()
        .map(|(n, t)| Ok((n, t.to_device(&candle_core::Device::Cpu)?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&cpu, path)
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))
}

/// Writes the converted checkpoint directory `out` (see the module docs), replacing a previous
/// export there. An existing `out` that is not a previous export (no `dlm_config.json`) and not
/// empty is refused rather than deleted.
pub fn export(model: &TrainModel, spec: &ExportSpec, out: &Path) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| TrainError::io(out, e))?
            .next()
            .is_none();
        if !empty && !out.join("dlm_config.json").is_file() {
            return Err(TrainError::io(
                out,
                std::io::Error::other(
                    "exists and is not a previous export (no dlm_config.json); choose another output.path",
                ),
            ));
        }
    }
    let tmp = sibling(out, "export-tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;

    let mut config = read_config_json(spec.source)?;
    let obj = config
        .as_object_mut()
        .ok_or_else(|| TrainError::json(&spec.source.join("config.json"), "not a JSON object"))?;
    obj.insert("vocab_size".into(), json!(model.config.vocab));
    obj.insert("bd_size".into(), json!(spec.bd_size));
    obj.insert("torch_dtype".into(), json!("float32"));
    obj.insert("tie_word_embeddings".into(), json!(model.lm_head.is_none()));
    write_json(&tmp.join("config.json"), &config)?;

    save_safetensors(&export_tensors(model), &tmp.join("model.safetensors"))?;

    let tok_path = tmp.join("tokenizer.json");
    let text = spec
        .tokenizer
        .to_string(true)
        .map_err(|e| TrainError::Tokenizer(format!("serialising tokenizer.json: {e}")))?;
    std::fs::write(&tok_path, text).map_err(|e| TrainError::io(&tok_path, e))?;

    let src_tc = spec.source.join("tokenizer_config.json");
    let mut tc = read_json(&src_tc)?.unwrap_or_else(|| json!({}));
    let tco = tc
        .as_object_mut()
        .ok_or_else(|| TrainError::json(&src_tc, "not a JSON object"))?;
    let extra = tco
        .entry("additional_special_tokens")
        .or_insert_with(|| json!([]));
    if let Some(list) = extra.as_array_mut() {
        if !list.iter().any(|v| v.as_str() == Some(spec.mask_token)) {
            list.push(json!(spec.mask_token));
        }
    } else {
        *extra = json!([spec.mask_token]);
    }
    if let Some(decoder) = tco
        .entry("added_tokens_decoder")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        decoder.insert(
            spec.mask_token_id.to_string(),
            json!({"content": spec.mask_token, "lstrip": false, "normalized": false,
                   "rstrip": false, "single_word": false, "special": true}),
        );
    }
    write_json(&tmp.join("tokenizer_config.json"), &tc)?;

    write_json(
        &tmp.join("dlm_config.json"),
        &json!({
            "bd_size": spec.bd_size,
            "mask_token": spec.mask_token,
            "mask_token_id": spec.mask_token_id,
            "training_method": TRAINING_METHOD,
        }),
    )?;
    // Files the tokenizer or chat template may need (chat_template.jinja, vocab files…), copied
    // unless the export wrote its own version.
    for name in [
        "chat_template.jinja",
        "generation_config.json",
        "special_tokens_map.json",
    ] {
        let src = spec.source.join(name);
        if src.is_file() {
            let dst = tmp.join(name);
            std::fs::copy(&src, &dst).map_err(|e| TrainError::io(&dst, e))?;
        }
    }
    replace_dir(&tmp, out)
}

/// `<dir>.<suffix>` beside `dir`.
pub fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

/// Moves the finished directory `tmp` to `dst`, replacing `dst`. The files of `tmp` and the
/// directory itself are fsynced first, so what is renamed into place is complete on the disk.
/// The old `dst` is renamed aside to `<dst>.old` first and removed last: `dst` is the old or the
/// new version, except for the instant between the two renames when it is absent and the old
/// one is at `<dst>.old` (never a mix of both, never a partly written file).
pub fn replace_dir(tmp: &Path, dst: &Path) -> Result<()> {
    sync_tree(tmp)?;
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    let old = sibling(dst, "old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    if dst.exists() {
        std::fs::rename(dst, &old).map_err(|e| TrainError::io(dst, e))?;
    }
    std::fs::rename(tmp, dst).map_err(|e| TrainError::io(dst, e))?;
    crate::checkpoint::sync_dir(parent)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    Ok(())
}

/// Fsyncs every file directly in `dir`, then `dir`.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let p = entry.map_err(|e| TrainError::io(dir, e))?.path();
        if p.is_file() {
            crate::checkpoint::sync_file(&p)?;
        }
    }
    crate::checkpoint::sync_dir(dir)
}

/// What [`check_dir`] found in a valid directory.
#[derive(Clone, Debug)]
pub struct DirSummary {
    /// The model's shapes.
    pub config: ModelConfig,
    /// Block size.
    pub bd_size: usize,
    /// Mask token text.
    pub mask_token: String,
    /// Mask token id.
    pub mask_token_id: u32,
    /// Tokens in the tokenizer (added tokens included).
    pub tokenizer_size: usize,
    /// Tensors checked.
    pub n_tensors: usize,
    /// Parameters in those tensors.
    pub n_params: usize,
}

/// The tensors a model with this config has: (name, shape, required).
pub fn expected_tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>, bool)> {
    let (h, f, hd) = (c.hidden, c.ffn, c.head_dim);
    let (qd, kvd) = (c.heads * hd, c.kv_heads * hd);
    let mut t = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![c.vocab, h],
            true,
        ),
        ("model.norm.weight".to_string(), vec![h], true),
        ("lm_head.weight".to_string(), vec![c.vocab, h], !c.tied),
    ];
    for l in 0..c.layers {
        let p = format!("model.layers.{l}");
        let qwen3 = c.family == Family::Qwen3;
        let bitnet = c.family == Family::BitNet;
        for (n, shape, req) in [
            ("input_layernorm.weight", vec![h], true),
            ("post_attention_layernorm.weight", vec![h], true),
            ("self_attn.q_proj.weight", vec![qd, h], true),
            ("self_attn.k_proj.weight", vec![kvd, h], true),
            ("self_attn.v_proj.weight", vec![kvd, h], true),
            ("self_attn.o_proj.weight", vec![h, qd], true),
            ("self_attn.q_proj.bias", vec![qd], c.family == Family::Qwen2),
            (
                "self_attn.k_proj.bias",
                vec![kvd],
                c.family == Family::Qwen2,
            ),
            (
                "self_attn.v_proj.bias",
                vec![kvd],
                c.family == Family::Qwen2,
            ),
            ("self_attn.o_proj.bias", vec![h], false),
            ("self_attn.q_norm.weight", vec![hd], qwen3),
            ("self_attn.k_norm.weight", vec![hd], qwen3),
            ("self_attn.attn_sub_norm.weight", vec![qd], bitnet),
            ("mlp.gate_proj.weight", vec![f, h], true),
            ("mlp.up_proj.weight", vec![f, h], true),
            ("mlp.down_proj.weight", vec![h, f], true),
            ("mlp.gate_proj.bias", vec![f], false),
            ("mlp.up_proj.bias", vec![f], false),
            ("mlp.down_proj.bias", vec![h], false),
            ("mlp.ffn_sub_norm.weight", vec![f], bitnet),
        ] {
            t.push((format!("{p}.{n}"), shape, req));
        }
    }
    t
}

/// Checks a converted directory (see the module docs); every error names the file and key or
/// tensor at fault.
pub fn check_dir(dir: &Path) -> Result<DirSummary> {
    let cfg_path = dir.join("config.json");
    let cfg_json = read_config_json(dir)?;
    let config = ModelConfig::from_json(&cfg_json, &cfg_path)?;
    let dlm_path = dir.join("dlm_config.json");
    let dlm = read_json(&dlm_path)?
        .ok_or_else(|| TrainError::json(&dlm_path, "missing: not a block-diffusion checkpoint"))?;
    let bd_size = dlm
        .get("bd_size")
        .and_then(Json::as_u64)
        .filter(|b| *b > 0)
        .ok_or_else(|| TrainError::json(&dlm_path, "`bd_size` must be a positive integer"))?
        as usize;
    let mask_token = dlm
        .get("mask_token")
        .and_then(Json::as_str)
        .ok_or_else(|| TrainError::json(&dlm_path, "`mask_token` must be a string"))?
        .to_string();
    let mask_token_id = dlm
        .get("mask_token_id")
        .and_then(Json::as_u64)
        .filter(|i| *i < u32::MAX as u64)
        .ok_or_else(|| TrainError::json(&dlm_path, "`mask_token_id` must be a token id"))?
        as u32;
    match dlm.get("training_method").and_then(Json::as_str) {
        Some(TRAINING_METHOD) => {}
        other => {
            return Err(TrainError::json(
                &dlm_path,
                format!("`training_method` is {other:?}, expected \"{TRAINING_METHOD}\""),
            ))
        }
    }
    match cfg_json.get("bd_size").and_then(Json::as_u64) {
        Some(b) if b as usize == bd_size => {}
        other => {
            return Err(TrainError::json(
                &cfg_path,
                format!("`bd_size` is {other:?}, dlm_config.json says {bd_size}"),
            ))
        }
    }

    let tok_path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tok_path)
        .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    let tokenizer_size = tokenizer.get_vocab_size(true);
    match tokenizer.id_to_token(mask_token_id) {
        Some(t) if t == mask_token => {}
        Some(t) => {
            return Err(TrainError::json(
                &dlm_path,
                format!("`mask_token_id` {mask_token_id} is `{t}` in tokenizer.json, not the mask token `{mask_token}`"),
            ))
        }
        None => {
            return Err(TrainError::json(
                &dlm_path,
                format!("`mask_token_id` {mask_token_id} is not in tokenizer.json ({tokenizer_size} tokens)"),
            ))
        }
    }
    if tokenizer.token_to_id(&mask_token) != Some(mask_token_id) {
        return Err(TrainError::json(
            &tok_path,
            format!(
                "`{mask_token}` has id {:?}, dlm_config.json says {mask_token_id}",
                tokenizer.token_to_id(&mask_token)
            ),
        ));
    }
    if (mask_token_id as usize) >= config.vocab {
        return Err(TrainError::json(
            &cfg_path,
            format!(
                "`vocab_size` {} has no row for mask_token_id {mask_token_id}",
                config.vocab
            ),
        ));
    }
    if tokenizer_size > config.vocab {
        return Err(TrainError::json(
            &cfg_path,
            format!(
                "`vocab_size` {} is smaller than the tokenizer's {tokenizer_size} tokens",
                config.vocab
            ),
        ));
    }
    let tc_path = dir.join("tokenizer_config.json");
    let tc = read_json(&tc_path)?.ok_or_else(|| TrainError::json(&tc_path, "missing"))?;
    let listed = tc
        .get("additional_special_tokens")
        .and_then(Json::as_array)
        .is_some_and(|l| {
            l.iter().any(|v| {
                v.as_str() == Some(&mask_token)
                    || v.get("content").and_then(Json::as_str) == Some(&mask_token)
            })
        });
    if !listed {
        return Err(TrainError::json(
            &tc_path,
            format!("`additional_special_tokens` does not list the mask token `{mask_token}`"),
        ));
    }

    let (n_tensors, n_params) = check_tensor_shapes(dir, &config)?;
    Ok(DirSummary {
        config,
        bd_size,
        mask_token,
        mask_token_id,
        tokenizer_size,
        n_tensors,
        n_params,
    })
}

/// Compares the safetensors headers with [`expected_tensors`]: returns (tensors, parameters).
fn check_tensor_shapes(dir: &Path, config: &ModelConfig) -> Result<(usize, usize)> {
    let path = dir.join("model.safetensors");
    let st = crate::model::open_safetensors(dir)?.0;
    let mut have: BTreeMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    let mut n_params = 0;
    let mut n_tensors = 0;
    for (name, shape, required) in expected_tensors(config) {
        match have.remove(&name) {
            Some(s) if s == shape => {
                n_params += s.iter().product::<usize>();
                n_tensors += 1;
            }
            Some(s) => {
                return Err(TrainError::checkpoint(
                    &path,
                    format!("tensor `{name}` has shape {s:?}, config.json implies {shape:?}"),
                ))
            }
            None if required => {
                return Err(TrainError::checkpoint(
                    &path,
                    format!("tensor `{name}` is missing"),
                ))
            }
            None => {}
        }
    }
    have.retain(|n, _| !n.ends_with("rotary_emb.inv_freq"));
    if let Some(name) = have.keys().next() {
        return Err(TrainError::checkpoint(
            &path,
            format!(
                "tensor `{name}` is not part of a {:?} model with this config",
                config.family
            ),
        ));
    }
    Ok((n_tensors, n_params))
}
