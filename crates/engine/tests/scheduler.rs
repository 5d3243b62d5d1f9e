//! Concurrent sequences through the scheduler decode exactly what they decode alone, in fewer
//! forward passes than running them one after another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use convert::tiny::{TinyFamily, TinySpec};
use convert::OutType;
use engine::{
    decode_ar, decode_dlm, generate_ar, generate_dlm, DlmParams, EngineError, GenerateParams,
    SamplingParams, Scheduler, SchedulerConfig,
};
use model::Model;
use tokenizer::Tokenizer;

fn fixture(dir: &std::path::Path) -> (Arc<Model>, Tokenizer) {
    let mut spec = TinySpec::new(TinyFamily::Qwen2);
    spec.dlm_block_size = Some(8);
    spec.logit_scale = 6.0;
    spec.seed = 5;
    let gguf = spec.write_gguf(dir, OutType::F32).unwrap();
    let model = Model::load(&gguf).unwrap();
    let tok = Tokenizer::from_gguf(&model.file().metadata).unwrap();
    (Arc::new(model), tok)
}

fn prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            (0..(3 + 7 * i % 23))
                .map(|j| (11 + 13 * i + 5 * j) as u32 % 200 + 3)
                .collect()
        })
        .collect()
}

#[test]
fn concurrent_ar_and_dlm_sequences_match_their_solo_decodes_with_shared_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = fixture(dir.path());
    let mask = tok.mask_id().unwrap();
    let ctx = model.config.context_length;
    let ar = GenerateParams {
        max_tokens: 20,
        stop: vec![],
        sampling: SamplingParams::default(),
    };
    let dlm = DlmParams {
        block_size: 8,
        small_block_size: 4,
        threshold: 0.5,
        max_tokens: 20,
        ..Default::default()
    };
    let prompts = prompts(8);
    let solo: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 0 {
                generate_ar(&model, &tok, p, &ar, &mut |_| {}).unwrap()
            } else {
                generate_dlm(&model, &tok, p, mask, &dlm, &mut |_| {}, &mut |_| {}).unwrap()
            }
        })
        .collect();
    let solo_passes: usize = solo.iter().map(|g| g.stats.forward_passes).sum();

    // A tiny prefill chunk so the prompts are also cut into pieces.
    let config = SchedulerConfig {
        prefill_chunk: 8,
        gather_wait: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let scheduler = Scheduler::start(model.clone(), None, config);
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (tok, ar, dlm) = (&tok, &ar, &dlm);
                let mut seq = if i % 2 == 0 {
                    scheduler.sequence(ar.capacity(p.len(), ctx).unwrap(), Default::default())
                } else {
                    scheduler.sequence(dlm.capacity(p.len(), ctx).unwrap(), Default::default())
                };
                s.spawn(move || {
                    if i % 2 == 0 {
                        decode_ar(&mut seq, tok, p, ar, &mut |_| {}).unwrap()
                    } else {
                        decode_dlm(&mut seq, tok, p, mask, dlm, &mut |_| {}, &mut |_| {}).unwrap()
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in solo.iter().zip(&together) {
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(a.text, b.text);
        assert_eq!(a.finish_reason, b.finish_reason);
    }
    let stats = scheduler.stats();
    let steps = stats.steps.load(Ordering::SeqCst) as usize;
    let requests = stats.requests.load(Ordering::SeqCst) as usize;
    // Every solo forward became a request (plus extra prefill pieces) and passes were shared.
    assert!(requests >= solo_passes, "{requests} < {solo_passes}");
    assert!(
        steps * 2 < requests,
        "{steps} steps for {requests} requests"
    );
    assert_eq!(stats.live.load(Ordering::SeqCst), 0);
}

#[test]
fn a_cancelled_sequence_stops_at_its_next_forward_and_others_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = fixture(dir.path());
    let ctx = model.config.context_length;
    let scheduler = Scheduler::start(model.clone(), None, SchedulerConfig::default());
    let params = GenerateParams {
        max_tokens: 30,
        ..Default::default()
    };
    let p = prompts(2);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut doomed = scheduler.sequence(params.capacity(p[0].len(), ctx).unwrap(), cancel.clone());
    let mut pieces = 0;
    let err = decode_ar(&mut doomed, &tok, &p[0], &params, &mut |_| {
        pieces += 1;
        if pieces == 3 {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled));
    drop(doomed);
    let mut ok = scheduler.sequence(
        params.capacity(p[1].len(), ctx).unwrap(),
        Default::default(),
    );
    let g = decode_ar(&mut ok, &tok, &p[1], &params, &mut |_| {}).unwrap();
    let alone = generate_ar(&model, &tok, &p[1], &params, &mut |_| {}).unwrap();
    assert_eq!(g.tokens, alone.tokens);
}
