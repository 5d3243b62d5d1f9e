//! The decoder forward over a run of new tokens, with causal or block-causal attention.
//!
//! A call processes `tokens` at positions `cache.len() ..`; every query sees all cached positions
//! plus the new positions its [`Attention`] rule allows. The new keys/values are appended to the
//! cache only when the batch says `commit` — Fast-dLLM v2 runs a block of masks against the exact
//! prefix cache many times and appends the block once it is decoded.

use quant::kernels::{attend, bitlinear_fake_quant, matmul, matmul_shared, AttnBuf};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cache::KvCache;
use crate::config::{Activation, RopeStyle};
use crate::error::{ModelError, Result};
use crate::weights::Linear;
use crate::Model;

/// Which new keys a new query may attend to (cached keys are always visible).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// Query at position p sees keys at positions ≤ p.
    Causal,
    /// Query in block `p / block_size` sees every key in blocks ≤ its own: bidirectional inside
    /// its block, causal across blocks.
    BlockCausal {
        /// Positions per block.
        block_size: usize,
    },
}

impl Attention {
    /// Whether a query at absolute position `q` may see a key at absolute position `k`.
    pub fn allows(self, q: usize, k: usize) -> bool {
        match self {
            Attention::Causal => k <= q,
            Attention::BlockCausal { block_size } => k / block_size <= q / block_size,
        }
    }
}

/// Which of the new positions need logits (the LM head is the largest matmul: skip unread rows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logits {
    /// No logits (prefill of a prefix).
    None,
    /// Only the last new position.
    Last,
    /// Every new position.
    All,
    /// These indices into the batch's tokens.
    Rows(Vec<usize>),
}

/// One forward call.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    /// New tokens, at positions `cache.len() ..`.
    pub tokens: &'a [u32],
    /// Attention rule among the new tokens.
    pub attention: Attention,
    /// Append the new keys/values to the cache.
    pub commit: bool,
    /// Which rows of logits to return.
    pub logits: Logits,
}

/// One sequence's part of a [`Model::forward_many`] call.
pub struct SeqBatch<'a, 'c> {
    /// The sequence's cache.
    pub cache: &'c mut KvCache,
    /// Its new tokens and what to do with them.
    pub batch: Batch<'a>,
    /// `Some(at)` re-runs cached positions `at ..` (see [`Model::forward_in_place`]); `None`
    /// runs the tokens after the cache.
    pub at: Option<usize>,
}

/// A checked item's rows in the concatenated batch.
struct Segment {
    item: usize,
    offset: usize,
    n: usize,
    start: usize,
    logit_rows: Vec<usize>,
}

/// Most query rows of one attention task: a task is one key/value head × up to `ATTN_ROWS`
/// rows of one sequence, i.e. `ATTN_ROWS × group` query vectors against the head's keys and
/// values in one [`attend`] call (32 for a BitNet-2B-shaped model: two 16-lane blocks).
const ATTN_ROWS: usize = 8;

/// Query vectors × visible positions of a whole layer below which its attention tasks run on
/// the calling thread (a short decode: too little work to hand to the pool).
const ATTN_SERIAL_WORK: usize = 1 << 12;

/// Keys and values a segment's rows attend to: this call's (`new`, rows of the batch) and the
/// sequence's cache (`cached`, by position), with (head dim, key/value width, query heads per
/// key/value head), the score scale, the segment's attention rule and its number of positions.
struct AttnKv<'a> {
    new: (&'a [f32], &'a [f32]),
    cached: (&'a [f32], &'a [f32]),
    dims: (usize, usize, usize),
    scale: f32,
    attention: Attention,
    total: usize,
}

/// Per-thread buffers of [`attend_rows`].
#[derive(Default)]
struct AttnScratch<'a> {
    keys: Vec<&'a [f32]>,
    vals: Vec<&'a [f32]>,
    queries: Vec<f32>,
    limits: Vec<usize>,
    buf: AttnBuf,
}

/// How many positions batch row `row` of segment `s` sees. Cached positions before the
/// segment's start are the prefix and always visible; the others follow the attention rule,
/// which for both rules allows every position up to a bound, so a row sees exactly the
/// positions `0..visible_len`.
fn visible_len(attention: Attention, s: &Segment, row: usize, total: usize) -> usize {
    let qpos = s.start + row - s.offset;
    let bound = match attention {
        Attention::Causal => qpos + 1,
        Attention::BlockCausal { block_size } => (qpos / block_size + 1) * block_size,
    };
    bound.min(total)
}

/// One attention task: key/value head `kh` for batch rows `rows` of segment `s` (`out`: per
/// row, the outputs of the head's group of query heads, consecutive). The rows' query vectors
/// go to [`attend`] together, each seeing its row's visible positions; a position is read from
/// this call's keys/values when it is one of the new ones, else from the cache.
fn attend_rows<'a>(
    q: &[f32],
    s: &Segment,
    rows: std::ops::Range<usize>,
    kh: usize,
    kv: &AttnKv<'a>,
    scratch: &mut AttnScratch<'a>,
    out: &mut [f32],
) {
    let (hd, kvd, group) = kv.dims;
    // Query width: every key/value head's group of query heads.
    let (gd, qd) = (group * hd, group * kvd);
    let AttnScratch {
        keys,
        vals,
        queries,
        limits,
        buf,
    } = scratch;
    queries.clear();
    limits.clear();
    for row in rows {
        queries.extend_from_slice(&q[row * qd + kh * gd..row * qd + (kh + 1) * gd]);
        let l = visible_len(kv.attention, s, row, kv.total);
        limits.extend(std::iter::repeat_n(l, group));
    }
    let seen = limits.iter().copied().max().unwrap_or(0);
    keys.clear();
    vals.clear();
    for p in 0..seen {
        let (src, r) = if p >= s.start && p < s.start + s.n {
            (kv.new, s.offset + p - s.start)
        } else {
            (kv.cached, p)
        };
        let at = r * kvd + kh * hd..r * kvd + (kh + 1) * hd;
        keys.push(&src.0[at.clone()]);
        vals.push(&src.1[at]);
    }
    attend(queries, limits, keys, vals, kv.scale, buf, out);
}

/// An attention task `(key/value head, segment, batch rows)` of `Model::run`: its outputs,
/// rows × the head's group of query heads.
fn attend_task<'a>(
    q: &[f32],
    segs: &[Segment],
    kvs: &[AttnKv<'a>],
    scratch: &mut AttnScratch<'a>,
    (kh, si, rows): &(usize, usize, std::ops::Range<usize>),
) -> Vec<f32> {
    let (hd, _, group) = kvs[*si].dims;
    let mut out = vec![0.0f32; rows.len() * group * hd];
    attend_rows(
        q,
        &segs[*si],
        rows.clone(),
        *kh,
        &kvs[*si],
        scratch,
        &mut out,
    );
    out
}

/// Keeps the pool's other threads awake during one forward pass.
///
/// A forward alternates parallel sections (the matmuls) with short serial ones (attention of a
/// decode step, norms, activation quantization). Rayon puts an idle worker to sleep after a few
/// microseconds, and waking it costs ~20 µs on our 2-core VM (a 2 × 10 µs `join` takes 11 µs
/// back to back but 31–37 µs after a serial gap of 20 µs or more); a decode step has ~150 such
/// sections. So while a forward runs on a pool thread, every *other* thread of the pool runs a
/// broadcast job that takes the pool's pending work (`rayon::yield_now`) and spins in between,
/// until the guard is dropped or it has found no work for [`KEEP_AWAKE_IDLE`] (so a thread that
/// picked the job up while waiting inside its own `join` is never held long). The forward's own
/// thread returns from its copy at once. Nothing is started when the caller is not a pool thread
/// (a test calling the model directly) or the pool has one thread.
struct KeepAwake(Option<Arc<AtomicBool>>);

/// How long a keep-awake job spins without finding work before it gives up (serial gaps in a
/// forward are tens to hundreds of microseconds; a preempted vCPU can add a few milliseconds).
const KEEP_AWAKE_IDLE: std::time::Duration = std::time::Duration::from_millis(10);

impl KeepAwake {
    fn start() -> KeepAwake {
        let Some(me) = rayon::current_thread_index() else {
            return KeepAwake(None);
        };
        if rayon::current_num_threads() < 2 {
            return KeepAwake(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        rayon::spawn_broadcast(move |ctx| {
            if ctx.index() == me {
                return;
            }
            let mut last_work = std::time::Instant::now();
            while !flag.load(Ordering::Acquire) {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    last_work = std::time::Instant::now();
                } else if last_work.elapsed() > KEEP_AWAKE_IDLE {
                    return;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        KeepAwake(Some(stop))
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        if let Some(stop) = &self.0 {
            stop.store(true, Ordering::Release);
        }
    }
}

/// Rows from which RoPE runs a row per task on the pool (each row computes its angle table:
/// `rope_dims / 2` `sin_cos` calls).
const PAR_ROPE_ROWS: usize = 4;

/// Elementwise work of at least this many values runs on the pool, a row per task; below it the
/// calling thread does it (a fork-join costs more than a decode row's work). Rows are computed
/// the same way either way.
const PAR_ELEMENTWISE: usize = 1 << 16;

/// Runs `f` on each pair of `row_len` rows of `a` and `b` (of equal row counts): in parallel for
/// large calls (see [`PAR_ELEMENTWISE`]).
fn for_rows<A: Send, B: Sync>(
    a: &mut [A],
    a_len: usize,
    b: &[B],
    b_len: usize,
    f: impl Fn(&mut [A], &[B]) + Sync + Send,
) {
    if a.len() >= PAR_ELEMENTWISE {
        a.par_chunks_mut(a_len)
            .zip(b.par_chunks(b_len))
            .for_each(|(a, b)| f(a, b));
    } else {
        a.chunks_mut(a_len)
            .zip(b.chunks(b_len))
            .for_each(|(a, b)| f(a, b));
    }
}

/// `Σ v²` over `row`, in sixteen lanes (element `i` into lane `i % 16`, the lanes then added in
/// order): a fixed order that vectorizes, where one running sum was a chain of dependent adds
/// (3–9 µs per 2560–6912-wide row; a layer normalizes every row two to four times).
fn sum_squares(row: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i] * c[i];
        }
    }
    for (a, v) in acc.iter_mut().zip(tail) {
        *a += v * v;
    }
    acc.iter().sum()
}

fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for_rows(out, d, x, d, |o, row| {
        let ss = sum_squares(row) / d as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(row).zip(w) {
            *o = v * inv * w;
        }
    });
}

fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    let norm = |row: &mut [f32]| {
        let ss = sum_squares(row) / d as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for (v, w) in row.iter_mut().zip(w) {
            *v = *v * inv * w;
        }
    };
    if x.len() >= PAR_ELEMENTWISE {
        x.par_chunks_exact_mut(d).for_each(norm);
    } else {
        x.chunks_exact_mut(d).for_each(norm);
    }
}

fn add_bias(x: &mut [f32], bias: &Option<Vec<f32>>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}

impl Model {
    /// `outs[i] = ws[i]·x` for `n` rows of matrices that read the same `x`, applying BitLinear
    /// input quantization where the model needs it (the I2_S kernel quantizes its input itself,
    /// with the same rule). Matrices of one type and width share one call
    /// (`quant::kernels::matmul_shared`: one quantization of `x`, one parallel section); others
    /// get one call each, with the same results. Each output is resized to `n × rows` and
    /// overwritten whole, so the caller can reuse its buffers from layer to layer.
    fn linear_into<const N: usize>(
        &self,
        ws: [&Linear; N],
        x: &[f32],
        n: usize,
        outs: [&mut Vec<f32>; N],
    ) {
        let (ty, cols) = (ws[0].info.ggml_type, ws[0].cols);
        let mut outs = outs;
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            out.resize(n * w.rows, 0.0);
        }
        let fake_quant = |ty: gguf::GgmlType, cols: usize| -> Option<Vec<f32>> {
            (self.config.bitlinear && ty != gguf::GgmlType::I2_S).then(|| {
                let mut xq = x.to_vec();
                bitlinear_fake_quant(&mut xq, cols);
                xq
            })
        };
        if ws.iter().any(|w| w.info.ggml_type != ty || w.cols != cols) {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                let xq = fake_quant(w.info.ggml_type, w.cols);
                matmul(&w.matrix(&self.file), xq.as_deref().unwrap_or(x), n, out);
            }
            return;
        }
        let mats = ws.map(|w| w.matrix(&self.file));
        let mut slices: Vec<&mut [f32]> = outs.into_iter().map(|o| o.as_mut_slice()).collect();
        let xq = fake_quant(ty, cols);
        matmul_shared(&mats, xq.as_deref().unwrap_or(x), n, &mut slices);
    }

    /// Embedding rows for the tokens.
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let e = &self.weights.token_embd;
        let h = self.config.hidden;
        let ty = e.info.ggml_type;
        let row_bytes = ty.nbytes(h as u64, h as u64).unwrap_or(0) as usize;
        let data = self.file.tensor_data(&e.info);
        let mut x = vec![0.0; tokens.len() * h];
        for (t, out) in tokens.iter().zip(x.chunks_exact_mut(h)) {
            let t = *t as usize;
            if t >= self.config.vocab {
                return Err(ModelError::Request(format!(
                    "token id {t} is outside the vocabulary of {}",
                    self.config.vocab
                )));
            }
            let row = &data[t * row_bytes..(t + 1) * row_bytes];
            out.copy_from_slice(&quant::dequantize(ty, row, h, h)?);
        }
        Ok(x)
    }

    /// Rotates pairs of dimensions of every head of `q` (`n` rows of `nh × head_dim`) and `k`
    /// (`n` rows of `nkv × head_dim`), row `i` at position `start + i`.
    fn rope(&self, q: &mut [f32], nh: usize, k: &mut [f32], nkv: usize, start: usize) {
        let hd = self.config.head_dim;
        let half = self.config.rope_dims / 2;
        let style = self.config.rope_style;
        let rotate = |row: &mut [f32], table: &[(f32, f32)]| {
            for head in row.chunks_exact_mut(hd) {
                for (j, &(sin, cos)) in table.iter().enumerate() {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                        RopeStyle::Neox => (j, j + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos - x1 * sin;
                    head[b] = x0 * sin + x1 * cos;
                }
            }
        };
        // The angles depend on the position and the pair only: one table per row, shared by
        // every query and key head of the row.
        let row = |(i, (q, k)): (usize, (&mut [f32], &mut [f32]))| {
            let pos = (start + i) as f32;
            let table: Vec<(f32, f32)> =
                self.inv_freq.iter().map(|f| (pos * f).sin_cos()).collect();
            rotate(q, &table);
            rotate(k, &table);
        };
        let rows = q
            .chunks_exact_mut(nh * hd)
            .zip(k.chunks_exact_mut(nkv * hd));
        if rows.len() >= PAR_ROPE_ROWS {
            q.par_chunks_exact_mut(nh * hd)
                .zip(k.par_chunks_exact_mut(nkv * hd))
                .enumerate()
                .for_each(row);
        } else {
            rows.enumerate().for_each(row);
        }
    }

    /// Runs the decoder over `batch.tokens` at positions `cache.len() ..` and returns the
    /// selected logits rows (`rows × vocab`, row-major, in the order requested).
    pub fn forward(&self, cache: &mut KvCache, batch: &Batch) -> Result<Vec<f32>> {
        self.run_one(SeqBatch {
            cache,
            batch: batch.clone(),
            at: None,
        })
    }

    /// Re-runs positions `at .. at + n` that are already in the cache (Fast-dLLM's sub-block
    /// "DualCache"): the new tokens attend to every cached position (the cache's own entries for
    /// the positions outside this call, possibly stale, as the reference does) under
    /// `batch.attention`, and their keys/values overwrite the cache's when `batch.commit`.
    pub fn forward_in_place(
        &self,
        cache: &mut KvCache,
        batch: &Batch,
        at: usize,
    ) -> Result<Vec<f32>> {
        self.run_one(SeqBatch {
            cache,
            batch: batch.clone(),
            at: Some(at),
        })
    }

    fn run_one(&self, item: SeqBatch) -> Result<Vec<f32>> {
        let mut items = [item];
        self.forward_many(&mut items)
            .pop()
            .expect("one result per item")
    }

    /// Runs several sequences' new tokens in one pass: the matrix multiplications see every
    /// sequence's rows at once (that is what makes serving concurrent requests cheaper than
    /// running them one by one); attention stays within each sequence and its own cache.
    /// Returns one result per item, in order; an item that fails its checks gets its error and
    /// leaves its cache untouched without affecting the others.
    pub fn forward_many(&self, items: &mut [SeqBatch]) -> Vec<Result<Vec<f32>>> {
        let mut results: Vec<Result<Vec<f32>>> = Vec::with_capacity(items.len());
        let mut segs: Vec<Segment> = Vec::new();
        let mut embeddings: Vec<f32> = Vec::new();
        let mut rows_total = 0;
        for (idx, item) in items.iter().enumerate() {
            match self
                .check(item)
                .and_then(|rows| Ok((rows, self.embed(item.batch.tokens)?)))
            {
                Ok((logit_rows, x)) => {
                    let n = item.batch.tokens.len();
                    segs.push(Segment {
                        item: idx,
                        offset: rows_total,
                        n,
                        start: item.at.unwrap_or(item.cache.len()),
                        logit_rows,
                    });
                    rows_total += n;
                    embeddings.extend_from_slice(&x);
                    results.push(Ok(Vec::new()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if segs.is_empty() {
            return results;
        }
        // Hand each segment its rows, last first: the first segment (the only one of a
        // single-sequence forward) keeps the buffer itself, uncopied.
        let mut logits = self.run(items, &segs, embeddings);
        let vocab = self.config.vocab;
        for seg in segs.iter().rev() {
            let start = logits.len() - seg.logit_rows.len() * vocab;
            results[seg.item] = Ok(match start {
                0 => std::mem::take(&mut logits),
                _ => logits.split_off(start),
            });
        }
        results
    }

    /// Checks one item against its cache and returns the batch rows that want logits.
    fn check(&self, item: &SeqBatch) -> Result<Vec<usize>> {
        let batch = &item.batch;
        let n = batch.tokens.len();
        if n == 0 {
            return Err(ModelError::Request(
                "a forward needs at least one token".into(),
            ));
        }
        let start = match item.at {
            None => item.cache.len(),
            Some(at) => {
                if at + n > item.cache.len() {
                    return Err(ModelError::Request(format!(
                        "positions {at}..{} are not all in the cache of {} positions",
                        at + n,
                        item.cache.len()
                    )));
                }
                at
            }
        };
        if start + n > item.cache.capacity() {
            return Err(ModelError::Request(format!(
                "{} positions exceed the context of {} tokens",
                start + n,
                item.cache.capacity()
            )));
        }
        if let Attention::BlockCausal { block_size: 0 } = batch.attention {
            return Err(ModelError::Request("block size must be positive".into()));
        }
        Ok(match &batch.logits {
            Logits::None => Vec::new(),
            Logits::Last => vec![n - 1],
            Logits::All => (0..n).collect(),
            Logits::Rows(r) => {
                if let Some(bad) = r.iter().find(|i| **i >= n) {
                    return Err(ModelError::Request(format!(
                        "logits row {bad} is outside the batch of {n}"
                    )));
                }
                r.clone()
            }
        })
    }

    /// The layers over the checked segments' rows (`x` = their embeddings, concatenated);
    /// returns the requested logits rows of every segment, concatenated in segment order.
    fn run(&self, items: &mut [SeqBatch], segs: &[Segment], mut x: Vec<f32>) -> Vec<f32> {
        let _awake = KeepAwake::start();
        let cfg = &self.config;
        let n: usize = segs.iter().map(|s| s.n).sum();
        let (h, hd, nh, nkv) = (cfg.hidden, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads);
        let (qd, kvd, group) = (nh * hd, cfg.kv_dim(), cfg.group());
        let scale = 1.0 / (hd as f32).sqrt();
        let gd = group * hd;

        let mut a = vec![0.0; n * h];
        // The layers' intermediate values: allocated once per forward and overwritten whole by
        // every layer (fresh multi-megabyte buffers per layer cost page faults and zeroing).
        let (mut q, mut k, mut v, mut o) = (Vec::new(), Vec::new(), Vec::new(), vec![0.0; n * qd]);
        let (mut attn, mut g, mut u, mut down) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (li, layer) in self.weights.layers.iter().enumerate() {
            rms_norm_rows(&x, &layer.attn_norm, cfg.eps, &mut a);
            let qkv = [&layer.wq, &layer.wk, &layer.wv];
            self.linear_into(qkv, &a, n, [&mut q, &mut k, &mut v]);
            add_bias(&mut q, &layer.bq);
            add_bias(&mut k, &layer.bk);
            add_bias(&mut v, &layer.bv);
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                rms_norm_in_place(&mut q, qn, cfg.eps);
                rms_norm_in_place(&mut k, kn, cfg.eps);
            }
            for s in segs {
                self.rope(
                    &mut q[s.offset * qd..(s.offset + s.n) * qd],
                    nh,
                    &mut k[s.offset * kvd..(s.offset + s.n) * kvd],
                    nkv,
                    s.start,
                );
            }

            // Attention: per key/value head and run of up to ATTN_ROWS rows of one sequence, the
            // rows × group query vectors against the positions they see, in one `attend` call
            // (its keys and values read once for all of them). A query's result does not
            // depend on this split, so the tasks are cut for speed only.
            // Every row × head of `o` is written below.
            {
                let kvs: Vec<AttnKv> = segs
                    .iter()
                    .map(|s| {
                        let c = &items[s.item].cache;
                        let (ck, cv) = c.layer(li);
                        AttnKv {
                            new: (&k, &v),
                            cached: (ck, cv),
                            dims: (hd, kvd, group),
                            scale,
                            attention: items[s.item].batch.attention,
                            total: c.len().max(s.start + s.n),
                        }
                    })
                    .collect();
                let tasks: Vec<(usize, usize, std::ops::Range<usize>)> = (0..nkv)
                    .flat_map(|kh| {
                        segs.iter().enumerate().flat_map(move |(si, s)| {
                            (s.offset..s.offset + s.n)
                                .step_by(ATTN_ROWS)
                                .map(move |r| (kh, si, r..(r + ATTN_ROWS).min(s.offset + s.n)))
                        })
                    })
                    .collect();
                let work: usize = segs.iter().zip(&kvs).map(|(s, kv)| s.n * kv.total).sum();
                let outputs: Vec<Vec<f32>> = if work * nh < ATTN_SERIAL_WORK {
                    let mut scratch = AttnScratch::default();
                    tasks
                        .iter()
                        .map(|t| attend_task(&q, segs, &kvs, &mut scratch, t))
                        .collect()
                } else {
                    tasks
                        .par_iter()
                        .map_init(AttnScratch::default, |scratch, t| {
                            attend_task(&q, segs, &kvs, scratch, t)
                        })
                        .collect()
                };
                for ((kh, _, rows), out) in tasks.iter().zip(&outputs) {
                    for (row, src) in rows.clone().zip(out.chunks_exact(gd)) {
                        o[row * qd + kh * gd..row * qd + (kh + 1) * gd].copy_from_slice(src);
                    }
                }
            }
            for s in segs {
                let item = &mut items[s.item];
                if item.batch.commit {
                    let (kr, vr) = (
                        &k[s.offset * kvd..(s.offset + s.n) * kvd],
                        &v[s.offset * kvd..(s.offset + s.n) * kvd],
                    );
                    match item.at {
                        None => item.cache.append(li, kr, vr),
                        Some(at) => item.cache.overwrite(li, at, kr, vr),
                    }
                }
            }
            if let Some(sub) = &layer.attn_sub_norm {
                rms_norm_in_place(&mut o, sub, cfg.eps);
            }
            self.linear_into([&layer.wo], &o, n, [&mut attn]);
            for_rows(&mut x, h, &attn, h, |x, a| {
                for (x, a) in x.iter_mut().zip(a) {
                    *x += a;
                }
            });

            rms_norm_rows(&x, &layer.ffn_norm, cfg.eps, &mut a);
            self.linear_into([&layer.w_gate, &layer.w_up], &a, n, [&mut g, &mut u]);
            let ffn = layer.w_gate.rows;
            let act = cfg.activation;
            for_rows(&mut g, ffn, &u, ffn, |g, u| match act {
                Activation::Silu => quant::kernels::silu_mul(g, u),
                Activation::Relu2 => {
                    for (g, u) in g.iter_mut().zip(u) {
                        let r = g.max(0.0);
                        *g = r * r * u;
                    }
                }
            });
            if let Some(sub) = &layer.ffn_sub_norm {
                rms_norm_in_place(&mut g, sub, cfg.eps);
            }
            self.linear_into([&layer.w_down], &g, n, [&mut down]);
            for_rows(&mut x, h, &down, h, |x, d| {
                for (x, d) in x.iter_mut().zip(d) {
                    *x += d;
                }
            });
        }
        for s in segs {
            let item = &mut items[s.item];
            if item.batch.commit && item.at.is_none() {
                item.cache.advance(s.n);
            }
        }

        let rows: Vec<usize> = segs
            .iter()
            .flat_map(|s| s.logit_rows.iter().map(move |r| s.offset + r))
            .collect();
        if rows.is_empty() {
            return Vec::new();
        }
        let mut sel = vec![0.0; rows.len() * h];
        for (dst, &r) in sel.chunks_exact_mut(h).zip(&rows) {
            dst.copy_from_slice(&x[r * h..(r + 1) * h]);
        }
        rms_norm_in_place(&mut sel, &self.weights.output_norm, cfg.eps);
        let mut logits = vec![0.0; rows.len() * cfg.vocab];
        matmul(
            &self.weights.output.matrix(&self.file),
            &sel,
            rows.len(),
            &mut logits,
        );
        logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time so far of the threads called `name`, in clock ticks (Linux:
    /// `/proc/self/task/*/stat` utime + stime).
    #[cfg(target_os = "linux")]
    fn cpu_ticks(name: &str) -> u64 {
        let mut total = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // Fields after the command name (in parentheses).
            let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
                .split_whitespace()
                .collect();
            total += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        }
        total
    }

    /// The keep-awake job spins on the pool's other thread while the guard lives and the
    /// forward keeps handing out work (serial gaps of 1 ms here), stops when the guard is
    /// dropped, and gives up by itself when no work comes; the forward's own thread never runs
    /// it (its `join`s complete); nothing spins for a caller outside the pool.
    #[cfg(target_os = "linux")]
    #[test]
    fn keep_awake_spins_only_while_a_forward_runs() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .thread_name(|_| "awake-test".into())
            .build()
            .unwrap();
        let gap = std::time::Duration::from_millis(1);
        let busy = |d: std::time::Duration| {
            let t = std::time::Instant::now();
            while t.elapsed() < d {
                std::hint::spin_loop();
            }
        };
        let ms = std::time::Duration::from_millis;
        let (alive, after, idle) = pool.install(|| {
            let guard = KeepAwake::start();
            assert!(guard.0.is_some());
            let t0 = cpu_ticks("awake-test");
            // A forward's rhythm for ~300 ms: a short parallel section, then a serial gap spent
            // sleeping (so that only the helper burns CPU time meanwhile).
            for _ in 0..300 {
                rayon::join(|| busy(gap / 20), || busy(gap / 20));
                std::thread::sleep(gap);
            }
            let alive = cpu_ticks("awake-test") - t0;
            drop(guard);
            std::thread::sleep(ms(50));
            let t1 = cpu_ticks("awake-test");
            std::thread::sleep(ms(300));
            let after = cpu_ticks("awake-test") - t1;
            // A guard alive with no work at all: the helper gives up after KEEP_AWAKE_IDLE.
            let guard = KeepAwake::start();
            std::thread::sleep(ms(50));
            let t2 = cpu_ticks("awake-test");
            std::thread::sleep(ms(300));
            let idle = cpu_ticks("awake-test") - t2;
            drop(guard);
            (alive, after, idle)
        });
        // ≥ 300 ms ≈ 30 ticks at the usual 100 Hz; the spinning thread gets most of them unless
        // the machine is loaded.
        assert!(alive >= 8, "the helper did not spin: {alive} ticks");
        assert!(
            after <= 5,
            "the helper kept spinning after the guard: {after} ticks"
        );
        assert!(
            idle <= 5,
            "the helper kept spinning with no work: {idle} ticks"
        );
        assert!(
            KeepAwake::start().0.is_none(),
            "a caller outside the pool starts nothing"
        );
    }

    /// The positions a row sees are exactly `0..visible_len`: the prefix before the segment's
    /// start plus every position the rule allows (checked against the rule itself, position by
    /// position), for both rules, segments at and inside the cache, and block sizes that do
    /// and do not divide the segment's start.
    #[test]
    fn visible_positions_are_a_prefix_of_visible_len() {
        for attention in [
            Attention::Causal,
            Attention::BlockCausal { block_size: 1 },
            Attention::BlockCausal { block_size: 8 },
            Attention::BlockCausal { block_size: 32 },
        ] {
            for (offset, start, n, cached) in [
                (0, 0, 1, 0),
                (3, 17, 9, 17),
                (0, 32, 32, 96),
                (5, 40, 8, 64),
            ] {
                let s = Segment {
                    item: 0,
                    offset,
                    n,
                    start,
                    logit_rows: Vec::new(),
                };
                let total = cached.max(start + n);
                for row in offset..offset + n {
                    let qpos = start + row - offset;
                    let l = visible_len(attention, &s, row, total);
                    for p in 0..total {
                        let sees = p < start || attention.allows(qpos, p);
                        assert_eq!(
                            p < l,
                            sees,
                            "{attention:?}, start {start}, row {row}, position {p}"
                        );
                    }
                }
            }
        }
    }
}
