//! `dlm inspect`: what a GGUF file holds, for people (text) and machines (`--json`).
//! Works on any GGUF (ours, llama.cpp's, bitnet.cpp's): every field is optional.

use std::path::Path;

use gguf::{GgufError, GgufFile};
use serde_json::{json, Value as Json};

/// Builds the JSON description; the text form is rendered from it.
pub fn describe(path: &Path, file: &GgufFile) -> Result<Json, GgufError> {
    let md = &file.metadata;
    let arch = md
        .opt_str("general.architecture")?
        .unwrap_or("unknown")
        .to_string();
    let a = |k: &str| format!("{arch}.{k}");
    let tokens = md.get_str_array("tokenizer.ggml.tokens").ok();
    let embd_rows = file
        .tensor("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied());
    let vocab = md
        .opt_u64(&a("vocab_size"))?
        .or(tokens.as_ref().map(|t| t.len() as u64))
        .or(embd_rows);
    let heads = md.opt_u64(&a("attention.head_count"))?;
    let width = md.opt_u64(&a("embedding_length"))?;
    let head_dim = md
        .opt_u64(&a("attention.key_length"))?
        .or(match (width, heads) {
            (Some(w), Some(h)) if h > 0 => Some(w / h),
            _ => None,
        });

    let mask_id = match md.opt_u32("tokenizer.ggml.mask_token_id")? {
        Some(id) => Some(id),
        None => tokens.as_ref().and_then(|t| {
            t.iter()
                .position(|s| tokenizer::MASK_SPELLINGS.contains(s))
                .map(|p| p as u32)
        }),
    };
    let dlm = match mask_id {
        Some(id) => json!({
            "mask_token_id": id,
            "mask_token": tokens.as_ref().and_then(|t| t.get(id as usize)).copied(),
            "mask_token_in_metadata": md.contains_key("tokenizer.ggml.mask_token_id"),
            "block_size": md.opt_u32("dlm.block_size")?,
            "shift_logits": md.opt_bool("diffusion.shift_logits")?,
        }),
        None => Json::Null,
    };

    let mut tensors = Vec::new();
    let (mut total_bytes, mut n_params) = (0u64, 0u64);
    for t in &file.tensors {
        total_bytes += t.n_bytes;
        n_params += t.n_elements();
        tensors.push(json!({"name": t.name, "type": t.ggml_type.name(), "shape": t.dims, "bytes": t.n_bytes}));
    }
    let template = md.opt_str("tokenizer.chat_template")?;
    // Which template `dlm generate --chat` and the server would use (the file's, or a fallback).
    let template_in_use = match tokenizer::Tokenizer::from_gguf(md) {
        Ok(tok) => match tokenizer::ChatTemplate::from_gguf(md, &tok) {
            Ok(t) => t.source().to_string(),
            Err(e) => format!("unusable: {e}"),
        },
        Err(e) => format!("no tokenizer: {e}"),
    };
    Ok(json!({
        "file": path.display().to_string(),
        "file_bytes": file.file_size(),
        "gguf_version": file.version,
        "alignment": file.alignment,
        "metadata_keys": md.len(),
        "architecture": arch,
        "name": md.opt_str("general.name")?,
        "hparams": {
            "block_count": md.opt_u64(&a("block_count"))?,
            "embedding_length": width,
            "feed_forward_length": md.opt_u64(&a("feed_forward_length"))?,
            "head_count": heads,
            "head_count_kv": md.opt_u64(&a("attention.head_count_kv"))?,
            "head_dim": head_dim,
            "vocab_size": vocab,
            "context_length": md.opt_u64(&a("context_length"))?,
            "rope_freq_base": md.opt_f32(&a("rope.freq_base"))?.map(shortest),
            "rms_norm_eps": md.opt_f32(&a("attention.layer_norm_rms_epsilon"))?.map(shortest),
        },
        "tokenizer": {
            "model": md.opt_str("tokenizer.ggml.model")?,
            "pre": md.opt_str("tokenizer.ggml.pre")?,
            "tokens": tokens.as_ref().map(|t| t.len()),
            "bos_token_id": md.opt_u32("tokenizer.ggml.bos_token_id")?,
            "eos_token_id": md.opt_u32("tokenizer.ggml.eos_token_id")?,
            "add_bos_token": md.opt_bool("tokenizer.ggml.add_bos_token")?,
            "huggingface_json": md.contains_key("tokenizer.huggingface.json"),
            "chat_template_bytes": template.map(str::len),
            "chat_template_in_use": template_in_use,
        },
        "dlm": dlm,
        "tensors": tensors,
        "tensor_bytes": total_bytes,
        "parameters": n_params,
        "bits_per_weight": if n_params > 0 { total_bytes as f64 * 8.0 / n_params as f64 } else { 0.0 },
    }))
}

/// An f32 as the JSON number with the same shortest decimal form (1e-5, not 9.99999974e-6).
fn shortest(x: f32) -> Json {
    x.to_string()
        .parse::<f64>()
        .map(Json::from)
        .unwrap_or(Json::Null)
}

/// Runs the subcommand.
pub fn run(path: &Path, as_json: bool) -> Result<(), GgufError> {
    let file = GgufFile::open(path)?;
    let d = describe(path, &file)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
        return Ok(());
    }
    print!("{}", render_text(&d));
    Ok(())
}

fn field(v: &Json) -> String {
    match v {
        Json::Null => "-".into(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_text(d: &Json) -> String {
    let mut out = String::new();
    let h = &d["hparams"];
    let t = &d["tokenizer"];
    out += &format!(
        "{}: GGUF v{}, {} bytes, {} metadata keys, {} tensors, alignment {}\n",
        field(&d["file"]),
        d["gguf_version"],
        d["file_bytes"],
        d["metadata_keys"],
        d["tensors"].as_array().map_or(0, Vec::len),
        d["alignment"]
    );
    out += &format!(
        "architecture  {} ({})\n",
        field(&d["architecture"]),
        field(&d["name"])
    );
    out += &format!(
        "shape         layers {} | width {} | ffn {} | heads {} (kv {}) | head dim {} | vocab {} | context {}\n",
        field(&h["block_count"]),
        field(&h["embedding_length"]),
        field(&h["feed_forward_length"]),
        field(&h["head_count"]),
        field(&h["head_count_kv"]),
        field(&h["head_dim"]),
        field(&h["vocab_size"]),
        field(&h["context_length"])
    );
    out += &format!(
        "rope / norm   freq base {} | rms eps {}\n",
        field(&h["rope_freq_base"]),
        field(&h["rms_norm_eps"])
    );
    let template = match t["chat_template_bytes"].as_u64() {
        Some(n) => format!("chat template ({n} bytes)"),
        None => format!(
            "no chat template, using the {}",
            field(&t["chat_template_in_use"])
        ),
    };
    out += &format!(
        "tokenizer     {} (pre {}) | {} tokens | bos {} | eos {} | add_bos {} | {}{}\n",
        field(&t["model"]),
        field(&t["pre"]),
        field(&t["tokens"]),
        field(&t["bos_token_id"]),
        field(&t["eos_token_id"]),
        field(&t["add_bos_token"]),
        template,
        if t["huggingface_json"] == Json::Bool(true) {
            " | tokenizer.json embedded"
        } else {
            ""
        }
    );
    let dlm = &d["dlm"];
    if dlm.is_null() {
        out += "dlm           not a DLM (no mask token): autoregressive decoding only\n";
    } else {
        out += &format!(
            "dlm           mask token {} {:?}{} | block size {} | shift logits {}\n",
            dlm["mask_token_id"],
            dlm["mask_token"].as_str().unwrap_or("?"),
            if dlm["mask_token_in_metadata"] == Json::Bool(true) {
                ""
            } else {
                " (found in vocabulary, not in metadata)"
            },
            field(&dlm["block_size"]),
            field(&dlm["shift_logits"])
        );
    }
    out += "\n";
    let tensors = d["tensors"].as_array().cloned().unwrap_or_default();
    let width = tensors
        .iter()
        .filter_map(|t| t["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    out += &format!(
        "{:<width$}  {:<6}  {:<20}  {:>12}\n",
        "name", "type", "shape", "bytes"
    );
    for t in &tensors {
        let shape: Vec<String> = t["shape"]
            .as_array()
            .map(|s| s.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default();
        out += &format!(
            "{:<width$}  {:<6}  {:<20}  {:>12}\n",
            field(&t["name"]),
            field(&t["type"]),
            format!("[{}]", shape.join(", ")),
            t["bytes"].as_u64().unwrap_or(0)
        );
    }
    out += &format!(
        "\ntotal         {} parameters in {} bytes of tensor data = {:.3} bits per weight\n",
        d["parameters"],
        d["tensor_bytes"],
        d["bits_per_weight"].as_f64().unwrap_or(0.0)
    );
    out
}
