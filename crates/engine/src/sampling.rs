//! Turning a row of logits into a token: repetition penalty, temperature, top-k, top-p, min-p,
//! seeded sampling; greedy when the temperature is 0.
//!
//! NaN policy: a NaN logit is never chosen (it is treated as −∞ before anything else), a +∞
//! logit takes all the probability mass (the lowest such id is chosen, with probability 1), and
//! a row with no logit above −∞ is [`EngineError::NoCandidate`]. The decoding loops refuse a
//! forward's non-finite logits before they get here ([`EngineError::NonFiniteLogits`]); this is
//! the policy for any other caller. Orderings use `total_cmp`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::EngineError;

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
    /// repetition penalty. NaN logits are never chosen (see the module's NaN policy); an error
    /// when no logit is above −∞.
    pub fn sample(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        suppress: &[u32],
    ) -> Result<Choice, EngineError> {
        for l in logits.iter_mut() {
            if l.is_nan() {
                *l = f32::NEG_INFINITY;
            }
        }
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
        let (best, max) = argmax(logits);
        if max == f32::NEG_INFINITY {
            return Err(EngineError::NoCandidate);
        }
        if max == f32::INFINITY {
            // exp(∞ − ∞) is NaN: an infinite logit simply takes all the mass.
            return Ok(Choice {
                token: best,
                prob: 1.0,
            });
        }
        if p.temperature <= 0.0 {
            return Ok(Choice {
                token: best,
                prob: softmax_prob(logits, best, 1.0),
            });
        }
        // Probabilities at the temperature, sorted by descending probability.
        let t = p.temperature;
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
        Ok(Choice { token, prob })
    }
}

/// Index and value of the largest logit (lowest index on ties). A NaN is never chosen (`>` is
/// false for it); `(0, −∞)` when no logit is above −∞ (an empty row included).
pub fn argmax(logits: &[f32]) -> (u32, f32) {
    let max = lane_max(logits);
    if max == f32::NEG_INFINITY {
        return (0, f32::NEG_INFINITY);
    }
    // The first logit equal to the max (−0 and +0 compare equal: the first of them, as a scan
    // with `>` keeps it).
    let i = logits
        .iter()
        .position(|&l| l == max)
        .expect("the max is one of the logits");
    (i as u32, logits[i])
}

/// The largest non-NaN value (−∞ for none), in sixteen independent lanes so that it
/// vectorizes (a vocabulary row is 10⁵ values, scanned once per decoded row).
fn lane_max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
        }
    }
    for &v in tail {
        m[0] = if v > m[0] { v } else { m[0] };
    }
    m.into_iter()
        .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
}

/// Softmax probability of `token` at temperature `t`: `e^((l_tok − max)/t) / Σ e^((l − max)/t)`
/// with the exponentials of [`quant::kernels::exp_sum`] (vectorized, within ~1e-6 of exact).
/// The max ignores NaN, but a NaN or +∞ logit makes the result NaN: callers pass rows without
/// them.
pub fn softmax_prob(logits: &[f32], token: u32, t: f32) -> f32 {
    let max = lane_max(logits);
    let total = quant::kernels::exp_sum(logits, max, t);
    let own = quant::kernels::exp_sum(&logits[token as usize..token as usize + 1], max, t);
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
        let c = s.sample(&mut logits, &[], &[]).unwrap();
        assert_eq!(c.token, 1);
        let want = 3f32.exp() / (1f32.exp() + 3f32.exp() + 2f32.exp());
        assert!((c.prob - want).abs() < 1e-6);
    }

    #[test]
    fn suppressed_tokens_are_never_chosen() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [1.0, 3.0, 2.0], &[], &[1]).unwrap().token, 2);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0)
        });
        let mut logits = vec![4.0, 3.0, -1.0];
        s.sample(&mut logits, &[0, 2, 0], &[]).unwrap();
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
                assert_eq!(
                    s.sample(&mut [0.0, 0.5, 0.2, 0.4], &[], &[]).unwrap().token,
                    1
                );
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
            .map(|_| s.sample(&mut logits.clone(), &[], &[]).unwrap().token)
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
            .map(|_| again.sample(&mut logits.clone(), &[], &[]).unwrap().token)
            .collect();
        assert_eq!(draws, replay);
    }

    #[test]
    fn nan_logits_are_never_chosen_greedy_or_sampled() {
        let nan = f32::NAN;
        // Greedy: the NaN at index 0 (where a `max_by(partial_cmp)` would panic or pick it) and
        // the one between the finite logits are skipped; the reported probability is finite.
        let mut s = Sampler::new(params(0.0));
        let c = s.sample(&mut [nan, 1.0, nan, 3.0, 2.0], &[], &[]).unwrap();
        assert_eq!(c.token, 3);
        let want = 3f32.exp() / (1f32.exp() + 3f32.exp() + 2f32.exp());
        assert!((c.prob - want).abs() < 1e-6, "{}", c.prob);
        // Sampling with top-k, top-p and min-p: over many draws only finite tokens come out,
        // with the proportions of the finite logits alone (0.2 / 0.8).
        for p in [
            params(1.0),
            SamplingParams {
                top_k: 2,
                ..params(1.0)
            },
            SamplingParams {
                top_p: 0.999,
                ..params(1.0)
            },
            SamplingParams {
                min_p: 0.1,
                ..params(1.0)
            },
        ] {
            let mut s = Sampler::new(p.clone());
            let mut counts = [0usize; 4];
            for _ in 0..4000 {
                let mut l = [nan, 0.0, nan, 4f32.ln()];
                let c = s.sample(&mut l, &[], &[]).unwrap();
                counts[c.token as usize] += 1;
                assert!(c.prob.is_finite(), "{p:?}");
            }
            assert_eq!((counts[0], counts[2]), (0, 0), "{p:?}");
            let f = counts[3] as f64 / 4000.0;
            assert!((f - 0.8).abs() < 0.03, "{p:?} {counts:?}");
        }
    }

    #[test]
    fn an_infinite_logit_takes_all_the_mass_and_a_row_without_candidates_is_an_error() {
        for t in [0.0, 0.7] {
            let mut s = Sampler::new(params(t));
            let c = s
                .sample(&mut [1.0, f32::INFINITY, 2.0, f32::INFINITY], &[], &[])
                .unwrap();
            assert_eq!((c.token, c.prob), (1, 1.0));
            // Every logit NaN or -inf, or the only finite one suppressed: no token to choose.
            for row in [vec![f32::NAN, f32::NAN], vec![f32::NEG_INFINITY, f32::NAN]] {
                let err = s.sample(&mut row.clone(), &[], &[]).unwrap_err();
                assert!(matches!(err, EngineError::NoCandidate), "{err}");
            }
            let err = s.sample(&mut [f32::NAN, 5.0], &[], &[1]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "no token can be sampled: every logit is NaN or -inf"
            );
        }
    }

    /// The vectorized argmax equals a plain scan with `>` (lowest index on ties, NaN skipped,
    /// the first of −0/+0), at every position of the lanes and the tail.
    #[test]
    fn argmax_equals_a_plain_scan() {
        let scan = |x: &[f32]| {
            let mut best = (0u32, f32::NEG_INFINITY);
            for (i, &l) in x.iter().enumerate() {
                if l > best.1 {
                    best = (i as u32, l);
                }
            }
            best
        };
        for len in [1usize, 15, 16, 17, 33, 1000] {
            for at in [0, len / 2, len - 1] {
                let mut x: Vec<f32> = (0..len).map(|i| ((i * 37) % 11) as f32 - 20.0).collect();
                x[at] = 3.0;
                x[len - 1 - at / 2] = 3.0;
                x[(at + 5) % len] = f32::NAN;
                let (i, v) = argmax(&x);
                let (j, w) = scan(&x);
                assert_eq!(
                    (i, v.to_bits()),
                    (j, w.to_bits()),
                    "{len} values, peak at {at}"
                );
            }
        }
        let signed = [-1.0, -0.0, 0.0, -0.0];
        assert_eq!(argmax(&signed), (1, -0.0));
        assert_eq!(argmax(&signed).1.to_bits(), (-0.0f32).to_bits());
    }

    /// `softmax_prob` is within 1e-6 of the f64 softmax, and the same for rows holding the same
    /// values in another order (the confidences of a diffusion step's rows tie exactly then).
    #[test]
    fn softmax_prob_is_accurate_and_does_not_depend_on_positions() {
        let row: Vec<f32> = (0..50_000)
            .map(|i| ((i * 7919) % 1009) as f32 / 97.0)
            .collect();
        let mut rotated = row.clone();
        rotated.rotate_left(12_345);
        let max = f64::from(row.iter().copied().fold(f32::MIN, f32::max));
        for (tok, t) in [(17u32, 1.0f32), (4_242, 0.6)] {
            let exact = {
                let e = |l: f32| ((f64::from(l) - max) / f64::from(t)).exp();
                e(row[tok as usize]) / row.iter().map(|&l| e(l)).sum::<f64>()
            };
            let p = softmax_prob(&row, tok, t);
            assert!(
                (f64::from(p) - exact).abs() <= 1e-6 * exact,
                "{p} vs {exact}"
            );
            let moved = (tok as usize + row.len() - 12_345) % row.len();
            assert_eq!(rotated[moved], row[tok as usize]);
            assert_eq!(
                softmax_prob(&rotated, moved as u32, t).to_bits(),
                p.to_bits()
            );
        }
    }

    #[test]
    fn argmax_skips_nan_and_reports_no_candidate_as_minus_infinity() {
        assert_eq!(argmax(&[f32::NAN, -1.0, f32::NAN, -0.5]), (3, -0.5));
        assert_eq!(argmax(&[2.0, 2.0, 1.0]), (0, 2.0));
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), (0, f32::NEG_INFINITY));
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
