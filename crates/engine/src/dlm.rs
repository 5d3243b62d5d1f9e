//! Fast-dLLM v2 block-diffusion decoding (arXiv:2509.26328; NVlabs/Fast-dLLM `v2`, HF `modeling.py`
//! `generate`), with the reference's bugs fixed as documented in docs/fast-dllm-v2.md.
//!
//! The sequence is decoded in blocks of `block_size` positions aligned to multiples of the block
//! size. The prompt's whole blocks are prefilled with block-causal attention; its tail shares the
//! first generation block with mask tokens. Inside a block, sub-blocks of `small_block_size` are
//! decoded strictly left to right: each step runs the whole block against the exact prefix cache
//! (nothing committed), takes for position `j` the logits of position `j − 1` (token shift), and
//! commits every masked position of the current sub-block whose confidence exceeds `threshold`,
//! plus always the single most confident one. A block without masks is run once more to append
//! its keys/values to the cache; its last position's prediction is the next block's first token.

use std::time::Instant;

use model::{Attention, Batch, KvCache, Logits, Model};
use tokenizer::{DecodeStream, Tokenizer};

use crate::sampling::{argmax, softmax_prob, Sampler, SamplingParams};
use crate::stop::StopText;
use crate::{EngineError, FinishReason, Generation, GenerationStats};

/// Block-diffusion settings (the seed's `--block-size 32 --threshold 0.95`).
#[derive(Clone, Debug)]
pub struct DlmParams {
    /// Positions per block (the model was trained with its `bd_size`).
    pub block_size: usize,
    /// Positions per sub-block, decoded left to right.
    pub small_block_size: usize,
    /// Commit every masked position whose confidence is strictly above this.
    pub threshold: f32,
    /// Hard cap on returned tokens.
    pub max_tokens: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Temperature / top-p (temperature 0 = greedy, the reference default).
    pub sampling: SamplingParams,
    /// The reference's `use_block_cache` ("DualCache"): after a full pass stores the block's
    /// keys/values, later steps of a sub-block re-run only its positions against them (stale for
    /// the other sub-blocks). Fewer rows per forward; an approximation, off by default.
    pub use_block_cache: bool,
}

impl Default for DlmParams {
    fn default() -> Self {
        DlmParams {
            block_size: 32,
            small_block_size: 8,
            threshold: 0.95,
            max_tokens: 256,
            stop: Vec::new(),
            sampling: SamplingParams::default(),
            use_block_cache: false,
        }
    }
}

impl DlmParams {
    /// Checks the settings; the message names the parameter.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_size == 0 {
            return Err("block_size must be positive".into());
        }
        if self.small_block_size == 0 || !self.block_size.is_multiple_of(self.small_block_size) {
            return Err(format!(
                "small_block_size ({}) must be positive and divide block_size ({})",
                self.small_block_size, self.block_size
            ));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!(
                "threshold must be in [0, 1], got {}",
                self.threshold
            ));
        }
        self.sampling.validate()
    }
}

impl DlmParams {
    /// Cache positions a prompt of `prompt_len` tokens needs under a context of `context`:
    /// whole blocks up to the token cap (the last block may extend past it), at most the context;
    /// an error when the prompt leaves no room.
    pub fn capacity(&self, prompt_len: usize, context: usize) -> Result<usize, EngineError> {
        crate::check_prompt_fits(prompt_len, context)?;
        let b = self.block_size.max(1);
        let needed = (prompt_len + self.max_tokens).div_ceil(b) * b + 1;
        Ok(needed.min(context))
    }
}

/// A block position that became a token at a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Commit {
    /// Offset within the block.
    pub pos: usize,
    /// The token.
    pub token: u32,
    /// The softmax probability of the chosen token; `None` for a token decided without one (the
    /// first token of a block, chosen greedily by the pass that finalized the block before it or
    /// by the prompt's prefill).
    pub confidence: Option<f32>,
}

/// The block being decoded, after a step: what `dlm generate --visual` draws and what the
/// server's step trace sends. Built from buffers the loop keeps anyway, so a caller that ignores
/// it costs nothing.
#[derive(Clone, Debug)]
pub struct BlockState<'a> {
    /// The block's tokens; masked positions hold the mask id.
    pub tokens: &'a [u32],
    /// The mask id.
    pub mask_id: u32,
    /// Index of the block in the sequence.
    pub block_index: usize,
    /// Absolute position of the block's first token.
    pub block_start: usize,
    /// How many leading positions of the block are prompt tokens.
    pub prompt_len_in_block: usize,
    /// `[lo, hi)` offsets of the sub-block decoded at this step (the last one on a final record).
    pub sub_block: (usize, usize),
    /// Running count of the states reported for this generation (1, 2, …, across blocks).
    pub step: usize,
    /// Forward passes so far.
    pub forward_passes: usize,
    /// The positions that became tokens at this step, left to right.
    pub committed: &'a [Commit],
    /// The block is complete and its tokens are final: the last state of every block. A
    /// generation that ends inside a block (end of text, token cap, full context) closes it with
    /// a final state whose remaining positions are still masks and never become text.
    pub is_final: bool,
}

/// Picks the mask token: an explicit id, else the tokenizer's (metadata or vocabulary spelling).
/// Refuses ids outside the vocabulary and ordinary text tokens, with what to do instead.
pub fn resolve_mask_id(tok: &Tokenizer, explicit: Option<u32>) -> Result<u32, EngineError> {
    let advice = "train the model with the DLM objective (dlm train) so it has a mask token, pass --mask-token-id, or use --mode ar";
    match explicit {
        Some(id) => {
            if id as usize >= tok.vocab_size() {
                return Err(EngineError::Mask(format!(
                    "--mask-token-id {id} is outside the vocabulary of {} tokens; {advice}",
                    tok.vocab_size()
                )));
            }
            if !tok.is_special(id) {
                return Err(EngineError::Mask(format!(
                    "--mask-token-id {id} is the ordinary text token {:?}: decoding with it would produce garbage; {advice}",
                    tok.token_text(id).unwrap_or("?")
                )));
            }
            Ok(id)
        }
        None => tok.mask_id().ok_or_else(|| {
            EngineError::Mask(format!(
                "this model has no mask token, so it cannot decode by block diffusion; {advice}"
            ))
        }),
    }
}

/// What the decoder needs from a model: one sequence's forward with block-causal attention over
/// new tokens after its cache. [`Model`] with a [`KvCache`] is the real one; tests script others.
pub trait BlockForward {
    /// Committed positions.
    fn cache_len(&self) -> usize;
    /// Most positions the sequence may hold.
    fn capacity(&self) -> usize;
    /// Runs `tokens` after the cache; appends their K/V when `commit`; returns the `logits` rows.
    fn forward(
        &mut self,
        tokens: &[u32],
        block_size: usize,
        commit: bool,
        logits: Logits,
    ) -> Result<Vec<f32>, EngineError>;
    /// Re-runs cached positions `at ..` with `tokens`, overwriting their K/V (sub-block cache).
    fn forward_in_place(
        &mut self,
        tokens: &[u32],
        at: usize,
        block_size: usize,
        logits: Logits,
    ) -> Result<Vec<f32>, EngineError>;
    /// Drops every cached position from `len` on.
    fn truncate(&mut self, len: usize);
}

/// A model and one sequence's cache.
pub struct ModelSequence<'a> {
    model: &'a Model,
    cache: KvCache,
}

impl<'a> ModelSequence<'a> {
    /// A fresh sequence of up to `capacity` positions.
    pub fn new(model: &'a Model, capacity: usize) -> Self {
        ModelSequence {
            model,
            cache: model.new_cache(capacity),
        }
    }
}

impl BlockForward for ModelSequence<'_> {
    fn cache_len(&self) -> usize {
        self.cache.len()
    }

    fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    fn forward(
        &mut self,
        tokens: &[u32],
        block_size: usize,
        commit: bool,
        logits: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        Ok(self.model.forward(
            &mut self.cache,
            &Batch {
                tokens,
                attention: Attention::BlockCausal { block_size },
                commit,
                logits,
            },
        )?)
    }

    fn forward_in_place(
        &mut self,
        tokens: &[u32],
        at: usize,
        block_size: usize,
        logits: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        let batch = Batch {
            tokens,
            attention: Attention::BlockCausal { block_size },
            commit: true,
            logits,
        };
        Ok(self.model.forward_in_place(&mut self.cache, &batch, at)?)
    }

    fn truncate(&mut self, len: usize) {
        self.cache.truncate(len);
    }
}

fn forward(
    f: &mut dyn BlockForward,
    tokens: &[u32],
    block_size: usize,
    commit: bool,
    logits: Logits,
    stats: &mut GenerationStats,
) -> Result<Vec<f32>, EngineError> {
    stats.forward_passes += 1;
    let rows = match &logits {
        Logits::None => 0,
        Logits::Last => 1,
        Logits::All => tokens.len(),
        Logits::Rows(r) => r.len(),
    };
    let out = f.forward(tokens, block_size, commit, logits)?;
    crate::check_logits(&out, rows)?;
    Ok(out)
}

/// Reports block states to `on_step`: counts them, collects the positions each step commits in a
/// buffer reused across steps, and closes the block left open when the generation ends.
struct Steps<'f> {
    on_step: &'f mut dyn FnMut(&BlockState),
    mask_id: u32,
    block_size: usize,
    small_block_size: usize,
    prompt_len: usize,
    step: usize,
    committed: Vec<Commit>,
    /// The start, index and sub-block of the last state reported, when its block is not final.
    open: Option<(usize, usize, (usize, usize))>,
}

impl Steps<'_> {
    /// Reports the block that the token just appended to `seq` starts (decided greedily by the
    /// prefill or the previous block's finalizing pass, without a confidence), before its text
    /// is streamed; nothing when the token is past the output's end `cap`.
    fn opened(&mut self, seq: &[u32], cap: usize, block_index: usize, forward_passes: usize) {
        let start = seq.len() - 1;
        if start >= cap {
            return;
        }
        self.committed.clear();
        self.committed.push(Commit {
            pos: 0,
            token: seq[start],
            confidence: None,
        });
        let sub_block = (0, self.small_block_size);
        self.report(seq, start, block_index, sub_block, forward_passes, false);
    }

    /// Reports the block at `start` (its first `block_size` positions of `seq`, masks past the
    /// end of `seq`, which only a block closed before it was filled has).
    fn report(
        &mut self,
        seq: &[u32],
        start: usize,
        block_index: usize,
        sub_block: (usize, usize),
        forward_passes: usize,
        is_final: bool,
    ) {
        self.step += 1;
        self.open = (!is_final).then_some((start, block_index, sub_block));
        let end = (start + self.block_size).min(seq.len());
        let padded;
        let tokens = if end - start == self.block_size {
            &seq[start..end]
        } else {
            let mut t = seq[start..end].to_vec();
            t.resize(self.block_size, self.mask_id);
            padded = t;
            &padded[..]
        };
        (self.on_step)(&BlockState {
            tokens,
            mask_id: self.mask_id,
            block_index,
            block_start: start,
            prompt_len_in_block: self.prompt_len.saturating_sub(start).min(self.block_size),
            sub_block,
            step: self.step,
            forward_passes,
            committed: &self.committed,
            is_final,
        });
    }

    /// At the end of a generation: a final state (committing nothing) for a block left open.
    fn close(&mut self, seq: &[u32], forward_passes: usize) {
        if let Some((start, index, sub_block)) = self.open {
            self.committed.clear();
            self.report(seq, start, index, sub_block, forward_passes, true);
        }
    }
}

/// Tracks the generated tokens that are final (no mask before them) and streams their text.
struct Output<'a> {
    stream: DecodeStream<'a>,
    stop: StopText,
    emitted: usize,
}

/// Generates with block diffusion, calling `on_text` as soon as a prefix of the output is final
/// (never text that can still change) and `on_step` with the block after every step.
#[allow(clippy::too_many_arguments)]
pub fn generate_dlm(
    model: &Model,
    tok: &Tokenizer,
    prompt: &[u32],
    mask_id: u32,
    params: &DlmParams,
    on_text: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(&BlockState),
) -> Result<Generation, EngineError> {
    params.validate().map_err(EngineError::Params)?;
    let capacity = params.capacity(prompt.len(), model.config.context_length)?;
    let mut seq = ModelSequence::new(model, capacity);
    decode_dlm(&mut seq, tok, prompt, mask_id, params, on_text, on_step)
}

/// The decoding loop over any [`BlockForward`].
pub fn decode_dlm(
    fwd: &mut dyn BlockForward,
    tok: &Tokenizer,
    prompt: &[u32],
    mask_id: u32,
    params: &DlmParams,
    on_text: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(&BlockState),
) -> Result<Generation, EngineError> {
    params.validate().map_err(EngineError::Params)?;
    if prompt.is_empty() {
        return Err(EngineError::Params(
            "the prompt is empty: it needs at least one token".into(),
        ));
    }
    let (b, s, threshold) = (params.block_size, params.small_block_size, params.threshold);
    let l0 = prompt.len();
    let mut sampler = Sampler::new(params.sampling.clone());
    let suppress = [mask_id];
    let eog = tok.eog_ids().to_vec();
    let mut stats = GenerationStats {
        prompt_tokens: l0,
        ..Default::default()
    };
    let mut out = Output {
        stream: DecodeStream::with_context(tok, true, prompt)?,
        stop: StopText::new(&params.stop),
        emitted: 0,
    };
    let cap = l0 + params.max_tokens;
    let mut steps = Steps {
        on_step,
        mask_id,
        block_size: b,
        small_block_size: s,
        prompt_len: l0,
        step: 0,
        committed: Vec::with_capacity(b),
        open: None,
    };

    let t0 = Instant::now();
    let mut seq: Vec<u32> = prompt.to_vec();
    let prefix = l0 / b * b;
    if prefix > 0 {
        // Block-causal prefill of the prompt's whole blocks (the reference skips it when the prompt
        // is exactly one block long and then never sees the prompt: fixed by using >=).
        let want = if l0 == prefix {
            Logits::Last
        } else {
            Logits::None
        };
        let mut logits = forward(fwd, &prompt[..prefix], b, true, want, &mut stats)?;
        if l0 == prefix && params.max_tokens > 0 {
            // The prompt ends on a block boundary: the first token is an autoregressive step.
            suppress_ids(&mut logits, &suppress);
            seq.push(greedy(&logits)?);
            steps.opened(&seq, cap, prefix / b, stats.forward_passes);
        }
        stats.prefill_seconds = t0.elapsed().as_secs_f64();
    }
    let t1 = Instant::now();

    let mut block_index = prefix / b;
    'blocks: loop {
        if done(&seq, l0, cap, mask_id, &eog) {
            break;
        }
        let lp = seq.len();
        if lp - lp % b + b > fwd.capacity() {
            break; // the context is full: finish with what is final
        }
        let fill = b - lp % b;
        seq.extend(std::iter::repeat_n(mask_id, fill));
        let start = seq.len() - b;
        debug_assert_eq!(start, fwd.cache_len());
        // With the sub-block cache, the cache may hold this block's (tentative) K/V after `start`.
        let mut block_cached = false;
        loop {
            if done(&seq, l0, cap, mask_id, &eog) {
                break 'blocks;
            }
            if !seq[start..].contains(&mask_id) {
                // Finalize: append the block's K/V; its last logit gives the next block's first token.
                if block_cached {
                    fwd.truncate(start);
                }
                let mut logits = forward(fwd, &seq[start..], b, true, Logits::Last, &mut stats)?;
                suppress_ids(&mut logits, &suppress);
                steps.committed.clear();
                let last_sub = (b - s, b);
                steps.report(
                    &seq,
                    start,
                    block_index,
                    last_sub,
                    stats.forward_passes,
                    true,
                );
                seq.push(greedy(&logits)?);
                block_index += 1;
                steps.opened(&seq, cap, block_index, stats.forward_passes);
                emit(&mut out, &seq, l0, cap, mask_id, &eog, on_text)?;
                break;
            }
            for lo in (0..b).step_by(s) {
                let hi = lo + s;
                loop {
                    let masked: Vec<usize> =
                        (lo..hi).filter(|&j| seq[start + j] == mask_id).collect();
                    if masked.is_empty() || done(&seq, l0, cap, mask_id, &eog) {
                        break;
                    }
                    // Token shift: position j is predicted by the logits of position j − 1
                    // (position 0 of a block by its own, as in the reference).
                    let mut logits = if params.use_block_cache
                        && block_cached
                        && seq[start + lo] != mask_id
                    {
                        // Only this sub-block's rows, against the stored block K/V; position
                        // lo is final here, so every masked j > lo reads row j − 1 of this call.
                        let rows: Vec<usize> = masked.iter().map(|&j| j - 1 - lo).collect();
                        stats.forward_passes += 1;
                        let n_rows = rows.len();
                        let out = fwd.forward_in_place(
                            &seq[start + lo..start + hi],
                            start + lo,
                            b,
                            Logits::Rows(rows),
                        )?;
                        crate::check_logits(&out, n_rows)?;
                        out
                    } else {
                        let rows: Vec<usize> =
                            masked.iter().map(|&j| j.saturating_sub(1)).collect();
                        if params.use_block_cache {
                            // A full pass that (re)stores the block's K/V.
                            if block_cached {
                                fwd.truncate(start);
                            }
                            block_cached = true;
                            forward(fwd, &seq[start..], b, true, Logits::Rows(rows), &mut stats)?
                        } else {
                            forward(fwd, &seq[start..], b, false, Logits::Rows(rows), &mut stats)?
                        }
                    };
                    let vocab = logits.len() / masked.len();
                    let mut choices = Vec::with_capacity(masked.len());
                    for (row, &j) in logits.chunks_exact_mut(vocab).zip(&masked) {
                        let choice = sampler.sample(row, &[], &suppress)?;
                        // Confidence = the plain softmax probability of the chosen token: what
                        // greedy sampling already computed (on the same row, at t = 1).
                        let conf = if params.sampling.temperature <= 0.0 {
                            choice.prob
                        } else {
                            softmax_prob(row, choice.token, 1.0)
                        };
                        choices.push((j, choice.token, conf));
                    }
                    // Total order: a NaN confidence (not reachable: logits are checked) could
                    // not make the choice depend on the row order.
                    let best = choices.iter().enumerate().fold(0, |bi, (i, c)| {
                        if c.2.total_cmp(&choices[bi].2).is_gt() {
                            i
                        } else {
                            bi
                        }
                    });
                    steps.committed.clear();
                    for (i, &(j, token, conf)) in choices.iter().enumerate() {
                        if conf > threshold || i == best {
                            seq[start + j] = token;
                            steps.committed.push(Commit {
                                pos: j,
                                token,
                                confidence: Some(conf),
                            });
                        }
                    }
                    let fp = stats.forward_passes;
                    steps.report(&seq, start, block_index, (lo, hi), fp, false);
                    emit(&mut out, &seq, l0, cap, mask_id, &eog, on_text)?;
                }
            }
        }
    }

    steps.close(&seq, stats.forward_passes);

    // The output: generated positions up to the first end-of-generation token, at most `max_tokens`.
    let mut tokens: Vec<u32> = seq[l0..seq.len().min(cap)].to_vec();
    let mut finish = FinishReason::Length;
    if let Some(stop_at) = tokens.iter().position(|t| eog.contains(t)) {
        tokens.truncate(stop_at);
        finish = FinishReason::Stop;
    }
    if let Some(m) = tokens.iter().position(|t| *t == mask_id) {
        tokens.truncate(m); // unreachable unless the context ran out mid-block
    }
    emit(&mut out, &seq, l0, cap, mask_id, &eog, on_text)?;
    if out.stop.stopped() {
        finish = FinishReason::Stop;
    } else {
        let rest = out.stream.finish()?;
        let mut shown = out.stop.push(&rest);
        shown.push_str(&out.stop.finish());
        if !shown.is_empty() {
            on_text(&shown);
        }
    }
    if out.stop.stopped() {
        // Tokens after the stop string are not returned either.
        tokens.truncate(out.emitted);
    }
    stats.decode_seconds = t1.elapsed().as_secs_f64();
    stats.generated_tokens = tokens.len();
    Ok(Generation {
        prompt: prompt.to_vec(),
        tokens,
        text: out.stop.text().to_string(),
        finish_reason: finish,
        stats,
    })
}

/// The argmax of a row whose suppressed tokens are −∞: an error when no token is left.
fn greedy(logits: &[f32]) -> Result<u32, EngineError> {
    match argmax(logits) {
        (_, l) if l == f32::NEG_INFINITY => Err(EngineError::NoCandidate),
        (token, _) => Ok(token),
    }
}

fn suppress_ids(logits: &mut [f32], ids: &[u32]) {
    for &i in ids {
        if let Some(l) = logits.get_mut(i as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Generation is over when every position up to the cap is final, or an end-of-generation token
/// is committed with no mask before it.
fn done(seq: &[u32], l0: usize, cap: usize, mask: u32, eog: &[u32]) -> bool {
    let gen = &seq[l0..seq.len().min(cap)];
    let final_len = gen.iter().position(|t| *t == mask).unwrap_or(gen.len());
    if gen[..final_len].iter().any(|t| eog.contains(t)) {
        return true;
    }
    final_len == gen.len() && seq.len() >= cap
}

/// Streams the newly final prefix of the output (up to the first mask, end of generation, or cap).
fn emit(
    out: &mut Output,
    seq: &[u32],
    l0: usize,
    cap: usize,
    mask: u32,
    eog: &[u32],
    on_text: &mut dyn FnMut(&str),
) -> Result<(), EngineError> {
    if out.stop.stopped() {
        return Ok(());
    }
    let gen = &seq[l0..seq.len().min(cap)];
    let final_len = gen
        .iter()
        .position(|t| *t == mask || eog.contains(t))
        .unwrap_or(gen.len());
    while out.emitted < final_len {
        let piece = out.stream.push(gen[out.emitted])?;
        out.emitted += 1;
        let shown = out.stop.push(&piece);
        if !shown.is_empty() {
            on_text(&shown);
        }
        if out.stop.stopped() {
            break;
        }
    }
    Ok(())
}
