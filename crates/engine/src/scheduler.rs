//! Continuous batching: concurrent sequences share forward passes.
//!
//! One scheduler thread owns the model. Every sequence runs its own decoding loop (the
//! autoregressive or the block-diffusion one, unchanged) on its own thread, through a
//! [`ScheduledSequence`] — a [`BlockForward`] that, instead of running the model, sends its
//! forward request (tokens, attention, which logits, and its KV cache) to the scheduler and waits
//! for the answer. Each step the scheduler gathers the requests of the live sequences (waiting at
//! most [`SchedulerConfig::gather_wait`] for stragglers), runs them as one
//! [`Model::forward_many`] — AR decode tokens, diffusion blocks and prefill chunks side by side,
//! so the weight matrices are streamed from memory once for all of them — and hands every
//! sequence its logits and cache back.
//!
//! Long prefills are cut into chunks of at most [`SchedulerConfig::prefill_chunk`] positions
//! (at block boundaries), so one long prompt does not stall every other sequence's next token.
//! A sequence whose cancel flag is set (its client went away) gets [`EngineError::Cancelled`] at
//! its next forward, which ends its loop and frees its slot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use model::{Attention, Batch, KvCache, Logits, Model, SeqBatch};

use crate::dlm::BlockForward;
use crate::EngineError;

/// Batching policy.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Most new positions in one forward pass (at least one request always runs).
    pub max_batch_tokens: usize,
    /// How long a step waits at least for the other live sequences' requests once it has one.
    pub gather_wait: Duration,
    /// The wait grows to this fraction of the previous forward's duration (capped at
    /// [`MAX_GATHER_WAIT`]): a sequence that is still sampling from its last step's logits
    /// (8 rows × a 128K vocabulary take milliseconds) joins this step instead of costing a whole
    /// forward of its own, which on a large model is hundreds of milliseconds.
    pub gather_fraction: f64,
    /// Longest prefill piece (positions) run in one step.
    pub prefill_chunk: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch_tokens: 2048,
            gather_wait: Duration::from_millis(2),
            gather_fraction: 0.05,
            prefill_chunk: 256,
        }
    }
}

/// The longest a step waits for stragglers, whatever the previous forward took.
pub const MAX_GATHER_WAIT: Duration = Duration::from_millis(50);

/// Counters the scheduler keeps (read them for metrics).
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Batched forward passes run.
    pub steps: AtomicU64,
    /// Sequence requests served (a step serves one per sequence in it).
    pub requests: AtomicU64,
    /// New positions run, over all steps.
    pub positions: AtomicU64,
    /// Wall time spent in forward passes, in microseconds.
    pub busy_micros: AtomicU64,
    /// Sequences alive (created and not yet dropped).
    pub live: AtomicUsize,
}

/// One sequence's forward request.
struct Job {
    cache: KvCache,
    tokens: Vec<u32>,
    attention: Attention,
    commit: bool,
    logits: Logits,
    at: Option<usize>,
    reply: SyncSender<(KvCache, Result<Vec<f32>, EngineError>)>,
}

/// The handle to the scheduler thread; dropping it (and every sequence) stops the thread.
pub struct Scheduler {
    model: Arc<Model>,
    tx: Sender<Job>,
    stats: Arc<SchedulerStats>,
    config: SchedulerConfig,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the scheduler thread; its forward passes run inside `pool` when given (else in
    /// rayon's global pool).
    pub fn start(
        model: Arc<Model>,
        pool: Option<Arc<rayon::ThreadPool>>,
        config: SchedulerConfig,
    ) -> Scheduler {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(SchedulerStats::default());
        let worker = Worker {
            model: model.clone(),
            rx,
            stats: stats.clone(),
            config: config.clone(),
            waiting: VecDeque::new(),
            last_step: Duration::ZERO,
        };
        let thread = std::thread::Builder::new()
            .name("dlm-scheduler".into())
            .spawn(move || match pool {
                Some(pool) => pool.install(|| worker.run()),
                None => worker.run(),
            })
            .expect("spawning the scheduler thread");
        Scheduler {
            model,
            tx,
            stats,
            config,
            thread: Some(thread),
        }
    }

    /// The model the scheduler runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SchedulerStats> {
        &self.stats
    }

    /// A new sequence of up to `capacity` positions; its forwards fail with
    /// [`EngineError::Cancelled`] once `cancel` is set.
    pub fn sequence(&self, capacity: usize, cancel: Arc<AtomicBool>) -> ScheduledSequence {
        self.stats.live.fetch_add(1, Ordering::SeqCst);
        ScheduledSequence {
            cache: Some(self.model.new_cache(capacity)),
            capacity,
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            cancel,
            prefill_chunk: self.config.prefill_chunk.max(1),
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // The thread ends when every sender is gone: ours now, the sequences' when they end.
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if self.stats.live.load(Ordering::SeqCst) == 0 {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A sequence whose forwards run in the scheduler's shared passes.
pub struct ScheduledSequence {
    cache: Option<KvCache>,
    capacity: usize,
    tx: Sender<Job>,
    stats: Arc<SchedulerStats>,
    cancel: Arc<AtomicBool>,
    prefill_chunk: usize,
}

impl Drop for ScheduledSequence {
    fn drop(&mut self) {
        self.stats.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ScheduledSequence {
    fn submit(
        &mut self,
        tokens: &[u32],
        attention: Attention,
        commit: bool,
        logits: Logits,
        at: Option<usize>,
    ) -> Result<Vec<f32>, EngineError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        let cache = self.cache.take().ok_or(EngineError::SchedulerStopped)?;
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            cache,
            tokens: tokens.to_vec(),
            attention,
            commit,
            logits,
            at,
            reply,
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            self.cache = Some(job.cache);
            return Err(EngineError::SchedulerStopped);
        }
        let (cache, result) = answer.recv().map_err(|_| EngineError::SchedulerStopped)?;
        self.cache = Some(cache);
        result
    }

    /// Where a prefill of `n` positions from `start` may be cut: the end of the first chunk of
    /// at most `prefill_chunk` positions that ends on a block boundary (None: run it whole).
    fn chunk_end(&self, start: usize, n: usize, block_size: usize) -> Option<usize> {
        if n <= self.prefill_chunk {
            return None;
        }
        let end = (start + self.prefill_chunk) / block_size * block_size;
        (end > start && end < start + n).then_some(end - start)
    }
}

impl BlockForward for ScheduledSequence {
    fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn forward(
        &mut self,
        mut tokens: &[u32],
        block_size: usize,
        commit: bool,
        logits: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        let attention = Attention::BlockCausal { block_size };
        // A committed prefill whose logits come from its last row may run in pieces.
        if commit && matches!(logits, Logits::None | Logits::Last) && block_size > 0 {
            while let Some(cut) = self.chunk_end(self.cache_len(), tokens.len(), block_size) {
                self.submit(&tokens[..cut], attention, true, Logits::None, None)?;
                tokens = &tokens[cut..];
            }
        }
        self.submit(tokens, attention, commit, logits, None)
    }

    fn forward_in_place(
        &mut self,
        tokens: &[u32],
        at: usize,
        block_size: usize,
        logits: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        let attention = Attention::BlockCausal { block_size };
        self.submit(tokens, attention, true, logits, Some(at))
    }

    fn truncate(&mut self, len: usize) {
        if let Some(c) = self.cache.as_mut() {
            c.truncate(len);
        }
    }
}

/// The scheduler thread's state.
struct Worker {
    model: Arc<Model>,
    rx: Receiver<Job>,
    stats: Arc<SchedulerStats>,
    config: SchedulerConfig,
    /// Requests received but left for a later step (over the token budget).
    waiting: VecDeque<Job>,
    /// Duration of the previous forward.
    last_step: Duration,
}

impl Worker {
    fn run(mut self) {
        while self.gather() {
            self.step();
        }
    }

    /// Fills `waiting` for the next step; false when every sender is gone and nothing waits.
    fn gather(&mut self) -> bool {
        if self.waiting.is_empty() {
            match self.rx.recv() {
                Ok(job) => self.waiting.push_back(job),
                Err(_) => return false,
            }
        }
        let fraction = self.config.gather_fraction;
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let wait = self
            .last_step
            .mul_f64(fraction)
            .min(MAX_GATHER_WAIT)
            .max(self.config.gather_wait);
        let deadline = Instant::now() + wait;
        loop {
            // Take whatever has arrived.
            while let Ok(job) = self.rx.try_recv() {
                self.waiting.push_back(job);
            }
            let live = self.stats.live.load(Ordering::SeqCst);
            let positions: usize = self.waiting.iter().map(|j| j.tokens.len()).sum();
            if self.waiting.len() >= live || positions >= self.config.max_batch_tokens {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(job) => self.waiting.push_back(job),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
    }

    /// Runs the waiting requests (oldest first, within the token budget) as one forward.
    fn step(&mut self) {
        let mut jobs = Vec::new();
        let mut positions = 0;
        while let Some(job) = self.waiting.front() {
            let n = job.tokens.len();
            if !jobs.is_empty() && positions + n > self.config.max_batch_tokens {
                break;
            }
            positions += n;
            jobs.push(self.waiting.pop_front().expect("front exists"));
        }
        let t0 = Instant::now();
        // A bug in a forward must not take the server down: the sequences of a step that
        // panicked get an error and the scheduler goes on with the next step.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut items: Vec<SeqBatch> = jobs
                .iter_mut()
                .map(|j| SeqBatch {
                    cache: &mut j.cache,
                    batch: Batch {
                        tokens: &j.tokens,
                        attention: j.attention,
                        commit: j.commit,
                        logits: j.logits.clone(),
                    },
                    at: j.at,
                })
                .collect();
            self.model.forward_many(&mut items)
        }));
        let results: Vec<Result<Vec<f32>, EngineError>> = match outcome {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(EngineError::from))
                .collect(),
            Err(_) => jobs
                .iter()
                .map(|_| {
                    Err(EngineError::Internal(
                        "the forward pass failed unexpectedly (a bug: please report it)".into(),
                    ))
                })
                .collect(),
        };
        self.last_step = t0.elapsed();
        let s = &self.stats;
        s.busy_micros
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        s.steps.fetch_add(1, Ordering::Relaxed);
        s.requests.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        s.positions.fetch_add(positions as u64, Ordering::Relaxed);
        for (job, result) in jobs.into_iter().zip(results) {
            // A sequence that has gone away just drops its answer.
            let _ = job.reply.send((job.cache, result));
        }
    }
}
