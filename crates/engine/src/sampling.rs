//! Turning a row of logits into a token: repetition penalty, temperature, top-k, top-p, min-p,
//! seeded sampling; greedy when the temperature is 0.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Sampling settings (llama.cpp / OpenAI semantics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p ×` the best one's (0 = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of already seen tokens (1 = off).
    pub repetition_penalty: f32,
    /// RNG seed; `None` = from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Checks every value is in range; the message names the parameter.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// A sampler with its own RNG stream.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    probs: Vec<(u32, f32)>,
}

/// The chosen token and its probability under the (penalized, temperature-scaled) distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// Token id.
    pub token: u32,
    /// Its softmax probability (before top-k/top-p truncation; 1-hot argmax mass when greedy is
    /// still the plain softmax probability at temperature 1).
    pub prob: f32,
}

impl Sampler {
    /// A sampler for these settings.
    pub fn new(params: SamplingParams) -> Sampler {
        let seed = params.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Sampler {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
            probs: Vec::new(),
        }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token from `logits` (modified in place), never one of `suppress`; `history` feeds the
    /// repetition penalty.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32], suppress: &[u32]) -> Choice {
        for &s in suppress {
            if let Some(l) = logits.get_mut(s as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.temperature <= 0.0 {
            let (token, _) = argmax(logits);
            return Choice {
                token,
                prob: softmax_prob(logits, token, 1.0),
            };
        }
        // Probabilities at the temperature, sorted by descending probability.
        let t = p.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.probs.clear();
        let mut total = 0.0f64;
        for (i, l) in logits.iter().enumerate() {
            let e = ((l - max) / t).exp();
            if e > 0.0 {
                self.probs.push((i as u32, e));
                total += e as f64;
            }
        }
        for x in self.probs.iter_mut() {
            x.1 = (x.1 as f64 / total) as f32;
        }
        self.probs
            .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut keep = self.probs.len();
        if p.top_k > 0 {
            keep = keep.min(p.top_k);
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, (_, pr)) in self.probs[..keep].iter().enumerate() {
                acc += pr;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = self.probs[0].1 * p.min_p;
            keep = self.probs[..keep]
                .iter()
                .take_while(|(_, pr)| *pr >= floor)
                .count()
                .max(1);
        }
        let kept = &self.probs[..keep.max(1)];
        let mass: f32 = kept.iter().map(|(_, pr)| pr).sum();
        let mut r = self.rng.random::<f32>() * mass;
        // The kept tokens are a prefix of `probs`, whose values are the untruncated probabilities.
        let (mut token, mut prob) = kept[kept.len() - 1];
        for &(id, pr) in kept {
            if r < pr {
                (token, prob) = (id, pr);
                break;
            }
            r -= pr;
        }
        Choice { token, prob }
    }
}

/// Index and value of the largest logit (lowest index on ties).
pub fn argmax(logits: &[f32]) -> (u32, f32) {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > best.1 {
            best = (i as u32, l);
        }
    }
    best
}

/// Softmax probability of `token` at temperature `t`.
pub fn softmax_prob(logits: &[f32], token: u32, t: f32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|l| (((l - max) / t) as f64).exp()).sum();
    let own = (((logits[token as usize] - max) / t) as f64).exp();
    (own / total) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_the_argmax_and_reports_its_softmax_probability() {
        let mut s = Sampler::new(params(0.0));
        let mut logits = vec![1.0, 3.0, 2.0];
        let c = s.sample(&mut logits, &[], &[]);
        assert_eq!(c.token, 1);
        let want = 3f32.exp() / (1f32.exp() + 3f32.exp() + 2f32.exp());
        assert!((c.prob - want).abs() < 1e-6);
    }

    #[test]
    fn suppressed_tokens_are_never_chosen() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [1.0, 3.0, 2.0], &[], &[1]).token, 2);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0)
        });
        let mut logits = vec![4.0, 3.0, -1.0];
        s.sample(&mut logits, &[0, 2, 0], &[]);
        assert_eq!(logits, vec![2.0, 3.0, -2.0]);
    }

    #[test]
    fn top_k_1_and_tiny_top_p_and_min_p_are_greedy() {
        for p in [
            SamplingParams {
                top_k: 1,
                ..params(1.0)
            },
            SamplingParams {
                top_p: 0.01,
                ..params(1.0)
            },
            SamplingParams {
                min_p: 0.99,
                ..params(1.0)
            },
        ] {
            let mut s = Sampler::new(p);
            for _ in 0..50 {
                assert_eq!(s.sample(&mut [0.0, 0.5, 0.2, 0.4], &[], &[]).token, 1);
            }
        }
    }

    #[test]
    fn sampling_follows_the_distribution_and_is_reproducible() {
        let logits = vec![0.0f32, (2.0f32).ln(), (7.0f32).ln()]; // probabilities 0.1, 0.2, 0.7
        let mut s = Sampler::new(params(1.0));
        let mut counts = [0usize; 3];
        let n = 20_000;
        let draws: Vec<u32> = (0..n)
            .map(|_| s.sample(&mut logits.clone(), &[], &[]).token)
            .collect();
        for d in &draws {
            counts[*d as usize] += 1;
        }
        for (c, p) in counts.iter().zip([0.1, 0.2, 0.7]) {
            let f = *c as f64 / n as f64;
            assert!((f - p).abs() < 0.015, "{counts:?}");
        }
        let mut again = Sampler::new(params(1.0));
        let replay: Vec<u32> = (0..n)
            .map(|_| again.sample(&mut logits.clone(), &[], &[]).token)
            .collect();
        assert_eq!(draws, replay);
    }

    #[test]
    fn out_of_range_parameters_are_named() {
        assert!(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("temperature"));
        assert!(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("top_p"));
        assert!(SamplingParams {
            min_p: 2.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("min_p"));
    }
}
