//! Tokenizers and chat templates for models served from GGUF files.
//!
//! [`Tokenizer::from_gguf`] loads the tokenizer a GGUF file describes:
//!
//! - when the file has `tokenizer.huggingface.json` (our converter always writes it), that
//!   verbatim Hugging Face `tokenizer.json` is loaded by the `tokenizers` library, so encoding is
//!   exactly Hugging Face's;
//! - otherwise (llama.cpp conversions) the tokenizer is rebuilt from the `tokenizer.ggml.*` keys
//!   (`gpt2` byte-level BPE, with the pre-tokenizer named by `tokenizer.ggml.pre`, or a `llama`
//!   SentencePiece-style vocabulary, rebuilt as a byte-fallback BPE the way Hugging Face's Llama
//!   converter does).
//!
//! The special ids come from the GGUF keys either way (`tokenizer.ggml.bos_token_id`, …,
//! `tokenizer.ggml.mask_token_id`, `dlm.eog_token_ids`). BOS is never added by the Hugging Face
//! post-processor: [`Tokenizer::encode`]'s `add_bos` flag is the single source of truth.
//!
//! [`DecodeStream`] turns generated ids into text piece by piece, and [`ChatTemplate`] renders a
//! conversation with the model's Jinja chat template (or a fallback).

mod error;
mod gguf_vocab;
mod stream;
mod template;

use std::collections::HashSet;

use gguf::Metadata;

pub use error::TokenizerError;
pub use stream::DecodeStream;
pub use template::{ChatMessage, ChatTemplate, TemplateSource, SPECIAL_TOKEN_NAMES};

use error::tk_message;

/// GGUF key of the verbatim Hugging Face `tokenizer.json`.
pub const KEY_HF_JSON: &str = "tokenizer.huggingface.json";
/// GGUF key of the block-diffusion mask token id.
pub const KEY_MASK_TOKEN_ID: &str = "tokenizer.ggml.mask_token_id";
/// GGUF key listing every end-of-generation id of `generation_config.json`.
pub const KEY_EOG_IDS: &str = "dlm.eog_token_ids";

/// Spellings of the mask token in block-diffusion vocabularies (Fast-dLLM v2, Dream, LLaDA), used
/// when `tokenizer.ggml.mask_token_id` is absent.
pub const MASK_SPELLINGS: &[&str] = &["|<MASK>|", "<|mask|>", "<|mdm_mask|>"];

/// Added tokens that end generation when the vocabulary has them.
pub const EOG_SPELLINGS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "</s>",
    "<end_of_turn>",
    "<|eom_id|>",
];

/// A tokenizer with the model's special ids: encodes prompts, decodes generated ids.
pub struct Tokenizer {
    /// The Hugging Face tokenizer doing the work.
    inner: tokenizers::Tokenizer,
    /// The text of every id (`vocab_size` entries; the GGUF token list when there is one, so
    /// embedding padding rows have their `[PAD<id>]` placeholder).
    texts: Vec<String>,
    /// Per id: whether it is a special added token (skipped by `decode(.., true)`).
    special: Vec<bool>,
    /// BOS id.
    bos: Option<u32>,
    /// EOS id.
    eos: Option<u32>,
    /// Whether prompts start with BOS.
    add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`.
    add_eos: bool,
    /// End-of-generation ids, EOS first, no duplicates.
    eog: Vec<u32>,
    /// The block-diffusion mask id.
    mask: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.texts.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("eog", &self.eog)
            .field("mask", &self.mask)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// The tokenizer of a GGUF file: its `tokenizer.huggingface.json` when present (exact), else
    /// one built from the `tokenizer.ggml.*` keys (`gpt2` byte-level BPE with the pre-tokenizer
    /// named by `tokenizer.ggml.pre`, or a `llama` SentencePiece vocabulary with byte fallback).
    pub fn from_gguf(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        match md.opt_str(KEY_HF_JSON)? {
            Some(json) => Self::from_hf_json(json, Some(md)),
            None => Self::finish(gguf_vocab::build(md)?, Some(md)),
        }
    }

    /// A tokenizer from a Hugging Face `tokenizer.json` text. `md`, when given, supplies the
    /// special ids, `add_bos_token`, the end-of-generation ids, the mask id and the token list
    /// (as in [`from_gguf`](Self::from_gguf)); without it they are inferred from the tokenizer
    /// (BOS from the post-processor, EOG and mask from the known spellings).
    pub fn from_hf_json(json: &str, md: Option<&Metadata>) -> Result<Tokenizer, TokenizerError> {
        // Parsed as JSON first: `tokenizers` panics (an `expect` in its decoder deserializer) on
        // a syntax error inside the `decoder` object instead of returning it; from a parsed value
        // every error comes back as an error.
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| TokenizerError::HfJson(format!("invalid JSON: {e}")))?;
        let inner: tokenizers::Tokenizer = serde_json::from_value(value)
            .map_err(|e| TokenizerError::HfJson(tk_message(Box::new(e))))?;
        Self::finish(inner, md)
    }

    /// Collects the token texts, the special flags and the special ids around `inner`.
    fn finish(
        inner: tokenizers::Tokenizer,
        md: Option<&Metadata>,
    ) -> Result<Tokenizer, TokenizerError> {
        let gguf_tokens = match md {
            Some(md) if md.contains_key("tokenizer.ggml.tokens") => {
                md.get_str_array("tokenizer.ggml.tokens")?
            }
            _ => Vec::new(),
        };
        let added = inner.get_added_tokens_decoder();
        let hf_size = inner
            .get_vocab(true)
            .values()
            .map(|id| *id as usize + 1)
            .max()
            .unwrap_or(0);
        let n = hf_size.max(gguf_tokens.len());
        let texts: Vec<String> = (0..n)
            .map(|id| match gguf_tokens.get(id) {
                Some(t) => (*t).to_string(),
                None => inner.id_to_token(id as u32).unwrap_or_default(),
            })
            .collect();
        let mut special = vec![false; n];
        for (id, tok) in &added {
            if tok.special {
                special[*id as usize] = true;
            }
        }

        let check = |key: &str, id: u32| {
            if (id as usize) < n {
                Ok(id)
            } else {
                Err(TokenizerError::InvalidVocab(format!(
                    "{key} {id} is outside the vocabulary of {n} tokens"
                )))
            }
        };
        let opt_id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match md {
                Some(md) => md.opt_u32(key)?.map(|id| check(key, id)).transpose(),
                None => Ok(None),
            }
        };

        // BOS: the GGUF key, else the special token the HF post-processor puts first.
        let processor_bos = post_processor_bos(&inner)?;
        let bos = match opt_id("tokenizer.ggml.bos_token_id")? {
            Some(id) => Some(id),
            None => processor_bos,
        };
        let eos = opt_id("tokenizer.ggml.eos_token_id")?;
        let model = match md {
            Some(md) => md.opt_str("tokenizer.ggml.model")?,
            None => None,
        };
        // add_bos_token: the GGUF key, else whether the HF post-processor adds BOS, else
        // llama.cpp's default (true for SentencePiece vocabularies).
        let key = match md {
            Some(md) => md.opt_bool("tokenizer.ggml.add_bos_token")?,
            None => None,
        };
        let add_bos =
            key.unwrap_or(processor_bos.is_some() || model == Some("llama")) && bos.is_some();
        let add_eos = match md {
            Some(md) => md
                .opt_bool("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false),
            None => false,
        } && eos.is_some();

        // End of generation: EOS, the listed ids, llama.cpp's EOT/EOM keys, known spellings.
        let mut eog: Vec<u32> = eos.into_iter().collect();
        if let Some(md) = md {
            if md.contains_key(KEY_EOG_IDS) {
                for id in md.get_u32_array(KEY_EOG_IDS)? {
                    eog.push(check(KEY_EOG_IDS, id)?);
                }
            }
        }
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            eog.extend(opt_id(key)?);
        }
        for name in EOG_SPELLINGS {
            if let Some(id) = inner.token_to_id(name).filter(|id| added.contains_key(id)) {
                eog.push(id);
            }
        }
        let mut seen = HashSet::new();
        eog.retain(|id| seen.insert(*id));

        let mask = match opt_id(KEY_MASK_TOKEN_ID)? {
            Some(id) => Some(id),
            None => MASK_SPELLINGS.iter().find_map(|s| inner.token_to_id(s)),
        };

        Ok(Tokenizer {
            inner,
            texts,
            special,
            bos,
            eos,
            add_bos,
            add_eos,
            eog,
            mask,
        })
    }

    /// Encodes `text`. Special tokens written in the text (`<|im_start|>`) become their ids. With
    /// `add_bos` (pass [`add_bos_token`](Self::add_bos_token) for the model's rule) BOS is
    /// prepended, unless the text already starts with it: BOS is never doubled. EOS is never
    /// appended (see [`add_eos_token`](Self::add_eos_token)).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(tk_message(e)))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        match self.bos {
            Some(bos) if add_bos && enc.get_ids().first() != Some(&bos) => ids.push(bos),
            _ => {}
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Whether prompts for this model start with BOS (`tokenizer.ggml.add_bos_token`; without the
    /// key: whether the Hugging Face post-processor adds it, else true for SentencePiece
    /// vocabularies as in llama.cpp). Always false when the model has no BOS token.
    pub fn add_bos_token(&self) -> bool {
        self.add_bos
    }

    /// `tokenizer.ggml.add_eos_token` (false when absent or when there is no EOS token). The
    /// encoder never appends EOS itself; this is for callers that want llama.cpp's behaviour.
    pub fn add_eos_token(&self) -> bool {
        self.add_eos
    }

    /// The BOS id (`tokenizer.ggml.bos_token_id`, else the Hugging Face post-processor's).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS id (`tokenizer.ggml.eos_token_id`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Every id that ends generation, without duplicates: EOS, `dlm.eog_token_ids`,
    /// `tokenizer.ggml.eot_token_id` / `eom_token_id`, and the added tokens spelled as in
    /// [`EOG_SPELLINGS`] that the vocabulary has.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation (see [`eog_ids`](Self::eog_ids)).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The mask token of a block-diffusion model: `tokenizer.ggml.mask_token_id`, else a token
    /// spelled as in [`MASK_SPELLINGS`].
    pub fn mask_id(&self) -> Option<u32> {
        self.mask
    }

    /// The number of ids: the GGUF token list's length when there is one (it matches the
    /// embedding rows, padding included), else the tokenizer's size with its added tokens.
    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// The vocabulary text of `id` as stored (`Ġthe`, `▁the`, `<0x0A>`, `<|im_end|>`), not the
    /// decoded text; `None` outside the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// The id whose vocabulary text is exactly `text` (added tokens included).
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Decodes `ids` to text, leaving out special tokens when `skip_special`. Ids the tokenizer
    /// does not define (embedding padding rows past the Hugging Face vocabulary) decode to
    /// nothing; ids at or past [`vocab_size`](Self::vocab_size) are an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|id| **id as usize >= self.texts.len()) {
            return Err(TokenizerError::UnknownId {
                id,
                vocab_size: self.texts.len(),
            });
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Decode(tk_message(e)))
    }

    /// The text one token adds when it follows other text, special tokens included: `▁the` is
    /// `" the"` (the SentencePiece leading space that [`decode`](Self::decode) strips at the
    /// start of a text is kept), `<0x0A>` is `"\n"`. Lossy where a token is part of a character
    /// (U+FFFD). For showing tokens one by one; streamed text comes from [`DecodeStream`].
    pub fn piece(&self, id: u32) -> Result<String, TokenizerError> {
        // Decoders only treat the start of a text specially, so the token's second copy in
        // `[id, id]` decodes as a continuation.
        let alone = self.decode(&[id], false)?;
        let twice = self.decode(&[id, id], false)?;
        Ok(match twice.strip_prefix(alone.as_str()) {
            Some(rest) => rest.to_string(),
            None => alone,
        })
    }

    /// Whether `id` is a special token (an added token marked special: BOS, EOS, `<|im_end|>`,
    /// control tokens of GGUF vocabularies), which `decode(.., true)` leaves out.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }
}

/// The special token a Hugging Face post-processor puts before the text (a `TemplateProcessing`
/// `<s> $A`), found by encoding a probe with and without special tokens.
fn post_processor_bos(inner: &tokenizers::Tokenizer) -> Result<Option<u32>, TokenizerError> {
    if inner.get_post_processor().is_none() {
        return Ok(None);
    }
    let encode = |special: bool| {
        inner
            .encode_fast("a", special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(tk_message(e)))
    };
    let (with, without) = (encode(true)?, encode(false)?);
    Ok(match with.split_first() {
        Some((first, rest)) if with.len() > without.len() && rest.starts_with(&without) => {
            Some(*first)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    /// The server shares one tokenizer and template between request threads.
    #[test]
    fn tokenizer_and_template_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Tokenizer>();
        assert_send_sync::<super::ChatTemplate>();
        assert_send_sync::<super::DecodeStream<'static>>();
    }
}
