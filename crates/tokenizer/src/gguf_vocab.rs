//! Building a `tokenizers` tokenizer from the GGUF vocabulary keys alone (files without
//! `tokenizer.huggingface.json`, such as llama.cpp conversions).
//!
//! Two kinds, named by `tokenizer.ggml.model`:
//!
//! - `gpt2`: byte-level BPE. `tokenizer.ggml.tokens` are the byte-level spellings (`Ġthe`),
//!   `tokenizer.ggml.merges` the merge list (`"a b"`, rank = position), and
//!   `tokenizer.ggml.pre` names the pre-tokenizer regex ([`pre_tokenizer`]).
//! - `llama`: a SentencePiece-style vocabulary (`▁` word marker, `<0xNN>` byte-fallback pieces)
//!   with `tokenizer.ggml.scores`. It becomes a BPE with byte fallback, built the way Hugging
//!   Face's `LlamaConverter` builds one from a SentencePiece model: every way of splitting a
//!   normal piece into two vocabulary pieces is a merge, ranked by the piece's score (highest
//!   first), so BPE's "lowest rank first" reproduces SentencePiece's "highest score first". The
//!   text is normalized as the legacy Llama tokenizer does (`▁` prepended, spaces replaced by `▁`),
//!   and decoding reverses it (and strips the one leading space the prefix added).
//!
//! In both, tokens of type control (3) and unknown (2) become special added tokens, user-defined
//! tokens (4) become non-special added tokens (both are matched in the text before the BPE runs),
//! except the `[PAD<id>]` placeholders that pad the list to the embedding size.

use std::collections::HashMap;

use gguf::Metadata;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{tk_message, TokenizerError};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub(crate) mod token_type {
    /// An ordinary piece.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A control (special) token such as `<s>` or `<|im_end|>`.
    pub const CONTROL: i32 = 3;
    /// A user-defined token, matched verbatim in the text.
    pub const USER_DEFINED: i32 = 4;
    /// A byte-fallback piece `<0xNN>`.
    pub const BYTE: i32 = 6;
}

/// The SentencePiece word marker (U+2581).
const SPIECE_UNDERLINE: &str = "\u{2581}";

/// GPT-2's pre-tokenizer regex (what `ByteLevel { use_regex: true }` applies).
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer regex (single digits).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer regex (digits in groups of up to three).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Builds the tokenizer described by the GGUF keys `tokenizer.ggml.*` of `md`.
pub(crate) fn build(md: &Metadata) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let model = md.get_str("tokenizer.ggml.model")?;
    let tokens = md.get_str_array("tokenizer.ggml.tokens")?;
    let types = if md.contains_key("tokenizer.ggml.token_type") {
        let types = md.get_i32_array("tokenizer.ggml.token_type")?;
        if types.len() != tokens.len() {
            return Err(TokenizerError::InvalidVocab(format!(
                "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                types.len(),
                tokens.len()
            )));
        }
        types
    } else {
        vec![token_type::NORMAL; tokens.len()]
    };
    let mut tk = match model {
        "gpt2" => byte_level(md, &tokens)?,
        "llama" => sentencepiece(md, &tokens, &types)?,
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer.ggml.model `{other}` (this build reads `gpt2` byte-level BPE and `llama` \
                 SentencePiece vocabularies; a file with tokenizer.huggingface.json works for any kind)"
            )))
        }
    };
    add_added_tokens(&mut tk, &tokens, &types)?;
    Ok(tk)
}

/// The vocabulary map text → id. A text that occurs twice keeps its first id (the later id then
/// decodes to nothing), as a map cannot hold both.
fn vocab_map(tokens: &[&str]) -> Vocab {
    let mut vocab = Vocab::default();
    for (id, text) in tokens.iter().enumerate() {
        vocab.entry((*text).to_string()).or_insert(id as u32);
    }
    vocab
}

/// A byte-level BPE (`tokenizer.ggml.model = gpt2`).
fn byte_level(md: &Metadata, tokens: &[&str]) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges = md
        .get_str_array("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    TokenizerError::InvalidVocab(format!(
                        "tokenizer.ggml.merges[{i}] `{m}` is not two tokens separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = md.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let (normalizer, pre_tokenizer, ignore_merges) = pre_tokenizer(pre)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| TokenizerError::InvalidVocab(format!("byte-level BPE: {}", tk_message(e))))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    if let Some(n) = normalizer {
        tk.with_normalizer(Some(n))
            .map_err(|e| TokenizerError::InvalidVocab(tk_message(e)))?;
    }
    tk.with_pre_tokenizer(Some(pre_tokenizer));
    tk.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    Ok(tk)
}

/// The normalizer, pre-tokenizer and `ignore_merges` flag for a `tokenizer.ggml.pre` name, as
/// the matching Hugging Face `tokenizer.json` files define them:
///
/// | `pre` | pre-tokenizer |
/// |---|---|
/// | `qwen2` | NFC, split on the Qwen2 regex (single digits), byte level |
/// | `llama-bpe`, `llama3` | split on the Llama 3 regex (digits by three), byte level, `ignore_merges` |
/// | `smollm`, `starcoder`, `refact` | individual digits, then GPT-2's byte-level regex |
/// | `gpt-2`, `gpt2`, `default` | GPT-2's byte-level regex |
pub(crate) fn pre_tokenizer(
    pre: &str,
) -> Result<(Option<NormalizerWrapper>, PreTokenizerWrapper, bool), TokenizerError> {
    let split = |re: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| {
            TokenizerError::InvalidVocab(format!("pre-tokenizer regex: {}", tk_message(e)))
        })?;
        Ok(PreSequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])
        .into())
    };
    Ok(match pre {
        "qwen2" => (Some(NFC.into()), split(QWEN2_REGEX)?, false),
        "llama-bpe" | "llama3" => (None, split(LLAMA3_REGEX)?, true),
        "smollm" | "starcoder" | "refact" => (
            None,
            PreSequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            false,
        ),
        "gpt-2" | "gpt2" | "default" => (None, ByteLevel::new(false, true, true).into(), false),
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer.ggml.pre `{other}` (known: qwen2, llama-bpe, smollm, gpt-2, default; \
                 GPT-2's regex is {GPT2_REGEX:?}). Convert the model with `dlm convert`, which \
                 stores the exact tokenizer.json"
            )))
        }
    })
}

/// A SentencePiece-style vocabulary (`tokenizer.ggml.model = llama`) as a byte-fallback BPE.
fn sentencepiece(
    md: &Metadata,
    tokens: &[&str],
    types: &[i32],
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let scores = if md.contains_key("tokenizer.ggml.scores") {
        let scores = md.get_f32_array("tokenizer.ggml.scores")?;
        if scores.len() != tokens.len() {
            return Err(TokenizerError::InvalidVocab(format!(
                "tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {}",
                scores.len(),
                tokens.len()
            )));
        }
        scores
    } else {
        // llama.cpp treats missing scores as 0: merges then follow the vocabulary order.
        vec![0.0; tokens.len()]
    };
    let merges = spm_merges(tokens, types, &scores);
    let unk = match md.opt_u32("tokenizer.ggml.unknown_token_id")? {
        Some(id) => Some(tokens.get(id as usize).ok_or_else(|| {
            TokenizerError::InvalidVocab(format!(
                "tokenizer.ggml.unknown_token_id {id} is outside the vocabulary of {} tokens",
                tokens.len()
            ))
        })?),
        None => tokens
            .iter()
            .zip(types)
            .find(|(_, t)| **t == token_type::UNKNOWN)
            .map(|(text, _)| text),
    };
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token((*unk).to_string());
    }
    let bpe = builder.build().map_err(|e| {
        TokenizerError::InvalidVocab(format!("SentencePiece BPE: {}", tk_message(e)))
    })?;
    let add_space_prefix = md
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);

    let mut tk = tokenizers::Tokenizer::new(bpe);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| TokenizerError::InvalidVocab(tk_message(e)))
    };
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new(SPIECE_UNDERLINE.to_string()).into());
    }
    normalizers.push(replace(" ", SPIECE_UNDERLINE)?.into());
    tk.with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| TokenizerError::InvalidVocab(tk_message(e)))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        replace(SPIECE_UNDERLINE, " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tk)
}

/// The merge list of a SentencePiece BPE vocabulary, as Hugging Face's `generate_merges` makes it
/// from piece scores: every split of a normal (or user-defined) piece into two non-byte pieces of
/// the vocabulary, ordered by the piece's score (highest first), then by the left part's length
/// and the right part's length (longest first), then by the parts' ids.
pub(crate) fn spm_merges(tokens: &[&str], types: &[i32], scores: &[f32]) -> Vec<(String, String)> {
    let mut by_text: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    for (id, text) in tokens.iter().enumerate() {
        by_text.entry(*text).or_insert(id as u32);
    }
    let part_ok = |text: &str| {
        by_text
            .get(text)
            .filter(|id| types[**id as usize] != token_type::BYTE)
            .copied()
    };
    // (score, left chars, right chars, left id, right id, left, right)
    let mut merges: Vec<(f32, usize, usize, u32, u32, &str, &str)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if !matches!(types[id], token_type::NORMAL | token_type::USER_DEFINED)
            || by_text.get(piece) != Some(&(id as u32))
        {
            continue;
        }
        let start = merges.len();
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(li), Some(ri)) = (part_ok(l), part_ok(r)) {
                merges.push((
                    scores[id],
                    l.chars().count(),
                    r.chars().count(),
                    li,
                    ri,
                    l,
                    r,
                ));
            }
        }
        merges[start..].sort_by_key(|m| (m.3, m.4));
    }
    // Stable: equal keys keep the per-piece order above.
    // A total order on scores: -0.0 (the score of merge rank 0) equals 0.0, as in Python, and a
    // NaN score (a hostile file) ranks last instead of breaking the sort.
    let score = |s: f32| {
        if s.is_nan() {
            f32::NEG_INFINITY
        } else {
            s + 0.0
        }
    };
    merges.sort_by(|a, b| {
        score(b.0)
            .total_cmp(&score(a.0))
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
    });
    merges
        .into_iter()
        .map(|m| (m.5.to_string(), m.6.to_string()))
        .collect()
}

/// Whether `text` is the converter's placeholder for embedding row `id` that no token uses.
pub(crate) fn is_pad_placeholder(text: &str, id: usize) -> bool {
    text.strip_prefix("[PAD")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|n| n == id.to_string())
}

/// Registers control/unknown tokens as special added tokens and user-defined tokens as plain
/// added tokens, so that they are matched in the text before the BPE runs. Their ids are the
/// vocabulary ids (the texts are already in the model's vocabulary).
fn add_added_tokens(
    tk: &mut tokenizers::Tokenizer,
    tokens: &[&str],
    types: &[i32],
) -> Result<(), TokenizerError> {
    let mut special = Vec::new();
    let mut plain = Vec::new();
    for (id, (text, ty)) in tokens.iter().zip(types).enumerate() {
        if text.is_empty() {
            continue;
        }
        match *ty {
            token_type::CONTROL | token_type::UNKNOWN => {
                special.push(AddedToken::from(*text, true).normalized(false))
            }
            token_type::USER_DEFINED if !is_pad_placeholder(text, id) => {
                plain.push(AddedToken::from(*text, false).normalized(false))
            }
            _ => {}
        }
    }
    let err = |e| TokenizerError::InvalidVocab(format!("added tokens: {}", tk_message(e)));
    tk.add_special_tokens(special).map_err(err)?;
    tk.add_tokens(plain).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spm_merges_follow_scores_and_skip_bytes_and_controls() {
        let tokens = [
            "<unk>", "<s>", "<0x41>", "▁", "t", "h", "e", "▁t", "he", "▁the", "th", "the",
            "<0x41>t",
        ];
        let n = token_type::NORMAL;
        let types = [2, 3, 6, n, n, n, n, n, n, n, n, n, n];
        let scores = [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.0, -1.0, -2.0, -3.0, -4.0, -5.0,
        ];
        let merges = spm_merges(&tokens, &types, &scores);
        let pairs: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("▁", "t"),
                ("h", "e"),
                // "▁the": the longer left part first.
                ("▁t", "he"),
                ("▁", "the"),
                ("t", "h"),
                ("th", "e"),
                ("t", "he"),
                // "<0x41>t" has no split: byte pieces are never merge parts.
            ]
        );
    }

    #[test]
    fn pad_placeholders() {
        assert!(is_pad_placeholder("[PAD151666]", 151666));
        assert!(!is_pad_placeholder("[PAD151666]", 151667));
        assert!(!is_pad_placeholder("[PAD]", 3));
    }

    /// A tiny byte-level vocabulary: the digits 1-5, `Ġ`, and merges building `123` and `45`.
    fn digits_vocab(pre: &str) -> Metadata {
        use gguf::{Value, ValueType};
        let strings = |items: &[&str]| {
            Value::Array(
                ValueType::String,
                items.iter().map(|s| Value::String(s.to_string())).collect(),
            )
        };
        [
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            (
                "tokenizer.ggml.tokens",
                strings(&["1", "2", "3", "4", "5", "Ġ", "12", "123", "45"]),
            ),
            ("tokenizer.ggml.merges", strings(&["1 2", "12 3", "4 5"])),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn pre_tokenizers_split_digits_as_their_models_do() {
        let ids = |pre: &str| {
            let tk = build(&digits_vocab(pre)).unwrap();
            tk.encode_fast("12345 1", false).unwrap().get_ids().to_vec()
        };
        // Llama 3: digits in groups of three; GPT-2: digit runs; Qwen2, SmolLM: single digits.
        assert_eq!(ids("llama-bpe"), [7, 8, 5, 0]);
        assert_eq!(ids("gpt-2"), [7, 8, 5, 0]);
        assert_eq!(ids("default"), [7, 8, 5, 0]);
        assert_eq!(ids("qwen2"), [0, 1, 2, 3, 4, 5, 0]);
        assert_eq!(ids("smollm"), [0, 1, 2, 3, 4, 5, 0]);
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error() {
        let err = pre_tokenizer("deepseek-llm").unwrap_err();
        assert!(
            err.to_string()
                .contains("tokenizer.ggml.pre `deepseek-llm`"),
            "{err}"
        );
    }
}
