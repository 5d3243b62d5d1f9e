//! What a block-diffusion step costs on this machine, in decode steps: the number a user needs
//! to know whether block diffusion can win (a model must commit more tokens per forward than a
//! block step costs in decode steps).

use std::time::Instant;

use model::{Attention, Batch, Logits, Model};

use crate::EngineError;

/// Measured cost of one block forward against one decode forward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockCost {
    /// Rows of the block forward.
    pub block_rows: usize,
    /// Rows of the block forward that get logits (the sub-block being decided).
    pub logit_rows: usize,
    /// Median milliseconds of a 1-row forward with logits (an autoregressive decode step).
    pub decode_ms: f64,
    /// Median milliseconds of the block forward.
    pub block_ms: f64,
}

impl BlockCost {
    /// The block forward's cost in decode steps: the tokens per forward block diffusion must
    /// commit to match autoregressive decoding.
    pub fn decode_steps(&self) -> f64 {
        self.block_ms / self.decode_ms.max(1e-9)
    }
}

/// Times `reps` 1-row forwards and `reps` forwards of `block_rows` rows (block-causal, logits
/// for the first `logit_rows`) after a context of `context` tokens, nothing committed; one
/// untimed warm-up each; medians. Token ids cycle through the vocabulary's first 100.
pub fn block_step_cost(
    model: &Model,
    block_rows: usize,
    logit_rows: usize,
    context: usize,
    reps: usize,
) -> Result<BlockCost, EngineError> {
    if block_rows == 0 || reps == 0 {
        return Err(EngineError::Params(
            "block_step_cost needs at least one row and one repetition".into(),
        ));
    }
    if context + block_rows > model.config.context_length {
        return Err(EngineError::Params(format!(
            "a probe of {context} context tokens and a {block_rows}-row block exceeds the \
             model's context of {} tokens",
            model.config.context_length
        )));
    }
    let vocab = model.config.vocab.max(1);
    let ids: Vec<u32> = (0..context + block_rows)
        .map(|i| (i % vocab.min(100)) as u32)
        .collect();
    let mut cache = model.new_cache(context + block_rows);
    let fwd = |cache: &mut model::KvCache, batch: &Batch| -> Result<(), EngineError> {
        model.forward(cache, batch)?;
        Ok(())
    };
    fwd(
        &mut cache,
        &Batch {
            tokens: &ids[..context],
            attention: Attention::Causal,
            commit: true,
            logits: Logits::None,
        },
    )?;
    let mut time = |batch: &Batch| -> Result<f64, EngineError> {
        let mut ms = Vec::with_capacity(reps);
        for i in 0..=reps {
            let t = Instant::now();
            fwd(&mut cache, batch)?;
            if i > 0 {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    };
    let decode_ms = time(&Batch {
        tokens: &ids[context..context + 1],
        attention: Attention::Causal,
        commit: false,
        logits: Logits::Last,
    })?;
    let block_ms = time(&Batch {
        tokens: &ids[context..context + block_rows],
        attention: Attention::BlockCausal {
            block_size: block_rows,
        },
        commit: false,
        logits: Logits::Rows((0..logit_rows.min(block_rows)).collect()),
    })?;
    Ok(BlockCost {
        block_rows,
        logit_rows,
        decode_ms,
        block_ms,
    })
}
