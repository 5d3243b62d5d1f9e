//! AdamW with f32 moments, global gradient-norm clipping and the constant-with-warmup schedule
//! (PyTorch `torch.optim.AdamW` and `clip_grad_norm_`, HF `constant_with_warmup`).
//!
//! candle's own AdamW has no clipping or schedule and keeps moments in the parameter's dtype; this
//! one keeps the moments as named f32 tensors so a checkpoint can store and restore them exactly.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::{Result, TrainError};

/// AdamW hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Largest global gradient L2 norm (`None` or ≤ 0: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    /// The Fast-dLLM v2 recipe: lr 2e-5, betas 0.9/0.999, eps 1e-8, no weight decay, clip 1.0.
    fn default() -> Self {
        AdamWConfig {
            lr: 2e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
        }
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total` with `warmup` linear warmup steps
/// then constant (HF `get_constant_schedule_with_warmup`: `lr · min(1, (step) / warmup)`, and the
/// first update uses step 0 → lr 0 only when warmup > 0).
pub fn lr_at(lr: f64, step: u64, warmup: u64) -> f64 {
    if warmup == 0 || step >= warmup {
        lr
    } else {
        lr * step as f64 / warmup as f64
    }
}

/// Warmup steps for a ratio of the total (HF `math.ceil(total · ratio)`).
pub fn warmup_steps(total: u64, ratio: f64) -> u64 {
    (total as f64 * ratio).ceil() as u64
}

/// The optimizer: named parameters and their first and second moments.
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates applied so far (the bias-correction step count).
    pub t: u64,
}

/// What one update did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

impl AdamW {
    /// A fresh optimizer over `params` (zero moments).
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<AdamW> {
        let m = params
            .iter()
            .map(|(_, p)| p.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(AdamW {
            config,
            params,
            m,
            v,
            t: 0,
        })
    }

    /// The parameters, by name.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Applies one update with learning rate `lr` from the summed gradients `grads` (one per
    /// parameter, in [`AdamW::params`] order; `None` = no gradient this step, treated as zero).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<StepStats> {
        if grads.len() != self.params.len() {
            return Err(TrainError::Config(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let grad_norm = sq.sqrt();
        let clip = match self.config.max_grad_norm {
            Some(max) if max > 0.0 => (max / (grad_norm + 1e-6)).min(1.0),
            _ => 1.0,
        };
        self.t += 1;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        for (i, (_, p)) in self.params.iter().enumerate() {
            let g = match &grads[i] {
                Some(g) if clip < 1.0 => (g * clip)?,
                Some(g) => g.clone(),
                None => p.as_tensor().zeros_like()?,
            };
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let mut w = p.as_tensor().clone();
            if c.weight_decay != 0.0 {
                w = (w * (1.0 - lr * c.weight_decay))?;
            }
            let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
            let w = (w - (m.div(&denom)? * (lr / bc1))?)?;
            p.set(&w)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(StepStats { grad_norm, lr })
    }

    /// The moments as named tensors (`m.<param>`, `v.<param>`) for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] and the update count `t`.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for (i, (name, p)) in self.params.iter().enumerate() {
            for (key, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let k = format!("{key}.{name}");
                let s = state
                    .get(&k)
                    .ok_or_else(|| TrainError::Config(format!("optimizer state lacks `{k}`")))?;
                if s.dims() != p.dims() {
                    return Err(TrainError::Config(format!(
                        "optimizer state `{k}` has shape {:?}, the parameter {:?}",
                        s.dims(),
                        p.dims()
                    )));
                }
                *slot = s.to_device(p.device())?;
            }
        }
        self.t = t;
        Ok(())
    }
}
