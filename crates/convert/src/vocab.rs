//! The tokenizer side of a checkpoint → GGUF tokenizer metadata, as llama.cpp writes it, plus the
//! verbatim `tokenizer.json` (key `tokenizer.huggingface.json`) so our own loader is exact, the chat
//! template, and the block-diffusion keys (mask token, block size).

use std::collections::HashMap;
use std::path::Path;

use gguf::{Value, ValueType};
use serde_json::{json, Value as Json};

use crate::checkpoint::{read_json_opt, JsonConfig};
use crate::error::{ConvertError, Result};

/// GGUF metadata key holding the block-diffusion block size (Fast-dLLM v2 `bd_size`).
pub const KEY_BLOCK_SIZE: &str = "dlm.block_size";
/// GGUF metadata key holding the mask token id.
pub const KEY_MASK_TOKEN_ID: &str = "tokenizer.ggml.mask_token_id";
/// GGUF metadata key saying that position `j` is predicted by the logits of position `j-1`.
pub const KEY_SHIFT_LOGITS: &str = "diffusion.shift_logits";
/// GGUF metadata key holding every end-of-generation token id from `generation_config.json`.
pub const KEY_EOG_IDS: &str = "dlm.eog_token_ids";
/// GGUF metadata key holding the verbatim Hugging Face `tokenizer.json`.
pub const KEY_HF_JSON: &str = "tokenizer.huggingface.json";

/// Spellings of the mask token used by real block-diffusion checkpoints (Fast-dLLM v2, Dream, LLaDA).
pub const MASK_SPELLINGS: &[&str] = &["|<MASK>|", "<|mask|>", "<|mdm_mask|>"];

/// llama.cpp token types (`tokenizer.ggml.token_type`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// Known pre-tokenizer regexes → llama.cpp `tokenizer.ggml.pre` names.
const PRE_REGEXES: &[(&str, &str)] = &[
    (
        "llama-bpe",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    (
        "qwen2",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
];

/// The pre-tokenizer regex of Qwen2's byte-level BPE, used when only `vocab.json` + `merges.txt` exist.
const QWEN2_REGEX: &str = PRE_REGEXES[1].1;

/// Tokenizer-derived facts and the GGUF keys to write.
#[derive(Debug)]
pub struct Vocab {
    /// Keys in the order they are written.
    pub metadata: Vec<(String, Value)>,
    /// Number of tokens the tokenizer defines (may be below the embedding rows).
    pub n_tokens: usize,
    /// The mask token id, when the checkpoint is a block-diffusion model.
    pub mask_token_id: Option<u32>,
    /// The block size, when known.
    pub block_size: Option<u32>,
}

fn tok_err(msg: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer(msg.into())
}

/// A special token in `tokenizer_config.json` may be a string or an AddedToken object.
fn token_content(v: &Json) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Json::as_str))
}

/// Reads the tokenizer of `dir` and builds the GGUF tokenizer metadata for an embedding table of
/// `vocab_size` rows. `config` is `config.json` (fallback special-token ids and `bd_size`).
/// With `append_mask`, a `|<MASK>|` special token is added at id `vocab_size - 1` (the caller
/// grew the embedding by one row for it) and written into the embedded `tokenizer.json` too.
pub fn load(
    dir: &Path,
    vocab_size: usize,
    config: &JsonConfig,
    append_mask: bool,
) -> Result<Vocab> {
    let tok_config =
        read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or_else(|| json!({}));
    let tokenizer_json = match std::fs::read_to_string(dir.join("tokenizer.json")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            synthesize_tokenizer_json(dir, &tok_config)?
        }
        Err(source) => {
            return Err(ConvertError::Io {
                path: dir.join("tokenizer.json"),
                source,
            })
        }
    };
    let mut tj: Json =
        serde_json::from_str(&tokenizer_json).map_err(|source| ConvertError::Json {
            path: dir.join("tokenizer.json"),
            source,
        })?;
    let tokenizer_json = if append_mask {
        let id = vocab_size - 1;
        let added = tj
            .get_mut("added_tokens")
            .and_then(Json::as_array_mut)
            .ok_or_else(|| {
                tok_err("tokenizer.json has no `added_tokens` list to add |<MASK>| to")
            })?;
        added.push(
            json!({"id": id, "content": MASK_SPELLINGS[0], "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}),
        );
        tj.to_string()
    } else {
        tokenizer_json
    };
    let model = tj
        .get("model")
        .ok_or_else(|| tok_err("tokenizer.json has no `model`"))?;
    let model_type = model.get("type").and_then(Json::as_str).unwrap_or("BPE");

    // id → (text, score) for the base vocabulary.
    let mut pieces: HashMap<u32, (String, f32)> = HashMap::new();
    let mut merges: Vec<String> = Vec::new();
    match model_type {
        "BPE" => {
            let vocab = model
                .get("vocab")
                .and_then(Json::as_object)
                .ok_or_else(|| tok_err("BPE model without `vocab`"))?;
            for (text, id) in vocab {
                let id = id
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| tok_err(format!("token `{text}` has a non-integer id")))?;
                pieces.insert(id, (text.clone(), 0.0));
            }
            for m in model
                .get("merges")
                .and_then(Json::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let merge = match m {
                    Json::String(s) => s.clone(),
                    Json::Array(pair) if pair.len() == 2 => {
                        let a = pair[0].as_str().unwrap_or_default();
                        let b = pair[1].as_str().unwrap_or_default();
                        format!("{a} {b}")
                    }
                    _ => {
                        return Err(tok_err(
                            "tokenizer.json: a merge is neither \"a b\" nor [\"a\", \"b\"]",
                        ))
                    }
                };
                merges.push(merge);
            }
        }
        "Unigram" => {
            let vocab = model
                .get("vocab")
                .and_then(Json::as_array)
                .ok_or_else(|| tok_err("Unigram model without `vocab`"))?;
            for (id, entry) in vocab.iter().enumerate() {
                let text = entry
                    .get(0)
                    .and_then(Json::as_str)
                    .ok_or_else(|| tok_err(format!("Unigram entry {id} has no text")))?;
                let score = entry.get(1).and_then(Json::as_f64).unwrap_or(0.0) as f32;
                pieces.insert(id as u32, (text.to_string(), score));
            }
        }
        other => {
            return Err(tok_err(format!(
                "tokenizer model type `{other}` is not supported (BPE and Unigram are)"
            )))
        }
    }

    // Added tokens (special or not) override / extend the base vocabulary.
    let mut added: HashMap<u32, bool> = HashMap::new();
    for t in tj
        .get("added_tokens")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let id = t
            .get("id")
            .and_then(Json::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| tok_err("added token without an integer `id`"))?;
        let content = t
            .get("content")
            .and_then(Json::as_str)
            .ok_or_else(|| tok_err(format!("added token {id} without `content`")))?;
        let special = t.get("special").and_then(Json::as_bool).unwrap_or(false);
        pieces.insert(id, (content.to_string(), 0.0));
        added.insert(id, special);
    }
    let n_tokens = pieces.keys().max().map_or(0, |m| *m as usize + 1);
    if n_tokens > vocab_size {
        return Err(tok_err(format!(
            "the tokenizer defines {n_tokens} tokens but the model's embedding has only {vocab_size} rows (vocab_size); \
             the checkpoint and its tokenizer do not belong together (was a token such as |<MASK>| added without resizing the embeddings?)"
        )));
    }

    // SentencePiece-style vocabularies (byte fallback, ▁ word marker) are llama.cpp's `llama` model.
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let spm = model_type == "Unigram" || byte_fallback;
    if spm && model_type == "BPE" {
        // llama.cpp's SPM tokenizer merges the pair whose result has the highest score, so a
        // score of −rank reproduces BPE's "lowest merge rank first".
        let by_text: HashMap<&str, u32> = pieces
            .iter()
            .map(|(id, (t, _))| (t.as_str(), *id))
            .collect();
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for (rank, m) in merges.iter().enumerate() {
            let merged: String = m.splitn(2, ' ').collect();
            if let Some(id) = by_text.get(merged.as_str()) {
                scores.entry(*id).or_insert(-(rank as f32));
            }
        }
        for (id, (_, score)) in pieces.iter_mut() {
            *score = scores.get(id).copied().unwrap_or(0.0);
        }
    }

    let unk = model
        .get("unk_token")
        .and_then(Json::as_str)
        .map(str::to_string);
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    let mut scores = Vec::with_capacity(vocab_size);
    for id in 0..vocab_size as u32 {
        let Some((text, score)) = pieces.get(&id) else {
            tokens.push(Value::String(format!("[PAD{id}]")));
            types.push(Value::I32(token_type::USER_DEFINED));
            scores.push(Value::F32(-1000.0));
            continue;
        };
        let kind = match added.get(&id) {
            Some(true) => token_type::CONTROL,
            Some(false) if looks_special(text) => token_type::CONTROL,
            Some(false) => token_type::USER_DEFINED,
            None if unk.as_deref() == Some(text.as_str()) => token_type::UNKNOWN,
            None if spm && is_byte_piece(text) => token_type::BYTE,
            None => token_type::NORMAL,
        };
        tokens.push(Value::String(text.clone()));
        types.push(Value::I32(kind));
        scores.push(Value::F32(*score));
    }

    let mut md: Vec<(String, Value)> = Vec::new();
    md.push((
        "tokenizer.ggml.model".into(),
        Value::String(if spm { "llama" } else { "gpt2" }.into()),
    ));
    if !spm {
        md.push((
            "tokenizer.ggml.pre".into(),
            Value::String(detect_pre(&tj).into()),
        ));
    }
    md.push((
        "tokenizer.ggml.tokens".into(),
        Value::Array(ValueType::String, tokens),
    ));
    if spm {
        md.push((
            "tokenizer.ggml.scores".into(),
            Value::Array(ValueType::F32, scores),
        ));
    }
    md.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(ValueType::I32, types),
    ));
    if !spm {
        md.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(
                ValueType::String,
                merges.into_iter().map(Value::String).collect(),
            ),
        ));
    }

    // Special token ids: tokenizer_config.json names them, config.json gives fallback ids.
    let id_of = |text: &str| {
        pieces
            .iter()
            .find(|(_, (t, _))| t == text)
            .map(|(id, _)| *id)
    };
    let specials = [
        ("bos_token", "bos", "bos_token_id"),
        ("eos_token", "eos", "eos_token_id"),
        ("unk_token", "unknown", "unk_token_id"),
        ("pad_token", "padding", "pad_token_id"),
    ];
    for (field, key, config_key) in specials {
        let from_tokenizer = tok_config
            .get(field)
            .and_then(token_content)
            .and_then(id_of)
            .map(u64::from);
        let id = match from_tokenizer {
            Some(id) => Some(id),
            None => config.opt_ids(config_key)?.first().copied(),
        };
        if let Some(id) = id {
            if id >= vocab_size as u64 {
                return Err(tok_err(format!(
                    "{field} id {id} is outside the vocabulary of {vocab_size} tokens"
                )));
            }
            md.push((
                format!("tokenizer.ggml.{key}_token_id"),
                Value::U32(id as u32),
            ));
        }
    }
    let add_bos = match tok_config.get("add_bos_token").and_then(Json::as_bool) {
        Some(b) => b,
        None => post_processor_adds_bos(&tj),
    };
    md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)));
    md.push((
        "tokenizer.ggml.add_eos_token".into(),
        Value::Bool(
            tok_config
                .get("add_eos_token")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        ),
    ));
    if let Some(gen) = read_json_opt(&dir.join("generation_config.json"))? {
        let gen = JsonConfig::new("generation_config.json", gen)?;
        let eog = gen.opt_ids("eos_token_id")?;
        if let Some(bad) = eog.iter().find(|id| **id >= vocab_size as u64) {
            return Err(tok_err(format!("generation_config.json: eos_token_id {bad} is outside the vocabulary of {vocab_size} tokens")));
        }
        if !eog.is_empty() {
            md.push((
                KEY_EOG_IDS.into(),
                Value::Array(
                    ValueType::U32,
                    eog.iter().map(|id| Value::U32(*id as u32)).collect(),
                ),
            ));
        }
    }
    if let Some(template) = chat_template(dir, &tok_config)? {
        md.push(("tokenizer.chat_template".into(), Value::String(template)));
    }
    md.push((KEY_HF_JSON.into(), Value::String(tokenizer_json)));

    // Block diffusion: the mask token and block size, cross-checked between the files.
    let dlm_config = read_json_opt(&dir.join("dlm_config.json"))?
        .map(|v| JsonConfig::new("dlm_config.json", v))
        .transpose()?;
    let mut mask_token_id = None;
    let mut block_size = config.opt_u64("bd_size")?;
    if let Some(dc) = &dlm_config {
        let dc_bd = dc.opt_u64("bd_size")?;
        if let (Some(a), Some(b)) = (dc_bd, block_size) {
            if a != b {
                return Err(ConvertError::config(
                    "dlm_config.json",
                    format!("bd_size {a} disagrees with config.json bd_size {b}"),
                ));
            }
        }
        block_size = block_size.or(dc_bd);
        let text = dc.opt_str("mask_token")?;
        match (dc.opt_u64("mask_token_id")?, text) {
            (Some(id), text) => {
                let actual = pieces.get(&(id as u32)).map(|(t, _)| t.as_str());
                if id >= vocab_size as u64 || actual.is_none() {
                    return Err(ConvertError::config("dlm_config.json", format!("mask_token_id {id} is not a token of the tokenizer ({n_tokens} tokens)")));
                }
                if let (Some(want), Some(have)) = (text, actual) {
                    if want != have {
                        return Err(ConvertError::config(
                            "dlm_config.json",
                            format!("mask_token_id {id} is `{have}` in the tokenizer, but mask_token says `{want}`; training and inference would disagree"),
                        ));
                    }
                }
                mask_token_id = Some(id as u32);
            }
            (None, Some(text)) => {
                mask_token_id = Some(id_of(text).ok_or_else(|| {
                    ConvertError::config(
                        "dlm_config.json",
                        format!("mask_token `{text}` is not in the tokenizer"),
                    )
                })?);
            }
            (None, None) => {}
        }
    }
    if mask_token_id.is_none() {
        mask_token_id = MASK_SPELLINGS.iter().find_map(|s| id_of(s));
    }
    if let Some(id) = mask_token_id {
        md.push((KEY_MASK_TOKEN_ID.into(), Value::U32(id)));
        md.push((KEY_SHIFT_LOGITS.into(), Value::Bool(true)));
    }
    let block_size = block_size
        .map(|b| {
            u32::try_from(b).ok().filter(|b| *b > 0).ok_or_else(|| {
                ConvertError::config(
                    "config.json",
                    format!("bd_size {b} must be a positive 32-bit integer"),
                )
            })
        })
        .transpose()?;
    if let Some(b) = block_size {
        md.push((KEY_BLOCK_SIZE.into(), Value::U32(b)));
    }
    Ok(Vocab {
        metadata: md,
        n_tokens,
        mask_token_id,
        block_size,
    })
}

/// llama.cpp's `does_token_look_special`: `<|…|>`, `<…>` control-looking added tokens.
fn looks_special(text: &str) -> bool {
    (text.starts_with("<|") && text.ends_with("|>"))
        || (text.starts_with('<') && text.ends_with('>') && text.len() > 2 && !text.contains(' '))
}

/// `<0x0A>`-style byte-fallback pieces.
fn is_byte_piece(text: &str) -> bool {
    text.len() == 6
        && text.starts_with("<0x")
        && text.ends_with('>')
        && u8::from_str_radix(&text[3..5], 16).is_ok()
}

/// Whether the post-processor prepends a special token (the tokenizer adds BOS by itself).
fn post_processor_adds_bos(tj: &Json) -> bool {
    tj.get("post_processor")
        .and_then(|p| p.get("single"))
        .and_then(Json::as_array)
        .and_then(|s| s.first())
        .is_some_and(|first| first.get("SpecialToken").is_some())
}

/// Names the pre-tokenizer as llama.cpp does (`tokenizer.ggml.pre`), from the regex it uses.
fn detect_pre(tj: &Json) -> &'static str {
    fn collect<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
        out.push(v);
        if let Some(list) = v.get("pretokenizers").and_then(Json::as_array) {
            for p in list {
                collect(p, out);
            }
        }
    }
    let Some(pre) = tj.get("pre_tokenizer").filter(|p| !p.is_null()) else {
        return "default";
    };
    let mut parts = Vec::new();
    collect(pre, &mut parts);
    for p in &parts {
        if let Some(re) = p
            .get("pattern")
            .and_then(|pat| pat.get("Regex"))
            .and_then(Json::as_str)
        {
            if let Some((name, _)) = PRE_REGEXES.iter().find(|(_, known)| *known == re) {
                return name;
            }
        }
    }
    let kinds: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.get("type").and_then(Json::as_str))
        .collect();
    let individual_digits = parts.iter().any(|p| {
        p.get("type").and_then(Json::as_str) == Some("Digits")
            && p.get("individual_digits").and_then(Json::as_bool) == Some(true)
    });
    if individual_digits && kinds.contains(&"ByteLevel") {
        "smollm"
    } else if kinds == ["ByteLevel"] {
        "gpt-2"
    } else {
        "default"
    }
}

/// The chat template: `chat_template.jinja` if present, else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of named templates of which `default` is taken).
fn chat_template(dir: &Path, tok_config: &Json) -> Result<Option<String>> {
    match std::fs::read_to_string(dir.join("chat_template.jinja")) {
        Ok(t) => return Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConvertError::Io {
                path: dir.join("chat_template.jinja"),
                source,
            })
        }
    }
    Ok(match tok_config.get("chat_template") {
        Some(Json::String(t)) => Some(t.clone()),
        Some(Json::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Json::as_str)
            .map(str::to_string),
        _ => None,
    })
}

/// Builds a `tokenizer.json` for checkpoints that ship only the "slow" Qwen2 files
/// (`vocab.json` + `merges.txt` + added tokens in `tokenizer_config.json`), the same document
/// Hugging Face's `Qwen2Converter` produces.
fn synthesize_tokenizer_json(dir: &Path, tok_config: &Json) -> Result<String> {
    let missing = || ConvertError::MissingFile {
        dir: dir.to_path_buf(),
        what: "tokenizer.json (or vocab.json + merges.txt of a Qwen2 tokenizer)".into(),
    };
    let vocab = read_json_opt(&dir.join("vocab.json"))?.ok_or_else(missing)?;
    let merges_text = std::fs::read_to_string(dir.join("merges.txt")).map_err(|_| missing())?;
    let class = tok_config
        .get("tokenizer_class")
        .and_then(Json::as_str)
        .unwrap_or("");
    if !class.starts_with("Qwen2Tokenizer") {
        return Err(tok_err(format!(
            "no tokenizer.json, and tokenizer_class `{class}` is not Qwen2Tokenizer, the only slow tokenizer this converter can rebuild; save the tokenizer with a recent `transformers` to get tokenizer.json"
        )));
    }
    let merges: Vec<&str> = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .collect();
    let mut added: Vec<(u64, Json)> = Vec::new();
    if let Some(dec) = tok_config
        .get("added_tokens_decoder")
        .and_then(Json::as_object)
    {
        for (id, t) in dec {
            let id: u64 = id
                .parse()
                .map_err(|_| tok_err(format!("added_tokens_decoder key `{id}` is not an id")))?;
            let flag = |k: &str| t.get(k).and_then(Json::as_bool).unwrap_or(false);
            added.push((
                id,
                json!({
                    "id": id,
                    "content": t.get("content").and_then(Json::as_str).ok_or_else(|| tok_err(format!("added token {id} without content")))?,
                    "single_word": flag("single_word"), "lstrip": flag("lstrip"), "rstrip": flag("rstrip"),
                    "normalized": flag("normalized"), "special": flag("special"),
                }),
            ));
        }
    }
    added.sort_by_key(|(id, _)| *id);
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    Ok(doc.to_string())
}
