//! Incremental detokenization for streaming generated text.
//!
//! Decoding ids one at a time and concatenating is wrong in two ways: a character split over
//! several byte-level or byte-fallback tokens decodes to U+FFFD until its last byte arrives, and
//! SentencePiece decoders strip the leading space of whatever they decode, so `▁world` alone
//! decodes to `world`. [`DecodeStream`] does what Hugging Face's `DecodeStream` and llama.cpp's
//! server do: it decodes a short window of ids that starts at an already emitted token, and emits
//! the part of that text past the window's already emitted prefix, holding everything back while
//! the text ends with an incomplete character.

use crate::{Tokenizer, TokenizerError};

/// Incremental detokenizer: push ids one at a time, get back only complete UTF-8 text (holds
/// back partial multi-byte sequences from byte-fallback/byte-level tokens; handles the
/// SentencePiece leading-space strip by decoding a window).
///
/// The concatenation of everything [`push`](Self::push) and [`finish`](Self::finish) return is
/// `tok.decode(all_ids, skip_special)`.
#[derive(Debug)]
pub struct DecodeStream<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    /// The window: ids from the first one whose text is the start of `prefix`.
    ids: Vec<u32>,
    /// The decoded text of `ids[..prefix_len]`, already emitted.
    prefix: String,
    /// How many ids of the window `prefix` covers.
    prefix_len: usize,
}

impl<'a> DecodeStream<'a> {
    /// A stream decoding with `tok`; special tokens are left out when `skip_special`.
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        DecodeStream {
            tok,
            skip_special,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_len: 0,
        }
    }

    /// A stream that continues after `context` (the prompt): the first generated token is decoded
    /// as a continuation, so a SentencePiece `▁word` keeps its space, while after a BOS (or no
    /// context) the leading space is stripped as at the start of a text.
    pub fn with_context(
        tok: &'a Tokenizer,
        skip_special: bool,
        context: &[u32],
    ) -> Result<Self, TokenizerError> {
        let mut stream = DecodeStream::new(tok, skip_special);
        if let Some(&last) = context.last() {
            let text = tok.decode(&[last], skip_special)?;
            if !text.ends_with(char::REPLACEMENT_CHARACTER) {
                stream.ids.push(last);
                stream.prefix = text;
                stream.prefix_len = 1;
            }
        }
        Ok(stream)
    }

    /// Adds one generated id and returns the text it completes: possibly empty (a special token
    /// being skipped, or part of a multi-byte character that is held back), possibly several
    /// characters (the held-back ones).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids, self.skip_special)?;
        if text.len() <= self.prefix.len() || text.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let new = self.suffix(&text)?;
        // The next window starts at the first id not in the old prefix: its text is what was
        // just emitted, so decoding it again gives the same leading-space treatment.
        self.ids.drain(..self.prefix_len);
        self.prefix = self.tok.decode(&self.ids, self.skip_special)?;
        self.prefix_len = self.ids.len();
        Ok(new)
    }

    /// Ends the stream: returns whatever is still held back (an incomplete character at the very
    /// end decodes with U+FFFD, as a plain decode would) and resets the stream.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        let text = self.tok.decode(&self.ids, self.skip_special)?;
        let rest = if text.len() > self.prefix.len() {
            self.suffix(&text)?
        } else {
            String::new()
        };
        self.ids.clear();
        self.prefix.clear();
        self.prefix_len = 0;
        Ok(rest)
    }

    /// The part of `text` (the window's decode) after the already emitted prefix.
    fn suffix(&self, text: &str) -> Result<String, TokenizerError> {
        text.strip_prefix(self.prefix.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                TokenizerError::Decode(format!(
                    "streaming decode: the window decodes to {text:?}, which does not start with \
                     the text already emitted ({:?})",
                    self.prefix
                ))
            })
    }
}
