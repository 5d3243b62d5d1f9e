//! Cross-entropy from elementary ops, over the rows that have a target.
//!
//! The LM head is the largest matmul of a small model's step and most rows of a block-diffusion
//! batch are not supervised (only masked response tokens are), so the head runs only on the rows
//! whose target is not −100.

use candle_core::{Tensor, D};

use crate::error::{Result, TrainError};
use crate::model::TrainModel;

pub use crate::data::IGNORE;

/// Σ cross-entropy of `hidden: [n, hidden]` (pre-final-norm rows) against `targets` (one per row,
/// [`IGNORE`] = skipped), and the number of supervised rows. No supervised row gives a zero
/// scalar that still depends on nothing.
pub fn ce_sum(model: &TrainModel, hidden: &Tensor, targets: &[i64]) -> Result<(Tensor, usize)> {
    let n = hidden.dim(0)?;
    if targets.len() != n {
        return Err(TrainError::Config(format!(
            "{} targets for {n} rows",
            targets.len()
        )));
    }
    let vocab = model.config.vocab as i64;
    let mut rows = Vec::new();
    let mut tgt = Vec::new();
    for (i, &t) in targets.iter().enumerate() {
        if t == IGNORE {
            continue;
        }
        if t < 0 || t >= vocab {
            return Err(TrainError::Data(format!(
                "target token {t} is outside the vocabulary of {vocab}"
            )));
        }
        rows.push(i as u32);
        tgt.push(t as u32);
    }
    let device = model.device();
    if rows.is_empty() {
        return Ok((Tensor::zeros((), candle_core::DType::F32, device)?, 0));
    }
    let count = rows.len();
    let rows = Tensor::from_vec(rows, count, device)?;
    let tgt = Tensor::from_vec(tgt, (count, 1), device)?;
    let logits = model.logits(&hidden.index_select(&rows, 0)?)?;
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + m)?;
    let picked = logits.gather(&tgt, D::Minus1)?;
    Ok(((lse - picked)?.sum_all()?, count))
}
