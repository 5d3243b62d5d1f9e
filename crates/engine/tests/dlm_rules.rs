//! Each rule of the Fast-dLLM v2 loop, on a scripted model whose logits the test chooses.

use convert::tiny::{TinyFamily, TinySpec};
use convert::OutType;
use engine::{
    decode_ar, decode_dlm, BlockForward, DlmParams, EngineError, FinishReason, GenerateParams,
};
use model::Logits;
use tokenizer::Tokenizer;

const VOCAB: usize = 384;
const MASK: u32 = 331; // the tiny SentencePiece vocabulary's |<MASK>|

/// One forward call as the decoder made it.
#[derive(Clone, Debug, PartialEq)]
struct Call {
    start: usize,
    tokens: Vec<u32>,
    commit: bool,
    rows: Vec<usize>,
}

/// A model whose logits row for block offset `r` is `script(absolute position of r, tokens)`.
struct Scripted<F: Fn(usize, &[u32]) -> Vec<f32>> {
    len: usize,
    calls: Vec<Call>,
    script: F,
}

impl<F: Fn(usize, &[u32]) -> Vec<f32>> BlockForward for Scripted<F> {
    fn cache_len(&self) -> usize {
        self.len
    }
    fn capacity(&self) -> usize {
        4096
    }
    fn forward(
        &mut self,
        tokens: &[u32],
        _block_size: usize,
        commit: bool,
        logits: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        let rows: Vec<usize> = match logits {
            Logits::None => vec![],
            Logits::Last => vec![tokens.len() - 1],
            Logits::All => (0..tokens.len()).collect(),
            Logits::Rows(r) => r,
        };
        self.calls.push(Call {
            start: self.len,
            tokens: tokens.to_vec(),
            commit,
            rows: rows.clone(),
        });
        let out = rows
            .iter()
            .flat_map(|&r| (self.script)(self.len + r, tokens))
            .collect();
        if commit {
            self.len += tokens.len();
        }
        Ok(out)
    }
    fn forward_in_place(
        &mut self,
        tokens: &[u32],
        at: usize,
        block_size: usize,
        logits: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        let len = self.len;
        self.len = at;
        let out = self.forward(tokens, block_size, true, logits);
        self.len = len;
        out
    }
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Logits where `token` has probability `p` and the rest share 1 − p.
fn peaked(token: u32, p: f64) -> Vec<f32> {
    let rest = (1.0 - p) / (VOCAB - 1) as f64;
    (0..VOCAB)
        .map(|i| {
            if i as u32 == token {
                p.ln() as f32
            } else {
                rest.ln() as f32
            }
        })
        .collect()
}

fn tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = TinySpec::new(TinyFamily::Llama);
    spec.layers = 1;
    spec.vocab_size = VOCAB;
    spec.dlm_block_size = Some(8);
    let gguf = spec.write_gguf(dir.path(), OutType::F16).unwrap();
    let file = gguf::GgufFile::open(&gguf).unwrap();
    let tok = Tokenizer::from_gguf(&file.metadata).unwrap();
    assert_eq!(tok.mask_id(), Some(MASK));
    (dir, tok)
}

fn run<F: Fn(usize, &[u32]) -> Vec<f32>>(
    tok: &Tokenizer,
    prompt: &[u32],
    p: DlmParams,
    script: F,
) -> (engine::Generation, Vec<Call>) {
    let mut m = Scripted {
        len: 0,
        calls: Vec::new(),
        script,
    };
    let g = decode_dlm(&mut m, tok, prompt, MASK, &p, &mut |_| {}, &mut |_| {}).unwrap();
    (g, m.calls)
}

fn params(block: usize, small: usize, threshold: f32, max_tokens: usize) -> DlmParams {
    DlmParams {
        block_size: block,
        small_block_size: small,
        threshold,
        max_tokens,
        ..Default::default()
    }
}

#[test]
fn position_j_takes_the_prediction_of_position_j_minus_1() {
    let (_d, tok) = tokenizer();
    // The logit row at absolute position q confidently predicts token 10 + q.
    let (g, calls) = run(&tok, &[5, 6, 7], params(8, 8, 0.5, 5), |q, _| {
        peaked(10 + q as u32, 0.9)
    });
    // Generated positions 3..8 are predicted by rows 2..7.
    assert_eq!(g.tokens, vec![12, 13, 14, 15, 16]);
    assert_eq!(
        calls[0].rows,
        vec![2, 3, 4, 5, 6],
        "only the rows that predict masks are computed"
    );
    assert_eq!(
        calls.len(),
        1,
        "every prediction is above threshold: one forward"
    );
}

#[test]
fn at_least_one_token_is_committed_per_step_the_first_most_confident() {
    let (_d, tok) = tokenizer();
    // Nothing reaches the threshold; row 4 (predicting position 5) is the most confident.
    let (g, calls) = run(&tok, &[5, 6, 7], params(8, 8, 0.95, 5), |q, _| {
        peaked(50 + q as u32, if q == 4 { 0.6 } else { 0.3 })
    });
    assert_eq!(calls.len(), 5, "one token per forward");
    // The first step commits position 5 (the most confident), then ties resolve to the leftmost.
    assert_eq!(g.tokens, vec![52, 53, 54, 55, 56]);
    let second = &calls[1].tokens;
    assert_eq!(second[5], 54, "position 5 was committed first");
    assert_eq!(second[3], MASK);
}

#[test]
fn the_threshold_is_strict() {
    let (_d, tok) = tokenizer();
    // Probability exactly 0.5 everywhere with threshold 0.5: only the at-least-one rule commits.
    let (_, calls) = run(&tok, &[5, 6, 7], params(8, 8, 0.5, 5), |q, _| {
        let mut l = vec![f32::NEG_INFINITY; VOCAB];
        l[60 + q % 3] = 0.0;
        l[200] = 0.0;
        l
    });
    assert_eq!(calls.len(), 5);
}

#[test]
fn sub_blocks_are_decoded_strictly_left_to_right() {
    let (_d, tok) = tokenizer();
    // Everything is confident, but only the current sub-block of 4 may be committed.
    let (g, calls) = run(&tok, &[5], params(8, 4, 0.5, 7), |q, _| {
        peaked(70 + q as u32, 0.99)
    });
    assert_eq!(g.tokens.len(), 7);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].rows, vec![0, 1, 2], "sub-block 0: positions 1..4");
    assert_eq!(
        calls[1].rows,
        vec![3, 4, 5, 6],
        "sub-block 1: positions 4..8"
    );
    assert_eq!(calls[1].tokens[4], MASK);
    assert_eq!(calls[1].tokens[3], 72);
}

#[test]
fn an_end_of_generation_token_stops_mid_block_and_is_not_returned() {
    let (_d, tok) = tokenizer();
    let eos = tok.eos_id().unwrap();
    let (g, calls) = run(&tok, &[5, 6, 7], params(8, 8, 0.5, 20), |q, _| {
        peaked(if q == 5 { eos } else { 80 + q as u32 }, 0.9)
    });
    assert_eq!(g.tokens, vec![82, 83, 84]);
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert_eq!(
        calls.len(),
        1,
        "no finalize pass and no further block after the stop"
    );
}

#[test]
fn max_tokens_below_one_block_is_a_hard_cap() {
    let (_d, tok) = tokenizer();
    let (g, calls) = run(&tok, &[5], params(8, 8, 0.95, 3), |q, _| {
        peaked(90 + q as u32, 0.3)
    });
    assert_eq!(g.tokens, vec![90, 91, 92]);
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(
        calls.len(),
        3,
        "stops as soon as the first 3 positions are final"
    );
}

#[test]
fn whole_prompt_blocks_are_prefilled_once_and_the_tail_shares_the_first_block() {
    let (_d, tok) = tokenizer();
    let prompt: Vec<u32> = (0..19).map(|i| 3 + i).collect();
    let (g, calls) = run(&tok, &prompt, params(8, 8, 0.5, 10), |q, _| {
        peaked(100 + q as u32, 0.9)
    });
    assert_eq!(
        calls[0],
        Call {
            start: 0,
            tokens: prompt[..16].to_vec(),
            commit: true,
            rows: vec![]
        }
    );
    assert_eq!(calls[1].start, 16);
    assert_eq!(&calls[1].tokens[..3], &prompt[16..]);
    assert!(!calls[1].commit);
    assert_eq!(
        calls[2],
        Call {
            start: 16,
            tokens: calls[2].tokens.clone(),
            commit: true,
            rows: vec![7]
        },
        "finalize"
    );
    assert_eq!(g.tokens[..6], [118, 119, 120, 121, 122, 123]);
    // The finalize pass's last row predicts the next block's first token (an AR step).
    assert_eq!(g.tokens[5], 123);

    // A prompt of exactly one block is prefilled (the reference never sees it) and its last
    // logit gives the first token.
    let prompt: Vec<u32> = (0..8).map(|i| 3 + i).collect();
    let (g, calls) = run(&tok, &prompt, params(8, 8, 0.5, 4), |q, _| {
        peaked(100 + q as u32, 0.9)
    });
    assert_eq!(
        calls[0],
        Call {
            start: 0,
            tokens: prompt.clone(),
            commit: true,
            rows: vec![7]
        }
    );
    assert_eq!(g.tokens, vec![107, 108, 109, 110]);
}

#[test]
fn the_mask_token_is_never_predicted() {
    let (_d, tok) = tokenizer();
    let (g, _) = run(&tok, &[5], params(8, 8, 0.5, 3), |_, _| {
        let mut l = peaked(MASK, 0.9);
        l[42] = l[MASK as usize] - 1.0;
        l
    });
    assert_eq!(g.tokens, vec![42, 42, 42]);
}

/// Runs both loops on a model whose row at absolute position 5 holds `bad` at token 17 (every
/// other logit a confident prediction).
fn with_logit(
    bad: f32,
) -> (
    Result<engine::Generation, EngineError>,
    Result<engine::Generation, EngineError>,
) {
    let (_d, tok) = tokenizer();
    let script = move |q: usize, _: &[u32]| {
        let mut l = peaked(10 + q as u32, 0.9);
        if q == 5 {
            l[17] = bad;
        }
        l
    };
    let mut m = Scripted {
        len: 0,
        calls: Vec::new(),
        script,
    };
    let p = params(8, 8, 0.5, 5);
    let dlm = decode_dlm(&mut m, &tok, &[5, 6, 7], MASK, &p, &mut |_| {}, &mut |_| {});
    let mut m = Scripted {
        len: 0,
        calls: Vec::new(),
        script,
    };
    let ar = GenerateParams {
        max_tokens: 5,
        ..Default::default()
    };
    let ar = decode_ar(&mut m, &tok, &[5, 6, 7], &ar, &mut |_| {});
    (dlm, ar)
}

#[test]
fn a_nan_or_infinite_logit_from_the_model_is_an_error_naming_its_row_and_token() {
    for bad in [f32::NAN, f32::INFINITY] {
        let (dlm, ar) = with_logit(bad);
        let (dlm, ar) = (dlm.unwrap_err(), ar.unwrap_err());
        // DLM: the first block's masked positions 3..8 read rows 2..7 (one call, commit false),
        // so position 5 is row 3 of that call.
        match &dlm {
            EngineError::NonFiniteLogits { row, token, value } => {
                assert_eq!((*row, *token), (3, 17));
                assert_eq!(value.to_bits(), bad.to_bits());
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            dlm.to_string(),
            format!(
                "the model produced a non-finite logit ({bad}) for token 17 in logit row 3; its \
                 weights or activations are broken (NaN or overflow)"
            )
        );
        // AR: the prefill's last row is position 2, then one token per forward: the forward
        // whose row is position 5 is the fourth, and its one row is row 0.
        match ar {
            EngineError::NonFiniteLogits { row, token, value } => {
                assert_eq!((row, token), (0, 17));
                assert_eq!(value.to_bits(), bad.to_bits());
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn a_minus_infinity_logit_is_a_zero_probability_not_an_error() {
    let (dlm, ar) = with_logit(f32::NEG_INFINITY);
    // Token 17 is ruled out by row 5; every row q still predicts 10 + q (row 2 gives the first
    // generated token).
    assert_eq!(dlm.unwrap().tokens, [12, 13, 14, 15, 16]);
    assert_eq!(ar.unwrap().tokens, [12, 13, 14, 15, 16]);
}
