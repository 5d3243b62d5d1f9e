//! The opt-in step trace (`stream_options.include_steps`): one record per block-diffusion step,
//! sent as an SSE comment line `: dlm.step {json}` before the chunks the step's text produces.
//!
//! Comments, not named events: the official `openai` Python SDK parses the data of every event
//! whose name does not start with `thread.` as a chunk, so a named event would reach user code as
//! a malformed chunk, while every SSE client ignores comment lines. The format is documented in
//! docs/api.md. Records are built on the decoding thread, and only for requests that asked.

use std::time::Instant;

use engine::BlockState;
use serde::Serialize;
use tokenizer::Tokenizer;

/// The literal that starts every step line (after the SSE comment colon and space).
pub const STEP_PREFIX: &str = "dlm.step ";

/// A position that became a token at a step.
#[derive(Clone, Debug, Serialize)]
pub struct CommittedToken {
    /// Offset within the block.
    pub pos: usize,
    /// The token id.
    pub token: u32,
    /// Its text ([`Tokenizer::piece`]).
    pub piece: String,
    /// The softmax probability of the choice; `null` for a token decided without one.
    pub confidence: Option<f32>,
}

/// One diffusion step of one request, without the stream's `id` (see [`step_line`]).
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// Index of the block in the sequence.
    pub block: usize,
    /// Absolute position of the block's first token.
    pub block_start: usize,
    /// Positions in the block.
    pub block_size: usize,
    /// Leading positions of the block that are prompt tokens.
    pub prompt_len_in_block: usize,
    /// `[lo, hi)` offsets of the sub-block decoded at this step.
    pub sub_block: [usize; 2],
    /// Running step counter of the request (1, 2, …, across blocks).
    pub step: usize,
    /// Running forward-pass count of the request.
    pub forward_passes: usize,
    /// The block's token ids (masks hold the mask id).
    pub tokens: Vec<u32>,
    /// The text of each token; `""` for masks.
    pub pieces: Vec<String>,
    /// Where the block is still masked.
    pub masked: Vec<bool>,
    /// The positions that became tokens at this step.
    pub committed: Vec<CommittedToken>,
    /// Milliseconds since the request started decoding.
    pub elapsed_ms: f64,
    /// The block is complete: the last record of every block.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// Turns a request's block states into [`StepRecord`]s, remembering each block position's piece
/// so a token is decoded once, not at every step.
pub struct Tracer<'t> {
    tok: &'t Tokenizer,
    started: Instant,
    block: Option<usize>,
    pieces: Vec<Option<(u32, String)>>,
}

impl<'t> Tracer<'t> {
    /// A tracer whose `elapsed_ms` counts from now.
    pub fn new(tok: &'t Tokenizer) -> Self {
        Tracer {
            tok,
            started: Instant::now(),
            block: None,
            pieces: Vec::new(),
        }
    }

    /// The record of one state.
    pub fn record(&mut self, s: &BlockState) -> StepRecord {
        if self.block != Some(s.block_index) {
            self.block = Some(s.block_index);
            self.pieces.clear();
        }
        self.pieces.resize(s.tokens.len(), None);
        let pieces = s
            .tokens
            .iter()
            .zip(&mut self.pieces)
            .map(|(&t, cached)| match cached {
                _ if t == s.mask_id => String::new(),
                Some((id, piece)) if *id == t => piece.clone(),
                _ => {
                    let piece = self.tok.piece(t).unwrap_or_default();
                    *cached = Some((t, piece.clone()));
                    piece
                }
            })
            .collect::<Vec<_>>();
        let committed = s
            .committed
            .iter()
            .map(|c| CommittedToken {
                pos: c.pos,
                token: c.token,
                piece: pieces.get(c.pos).cloned().unwrap_or_default(),
                confidence: c.confidence,
            })
            .collect();
        StepRecord {
            block: s.block_index,
            block_start: s.block_start,
            block_size: s.tokens.len(),
            prompt_len_in_block: s.prompt_len_in_block,
            sub_block: [s.sub_block.0, s.sub_block.1],
            step: s.step,
            forward_passes: s.forward_passes,
            tokens: s.tokens.to_vec(),
            masked: s.tokens.iter().map(|&t| t == s.mask_id).collect(),
            pieces,
            committed,
            elapsed_ms: self.started.elapsed().as_secs_f64() * 1e3,
            is_final: s.is_final,
        }
    }
}

/// The comment text of a record in stream `id` (choice `index`): `dlm.step {json}` on one line
/// (JSON escapes every newline), with `object`, `id` and `index` first.
pub fn step_line(id: &str, index: usize, record: &StepRecord) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        object: &'static str,
        id: &'a str,
        index: usize,
        #[serde(flatten)]
        record: &'a StepRecord,
    }
    let line = Line {
        object: "dlm.step",
        id,
        index,
        record,
    };
    // Serializing plain data into a string cannot fail.
    let json = serde_json::to_string(&line).unwrap_or_default();
    format!("{STEP_PREFIX}{json}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_line_is_one_line_with_the_envelope_first() {
        let record = StepRecord {
            block: 2,
            block_start: 64,
            block_size: 4,
            prompt_len_in_block: 1,
            sub_block: [0, 4],
            step: 7,
            forward_passes: 12,
            tokens: vec![5, 9, 3, 3],
            pieces: vec![" a".into(), "\n".into(), String::new(), String::new()],
            masked: vec![false, false, true, true],
            committed: vec![CommittedToken {
                pos: 1,
                token: 9,
                piece: "\n".into(),
                confidence: None,
            }],
            elapsed_ms: 41.5,
            is_final: false,
        };
        let line = step_line("chatcmpl-x", 0, &record);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let json = line.strip_prefix(STEP_PREFIX).unwrap();
        assert!(
            json.starts_with(r#"{"object":"dlm.step","id":"chatcmpl-x","index":0,"block":2,"#),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["final"], false);
        assert_eq!(v["sub_block"], serde_json::json!([0, 4]));
        assert_eq!(v["committed"][0]["confidence"], serde_json::Value::Null);
        assert_eq!(v["pieces"][1], "\n");
    }
}
