//! Re-running positions already in the cache (the sub-block cache of Fast-dLLM v2).

use convert::tiny::{TinyFamily, TinySpec};
use convert::OutType;
use model::{Attention, Batch, Logits, Model};

#[test]
fn rerunning_cached_positions_in_place_reproduces_their_logits_and_updates_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = TinySpec::new(TinyFamily::Qwen2)
        .write_gguf(dir.path(), OutType::F32)
        .unwrap();
    let model = Model::load(&gguf).unwrap();
    let vocab = model.config.vocab;
    let att = Attention::BlockCausal { block_size: 8 };
    let prefix: Vec<u32> = (10..18).collect();
    let block: Vec<u32> = (30..38).collect();

    let mut cache = model.new_cache(32);
    model
        .forward(
            &mut cache,
            &Batch {
                tokens: &prefix,
                attention: att,
                commit: true,
                logits: Logits::None,
            },
        )
        .unwrap();
    let full = model
        .forward(
            &mut cache,
            &Batch {
                tokens: &block,
                attention: att,
                commit: true,
                logits: Logits::All,
            },
        )
        .unwrap();
    assert_eq!(cache.len(), 16);

    // The same tokens at 12..16, against the cache that already holds them: identical logits.
    let again = model
        .forward_in_place(
            &mut cache,
            &Batch {
                tokens: &block[4..],
                attention: att,
                commit: true,
                logits: Logits::All,
            },
            12,
        )
        .unwrap();
    assert_eq!(cache.len(), 16);
    for r in 0..4 {
        let (a, b) = (
            &again[r * vocab..(r + 1) * vocab],
            &full[(4 + r) * vocab..(5 + r) * vocab],
        );
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err < 1e-4, "row {r}: {err}");
    }

    // Different tokens in place change the cache: the next position now sees them.
    let probe = |cache: &mut model::KvCache| {
        model
            .forward(
                cache,
                &Batch {
                    tokens: &[5],
                    attention: att,
                    commit: false,
                    logits: Logits::Last,
                },
            )
            .unwrap()
    };
    let before = probe(&mut cache);
    model
        .forward_in_place(
            &mut cache,
            &Batch {
                tokens: &[1, 2, 3, 4],
                attention: att,
                commit: true,
                logits: Logits::None,
            },
            12,
        )
        .unwrap();
    let after = probe(&mut cache);
    assert!(before.iter().zip(&after).any(|(x, y)| (x - y).abs() > 1e-3));
    assert!(model
        .forward_in_place(
            &mut cache,
            &Batch {
                tokens: &[1, 2],
                attention: att,
                commit: true,
                logits: Logits::None
            },
            15
        )
        .is_err());
}
