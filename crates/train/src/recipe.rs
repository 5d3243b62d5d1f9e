//! The Fast-dLLM v2 training noise, attention mask and loss targets (§2.3–2.5 of the reference
//! notes) as plain functions over slices; the candle side only turns them into tensors.
//!
//! For a window `x` of `L` tokens with labels `y` ([`IGNORE`] where not supervised):
//!
//! ```text
//! per bd-block b:  t_b ~ U(0,1),  p_b = (1 − ε)·t_b + ε
//! per position i:  M_i = u_i < p_{i / bd},  u_i ~ U(0,1)
//! view(M):   noisy_i = MASK if M_i and y_i ≠ IGNORE else x_i        (prompt and padding never masked)
//!            lab_i   = y_i  if noisy_i = MASK else IGNORE            (only masked positions supervised)
//!            input   = [noisy | x]   (2L tokens, both halves at positions 0..L−1)
//! view(¬M):  the same with M negated (same t): every supervised token is masked in exactly one view
//! ```
//!
//! The model runs each view's `2L` input with [`block_diff_mask`] and computes logits for the noisy
//! half only; row `i` predicts `lab_{i+1}` (the token shift: [`View::targets`] is already shifted,
//! so the loss is a plain masked cross-entropy over rows). The DLM loss of an optimizer step is the
//! sum of the cross-entropies over every view of every window divided by the number of supervised
//! labels of the original windows ([`Views::n_supervised`], summed over the step) — no 1/t
//! weighting. The AR objective of the unified loss uses [`ar_targets`] on the clean window with a
//! causal mask, divided by its own number of targets.
//!
//! **Random numbers.** For each window, in this order: the `L / bd` block levels `t_b` (block
//! order), then the `L` position draws `u_i` (position order), each `rng.random::<f32>()`; with a
//! fixed `mask_prob` no `t_b` is drawn. The number of draws does not depend on the labels, so a
//! step's noise depends only on the rng state it starts from: [`step_rng`] gives every optimizer
//! step its own ChaCha8 stream from `(seed, step)`, and the trainer draws the views of the step's
//! windows in order from it, which makes a resumed run draw exactly the same masks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::TrainConfig;
use crate::data::{count_supervised, Window, IGNORE};
use crate::error::{Result, TrainError};

/// The additive value of a disallowed attention pair.
pub const DISALLOWED: f32 = f32::NEG_INFINITY;

/// Whether query `q` may attend to key `k` in the `2L` training sequence `[noisy | clean]` with
/// blocks of `bd` (§2.4): with `b(i) = (i mod L) / bd` and `c(i) = i ≥ L`,
///
/// ```text
/// allow(q,k) = (b(q) = b(k) and c(q) = c(k))        same block, same half
///           or (!c(q) and c(k) and b(q) > b(k))     noisy block sees clean blocks strictly before it
///           or (c(q) and c(k) and b(q) ≥ b(k))      clean half is block-causal
/// ```
pub fn block_diff_allowed(q: usize, k: usize, l: usize, bd: usize) -> bool {
    let b = |i: usize| (i % l) / bd;
    let c = |i: usize| i >= l;
    (b(q) == b(k) && c(q) == c(k))
        || (!c(q) && c(k) && b(q) > b(k))
        || (c(q) && c(k) && b(q) >= b(k))
}

/// The `2L × 2L` additive attention mask of [`block_diff_allowed`], row-major (row = query):
/// `0.0` where allowed, [`DISALLOWED`] elsewhere. Every row allows at least its own block.
pub fn block_diff_mask(l: usize, bd: usize) -> Vec<f32> {
    let n = 2 * l;
    let mut mask = Vec::with_capacity(n * n);
    for q in 0..n {
        for k in 0..n {
            mask.push(if block_diff_allowed(q, k, l, bd) {
                0.0
            } else {
                DISALLOWED
            });
        }
    }
    mask
}

/// The `L × L` additive causal mask of the AR objective (row = query): `0.0` for `k ≤ q`.
pub fn causal_mask(l: usize) -> Vec<f32> {
    let mut mask = Vec::with_capacity(l * l);
    for q in 0..l {
        for k in 0..l {
            mask.push(if k <= q { 0.0 } else { DISALLOWED });
        }
    }
    mask
}

/// The positions of the `2L` input: `0..L` for the noisy half and again for the clean half.
pub fn positions_2l(l: usize) -> Vec<u32> {
    (0..l as u32).chain(0..l as u32).collect()
}

/// How windows are noised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseConfig {
    /// Block size: one noise level per block of this many positions.
    pub bd: usize,
    /// The noise floor ε: p = (1 − ε)·t + ε.
    pub eps: f32,
    /// The mask token id.
    pub mask_id: u32,
    /// Whether to make the complementary view too.
    pub complementary: bool,
    /// `Some(p)`: a fixed mask probability for every block instead of the per-block t.
    pub mask_prob: Option<f32>,
}

impl NoiseConfig {
    /// The noise of `config` (`conversion.bd_size`, `training.eps`,
    /// `objectives.dlm.use_complementary_masks`, `objectives.dlm.mask_prob`) with the mask id the
    /// tokenizer settled on.
    pub fn from_config(config: &TrainConfig, mask_id: u32) -> NoiseConfig {
        let dlm = &config.objectives.dlm;
        NoiseConfig {
            bd: config.conversion.bd_size,
            eps: config.training.eps as f32,
            mask_id,
            complementary: dlm.use_complementary_masks,
            mask_prob: dlm.mask_prob.map(|p| p as f32),
        }
    }
}

/// One noised view of a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// `[noisy | clean]`: `2L` ids, the noisy half first.
    pub input_ids: Vec<u32>,
    /// `L` loss targets for the noisy half's logit rows, already shifted: `targets[i]` is the
    /// label of position `i + 1` when that position is masked and supervised, else [`IGNORE`]
    /// (always for the last row).
    pub targets: Vec<i64>,
}

impl View {
    /// The noisy half.
    pub fn noisy(&self) -> &[u32] {
        &self.input_ids[..self.targets.len()]
    }

    /// The number of rows with a target.
    pub fn n_targets(&self) -> usize {
        count_supervised(&self.targets)
    }
}

/// The views of one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Views {
    /// view(M), then view(¬M) when complementary.
    pub views: Vec<View>,
    /// The mask probability of each block.
    pub block_p: Vec<f32>,
    /// The window's supervised labels (before noising): its share of the loss normaliser.
    pub n_supervised: usize,
}

/// Draws the noise of `window` (see the module docs for the draw order) and builds its views.
/// The window's length must be a multiple of `noise.bd`.
pub fn sample_views(window: &Window, noise: &NoiseConfig, rng: &mut impl Rng) -> Result<Views> {
    let l = window.input_ids.len();
    if noise.bd == 0 || !l.is_multiple_of(noise.bd) || window.labels.len() != l {
        return Err(TrainError::Data(format!(
            "a window of {l} ids and {} labels is not whole blocks of {}",
            window.labels.len(),
            noise.bd
        )));
    }
    let n_blocks = l / noise.bd;
    let block_p: Vec<f32> = match noise.mask_prob {
        Some(p) => vec![p; n_blocks],
        None => (0..n_blocks)
            .map(|_| (1.0 - noise.eps) * rng.random::<f32>() + noise.eps)
            .collect(),
    };
    let m: Vec<bool> = (0..l)
        .map(|i| rng.random::<f32>() < block_p[i / noise.bd])
        .collect();

    let mut views = vec![make_view(window, &m, false, noise.mask_id)];
    if noise.complementary {
        views.push(make_view(window, &m, true, noise.mask_id));
    }
    Ok(Views {
        views,
        block_p,
        n_supervised: window.n_supervised(),
    })
}

/// view(M) (or view(¬M) with `negate`): supervised positions where the pattern holds become
/// MASK and are the only ones with targets.
fn make_view(window: &Window, m: &[bool], negate: bool, mask_id: u32) -> View {
    let l = window.input_ids.len();
    let mut input_ids = Vec::with_capacity(2 * l);
    let mut lab = Vec::with_capacity(l);
    for ((&id, &y), &mi) in window.input_ids.iter().zip(&window.labels).zip(m) {
        if y != IGNORE && mi != negate {
            input_ids.push(mask_id);
            lab.push(y);
        } else {
            input_ids.push(id);
            lab.push(IGNORE);
        }
    }
    input_ids.extend_from_slice(&window.input_ids);
    View {
        input_ids,
        targets: shift_left(&lab),
    }
}

/// `labels` shifted left by one: `out[i] = labels[i + 1]`, [`IGNORE`] for the last position
/// (transformers' `ForCausalLMLoss` shift).
pub fn shift_left(labels: &[i64]) -> Vec<i64> {
    labels
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(IGNORE))
        .take(labels.len())
        .collect()
}

/// The AR objective's targets for the logits of the clean window under a causal mask: the
/// shifted labels (every supervised position but the first, which nothing predicts).
pub fn ar_targets(window: &Window) -> Vec<i64> {
    shift_left(&window.labels)
}

/// The rng of optimizer step `step` in a run seeded with `seed`: ChaCha8 seeded with `seed` on
/// stream `step`, so any step's noise can be redrawn without replaying the ones before.
pub fn step_rng(seed: u64, step: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: i64 = IGNORE;
    const MASK: u32 = 99;

    fn noise(bd: usize, complementary: bool) -> NoiseConfig {
        NoiseConfig {
            bd,
            eps: 1e-3,
            mask_id: MASK,
            complementary,
            mask_prob: None,
        }
    }

    #[test]
    fn the_2l_mask_is_the_dossier_rule_written_out_by_hand() {
        // L = 8, bd = 4: noisy blocks N0 (0..4), N1 (4..8); clean blocks C0 (8..12), C1 (12..16).
        // N0 sees N0; N1 sees N1 and C0; C0 sees C0; C1 sees C0 and C1.
        #[rustfmt::skip]
        let allowed: [[u8; 16]; 16] = [
            //        N0          N1          C0          C1
            /* 0 */ [1,1,1,1,  0,0,0,0,  0,0,0,0,  0,0,0,0],
            /* 1 */ [1,1,1,1,  0,0,0,0,  0,0,0,0,  0,0,0,0],
            /* 2 */ [1,1,1,1,  0,0,0,0,  0,0,0,0,  0,0,0,0],
            /* 3 */ [1,1,1,1,  0,0,0,0,  0,0,0,0,  0,0,0,0],
            /* 4 */ [0,0,0,0,  1,1,1,1,  1,1,1,1,  0,0,0,0],
            /* 5 */ [0,0,0,0,  1,1,1,1,  1,1,1,1,  0,0,0,0],
            /* 6 */ [0,0,0,0,  1,1,1,1,  1,1,1,1,  0,0,0,0],
            /* 7 */ [0,0,0,0,  1,1,1,1,  1,1,1,1,  0,0,0,0],
            /* 8 */ [0,0,0,0,  0,0,0,0,  1,1,1,1,  0,0,0,0],
            /* 9 */ [0,0,0,0,  0,0,0,0,  1,1,1,1,  0,0,0,0],
            /*10 */ [0,0,0,0,  0,0,0,0,  1,1,1,1,  0,0,0,0],
            /*11 */ [0,0,0,0,  0,0,0,0,  1,1,1,1,  0,0,0,0],
            /*12 */ [0,0,0,0,  0,0,0,0,  1,1,1,1,  1,1,1,1],
            /*13 */ [0,0,0,0,  0,0,0,0,  1,1,1,1,  1,1,1,1],
            /*14 */ [0,0,0,0,  0,0,0,0,  1,1,1,1,  1,1,1,1],
            /*15 */ [0,0,0,0,  0,0,0,0,  1,1,1,1,  1,1,1,1],
        ];
        let mask = block_diff_mask(8, 4);
        assert_eq!(mask.len(), 256);
        for q in 0..16 {
            for k in 0..16 {
                let want = allowed[q][k] == 1;
                assert_eq!(block_diff_allowed(q, k, 8, 4), want, "allowed({q},{k})");
                let v = mask[q * 16 + k];
                if want {
                    assert_eq!(v, 0.0, "mask[{q}][{k}]");
                } else {
                    assert_eq!(v, f32::NEG_INFINITY, "mask[{q}][{k}]");
                }
            }
        }
    }

    #[test]
    fn causal_mask_and_positions() {
        let m = causal_mask(3);
        let n = f32::NEG_INFINITY;
        assert_eq!(m, vec![0.0, n, n, 0.0, 0.0, n, 0.0, 0.0, 0.0]);
        assert_eq!(positions_2l(3), vec![0, 1, 2, 0, 1, 2]);
    }

    /// A window of 8: prompt 10 11 12, response 13 14 15 16, one padding MASK.
    fn chat_window() -> Window {
        Window {
            input_ids: vec![10, 11, 12, 13, 14, 15, 16, MASK],
            labels: vec![I, I, I, 13, 14, 15, 16, I],
        }
    }

    #[test]
    fn complementary_views_mask_every_response_token_exactly_once() {
        let w = chat_window();
        for seed in 0..200 {
            let mut rng = step_rng(seed, 0);
            let v = sample_views(&w, &noise(4, true), &mut rng).unwrap();
            assert_eq!(v.views.len(), 2);
            assert_eq!(v.n_supervised, 4);
            let (a, b) = (&v.views[0], &v.views[1]);
            for (i, &id) in w.input_ids.iter().enumerate() {
                let masked = [a.noisy()[i] == MASK, b.noisy()[i] == MASK];
                if w.labels[i] == I {
                    // Prompt stays itself; padding is MASK in both views, unsupervised.
                    assert_eq!(
                        [a.noisy()[i], b.noisy()[i]],
                        [id, id],
                        "seed {seed} pos {i}"
                    );
                } else {
                    assert!(masked[0] ^ masked[1], "seed {seed} pos {i}: {masked:?}");
                }
            }
            for view in [a, b] {
                // The clean half is the window itself.
                assert_eq!(&view.input_ids[8..], &w.input_ids[..]);
                // targets[i] = label of i + 1 when masked, else IGNORE; the last row never.
                for i in 0..8 {
                    let want = if i + 1 < 8 && view.noisy()[i + 1] == MASK {
                        w.labels[i + 1]
                    } else {
                        I
                    };
                    assert_eq!(view.targets[i], want, "seed {seed} row {i}");
                }
            }
            // The two views together supervise each response token once (position 0 is never a
            // response token here, so every one of them has a row predicting it).
            assert_eq!(a.n_targets() + b.n_targets(), 4);
        }
    }

    #[test]
    fn a_hand_computed_view() {
        // Fixed mask probability 1: every supervised token is masked in view(M), none in view(¬M).
        let w = chat_window();
        let cfg = NoiseConfig {
            mask_prob: Some(1.0),
            ..noise(4, true)
        };
        let v = sample_views(&w, &cfg, &mut step_rng(1, 2)).unwrap();
        assert_eq!(v.block_p, vec![1.0, 1.0]);
        assert_eq!(
            v.views[0].input_ids,
            vec![10, 11, 12, MASK, MASK, MASK, MASK, MASK, 10, 11, 12, 13, 14, 15, 16, MASK]
        );
        assert_eq!(v.views[0].targets, vec![I, I, 13, 14, 15, 16, I, I]);
        assert_eq!(
            v.views[1].input_ids,
            vec![10, 11, 12, 13, 14, 15, 16, MASK, 10, 11, 12, 13, 14, 15, 16, MASK]
        );
        assert_eq!(v.views[1].targets, vec![I; 8]);
        assert_eq!(ar_targets(&w), vec![I, I, 13, 14, 15, 16, I, I]);
        // Without the complementary view only view(M) is made.
        let v = sample_views(
            &w,
            &NoiseConfig {
                complementary: false,
                ..cfg
            },
            &mut step_rng(1, 2),
        )
        .unwrap();
        assert_eq!(v.views.len(), 1);
    }

    #[test]
    fn the_noise_level_is_drawn_per_block() {
        // A fully supervised window of 4 blocks of 64: the masked fraction of each block follows
        // that block's own p, and the blocks' p differ.
        let bd = 64;
        let w = Window {
            input_ids: (1000..1256).collect(),
            labels: (1000..1256).collect(),
        };
        let mut rng = step_rng(7, 0);
        let mut spread = 0.0f32;
        for _ in 0..50 {
            let v = sample_views(&w, &noise(bd, false), &mut rng).unwrap();
            assert_eq!(v.block_p.len(), 4);
            for (b, &p) in v.block_p.iter().enumerate() {
                assert!((1e-3..=1.0).contains(&p));
                let masked = v.views[0].noisy()[b * bd..(b + 1) * bd]
                    .iter()
                    .filter(|&&id| id == MASK)
                    .count() as f32;
                // Binomial(64, p): 5 standard deviations plus slack.
                let sd = (bd as f32 * p * (1.0 - p)).sqrt();
                assert!(
                    (masked - bd as f32 * p).abs() <= 5.0 * sd + 1.0,
                    "p {p} masked {masked}"
                );
            }
            let max = v.block_p.iter().cloned().fold(0.0, f32::max);
            let min = v.block_p.iter().cloned().fold(1.0, f32::min);
            spread += max - min;
        }
        // Four U(0,1) draws span 0.6 on average; one shared t would span 0.
        assert!(spread / 50.0 > 0.3, "mean spread {}", spread / 50.0);
    }

    #[test]
    fn the_draw_order_is_t_per_block_then_u_per_position() {
        let w = chat_window();
        let v = sample_views(&w, &noise(4, true), &mut step_rng(3, 5)).unwrap();
        let mut rng = step_rng(3, 5);
        let t: Vec<f32> = (0..2).map(|_| rng.random::<f32>()).collect();
        let u: Vec<f32> = (0..8).map(|_| rng.random::<f32>()).collect();
        for (p, t) in v.block_p.iter().zip(&t) {
            assert_eq!(*p, (1.0 - 1e-3) * t + 1e-3);
        }
        for (i, u) in u.iter().enumerate().take(7).skip(3) {
            let masked = *u < v.block_p[i / 4];
            assert_eq!(v.views[0].noisy()[i] == MASK, masked, "pos {i}");
        }
        // Same (seed, step) → same views; another step → its own stream.
        let again = sample_views(&w, &noise(4, true), &mut step_rng(3, 5)).unwrap();
        assert_eq!(again, v);
        let mut a = step_rng(3, 5);
        let mut b = step_rng(3, 6);
        assert_ne!(a.random::<u64>(), b.random::<u64>());
    }

    #[test]
    fn a_fixed_mask_prob_masks_about_that_fraction() {
        let w = Window {
            input_ids: (1000..1512).collect(),
            labels: (1000..1512).collect(),
        };
        let cfg = NoiseConfig {
            mask_prob: Some(0.15),
            ..noise(32, true)
        };
        let v = sample_views(&w, &cfg, &mut step_rng(0, 0)).unwrap();
        assert!(v.block_p.iter().all(|&p| p == 0.15));
        let masked = v.views[0].noisy().iter().filter(|&&id| id == MASK).count();
        assert!((40..=115).contains(&masked), "{masked} of 512");
        let other = v.views[1].noisy().iter().filter(|&&id| id == MASK).count();
        assert_eq!(masked + other, 512);
    }

    #[test]
    fn bad_windows_are_errors() {
        let w = Window {
            input_ids: vec![1, 2, 3],
            labels: vec![1, 2, 3],
        };
        assert!(sample_views(&w, &noise(4, true), &mut step_rng(0, 0)).is_err());
        let w = Window {
            input_ids: vec![1, 2, 3, 4],
            labels: vec![1, 2, 3],
        };
        assert!(sample_views(&w, &noise(4, true), &mut step_rng(0, 0)).is_err());
        assert_eq!(shift_left(&[]), Vec::<i64>::new());
        assert_eq!(shift_left(&[5]), vec![I]);
    }
}
