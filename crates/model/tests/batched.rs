//! Several sequences in one forward pass give each the logits and cache it gets alone.

use convert::tiny::{TinyFamily, TinySpec};
use convert::OutType;
use model::{Attention, Batch, KvCache, Logits, Model, SeqBatch};

fn tiny_model(dir: &std::path::Path, family: TinyFamily) -> Model {
    let gguf = TinySpec::new(family).write_gguf(dir, OutType::F32).unwrap();
    Model::load(&gguf).unwrap()
}

fn prefill(model: &Model, tokens: &[u32], cap: usize) -> KvCache {
    let mut cache = model.new_cache(cap);
    if !tokens.is_empty() {
        model
            .forward(
                &mut cache,
                &Batch {
                    tokens,
                    attention: Attention::Causal,
                    commit: true,
                    logits: Logits::None,
                },
            )
            .unwrap();
    }
    cache
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn a_batched_forward_equals_separate_forwards_per_sequence() {
    let dir = tempfile::tempdir().unwrap();
    for family in [TinyFamily::Llama, TinyFamily::Qwen3, TinyFamily::BitNet] {
        let model = tiny_model(dir.path(), family);
        // Three sequences at different depths, with different attention rules and logits rows,
        // one committing, one re-running cached positions in place.
        let prompts: [Vec<u32>; 3] = [(5..17).collect(), vec![], (40..48).collect()];
        let news: [Vec<u32>; 3] = [vec![20], (60..72).collect(), (80..84).collect()];
        let batches = [
            Batch {
                tokens: &news[0],
                attention: Attention::Causal,
                commit: true,
                logits: Logits::Last,
            },
            Batch {
                tokens: &news[1],
                attention: Attention::BlockCausal { block_size: 4 },
                commit: false,
                logits: Logits::Rows(vec![3, 0, 11]),
            },
            Batch {
                tokens: &news[2],
                attention: Attention::BlockCausal { block_size: 4 },
                commit: true,
                logits: Logits::All,
            },
        ];
        let ats = [None, None, Some(4)];

        let mut alone = Vec::new();
        let mut alone_caches = Vec::new();
        for i in 0..3 {
            let mut cache = prefill(&model, &prompts[i], 32);
            let out = match ats[i] {
                None => model.forward(&mut cache, &batches[i]).unwrap(),
                Some(at) => model.forward_in_place(&mut cache, &batches[i], at).unwrap(),
            };
            alone.push(out);
            alone_caches.push(cache);
        }

        let mut caches: Vec<KvCache> = prompts.iter().map(|p| prefill(&model, p, 32)).collect();
        let mut items: Vec<SeqBatch> = caches
            .iter_mut()
            .zip(batches.iter())
            .zip(ats)
            .map(|((cache, batch), at)| SeqBatch {
                cache,
                batch: batch.clone(),
                at,
            })
            .collect();
        let together = model.forward_many(&mut items);
        drop(items);
        for i in 0..3 {
            assert_close(together[i].as_ref().unwrap(), &alone[i]);
            assert_eq!(caches[i].len(), alone_caches[i].len());
        }
        // The caches hold the same keys: a follow-up forward gives the same logits.
        for i in [0, 2] {
            let probe = Batch {
                tokens: &[7],
                attention: Attention::Causal,
                commit: false,
                logits: Logits::Last,
            };
            let a = model.forward(&mut caches[i], &probe).unwrap();
            let b = model.forward(&mut alone_caches[i], &probe).unwrap();
            assert_close(&a, &b);
        }
    }
}

#[test]
fn a_bad_item_gets_its_error_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), TinyFamily::Llama);
    let vocab = model.config.vocab as u32;
    let good_tokens = [3u32, 4, 5];
    let bad_tokens = [vocab + 7];
    let mut good = model.new_cache(8);
    let mut bad = model.new_cache(8);
    let mut full = prefill(&model, &[1, 2, 3, 4, 5, 6, 7, 8], 8);
    let batch = |tokens| Batch {
        tokens,
        attention: Attention::Causal,
        commit: true,
        logits: Logits::Last,
    };
    let mut items = vec![
        SeqBatch {
            cache: &mut bad,
            batch: batch(&bad_tokens),
            at: None,
        },
        SeqBatch {
            cache: &mut good,
            batch: batch(&good_tokens),
            at: None,
        },
        SeqBatch {
            cache: &mut full,
            batch: batch(&good_tokens),
            at: None,
        },
    ];
    let out = model.forward_many(&mut items);
    drop(items);
    assert!(out[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
    assert_eq!(out[1].as_ref().unwrap().len(), vocab as usize);
    assert!(out[2]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("exceed the context"));
    assert_eq!((bad.len(), good.len(), full.len()), (0, 3, 8));
    let mut alone = model.new_cache(8);
    let expect = model.forward(&mut alone, &batch(&good_tokens)).unwrap();
    assert_close(out[1].as_ref().unwrap(), &expect);
}
