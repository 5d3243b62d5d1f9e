//! Block-diffusion decoding checked token for token against an independent Python
//! implementation of the Fast-dLLM v2 reference loop (tests/py/reference_dlm.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use convert::tiny::{TinyFamily, TinySpec};
use convert::OutType;
use engine::{generate_dlm, resolve_mask_id, DlmParams};
use model::Model;
use tokenizer::Tokenizer;

fn python_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("DLM_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
            panic!("python3 with numpy is required (pip install -r tests/py/requirements.txt)");
        }
        eprintln!("skipped: python3 with numpy is not installed");
    }
    ok
}

struct Fixture {
    _dir: tempfile::TempDir,
    ckpt: PathBuf,
    model: Model,
    tok: Tokenizer,
}

/// A tiny Qwen2 DLM whose logits are scaled so that some predictions are confident.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = TinySpec::new(TinyFamily::Qwen2);
    spec.dlm_block_size = Some(32);
    spec.logit_scale = 6.0;
    spec.seed = 11;
    let gguf = spec.write_gguf(dir.path(), OutType::F32).unwrap();
    // write_gguf keeps the checkpoint beside the GGUF, for the Python reference.
    let ckpt = dir.path().join("ckpt");
    let model = Model::load(&gguf).unwrap();
    let tok = Tokenizer::from_gguf(&model.file().metadata).unwrap();
    Fixture {
        _dir: dir,
        ckpt,
        model,
        tok,
    }
}

fn reference(
    ckpt: &Path,
    prompt: &[u32],
    mask: u32,
    eog: &[u32],
    p: &DlmParams,
) -> (Vec<u32>, usize) {
    let mode = if p.use_block_cache {
        "block-cache"
    } else {
        "no-cache"
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/reference_dlm.py");
    let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new("python3")
        .arg(script)
        .arg(ckpt)
        .args([
            join(prompt),
            mask.to_string(),
            join(eog),
            p.block_size.to_string(),
            p.small_block_size.to_string(),
            p.threshold.to_string(),
            p.max_tokens.to_string(),
            mode.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    (tokens, v["forward_passes"].as_u64().unwrap() as usize)
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 40 + (i * 37) % 220).collect()
}

#[test]
fn tokens_match_the_reference_loop_for_prompts_around_one_block_and_several_thresholds() {
    if !python_available() {
        return;
    }
    let f = fixture();
    let mask = resolve_mask_id(&f.tok, None).unwrap();
    let eog = f.tok.eog_ids().to_vec();
    let mut multi_commit_seen = false;
    for (len, threshold, use_block_cache) in [10, 32, 45].into_iter().flat_map(|l| {
        [1.0, 0.9, 0.5]
            .into_iter()
            .flat_map(move |t| [false, true].map(|c| (l, t, c)))
    }) {
        {
            let p = DlmParams {
                threshold,
                max_tokens: 40,
                use_block_cache,
                ..Default::default()
            };
            let pr = prompt(len);
            let got =
                generate_dlm(&f.model, &f.tok, &pr, mask, &p, &mut |_| {}, &mut |_| {}).unwrap();
            let (want, passes) = reference(&f.ckpt, &pr, mask, &eog, &p);
            assert_eq!(
                got.tokens, want,
                "prompt {len}, threshold {threshold}, block cache {use_block_cache}"
            );
            assert_eq!(got.stats.forward_passes, passes, "forward passes, prompt {len}, threshold {threshold}, block cache {use_block_cache}");
            if threshold < 1.0 && got.tokens.len() > got.stats.forward_passes {
                multi_commit_seen = true;
            }
        }
    }
    assert!(
        multi_commit_seen,
        "the fixture should commit several tokens per forward at low thresholds"
    );
}

#[test]
fn block_step_cost_times_both_forwards_and_leaves_the_model_usable() {
    let f = fixture();
    let c = engine::block_step_cost(&f.model, 32, 8, 16, 3).unwrap();
    assert_eq!((c.block_rows, c.logit_rows), (32, 8));
    assert!(c.decode_ms > 0.0 && c.block_ms > 0.0, "{c:?}");
    assert_eq!(c.decode_steps(), c.block_ms / c.decode_ms);
    // Bad arguments are errors, not panics; so is a probe longer than the context.
    assert!(engine::block_step_cost(&f.model, 0, 8, 16, 3).is_err());
    assert!(engine::block_step_cost(&f.model, 32, 8, 16, 0).is_err());
    let too_long = f.model.config.context_length + 1;
    assert!(engine::block_step_cost(&f.model, 32, 8, too_long, 1).is_err());
}

/// One reported block state, owned.
#[derive(Debug)]
struct State {
    tokens: Vec<u32>,
    block_index: usize,
    block_start: usize,
    prompt_len_in_block: usize,
    sub_block: (usize, usize),
    step: usize,
    forward_passes: usize,
    committed: Vec<engine::Commit>,
    is_final: bool,
}

#[test]
fn block_states_replay_the_generation_step_by_step() {
    let f = fixture();
    let mask = resolve_mask_id(&f.tok, None).unwrap();
    let b = 32;
    // Prompts inside, on and past a block boundary; caps that end inside a block, right after a
    // prefill's greedy token (1), and on a block boundary.
    for (len, threshold, max_tokens, use_block_cache) in [
        (10, 0.9, 40, false),
        (32, 0.5, 40, true),
        (45, 1.0, 19, false),
        (32, 0.9, 1, false),
        (64, 0.9, 64, false),
    ] {
        let what = format!("prompt {len}, threshold {threshold}, max_tokens {max_tokens}");
        let p = DlmParams {
            threshold,
            max_tokens,
            use_block_cache,
            ..Default::default()
        };
        let pr = prompt(len);
        let mut states = Vec::new();
        let got = generate_dlm(&f.model, &f.tok, &pr, mask, &p, &mut |_| {}, &mut |s| {
            states.push(State {
                tokens: s.tokens.to_vec(),
                block_index: s.block_index,
                block_start: s.block_start,
                prompt_len_in_block: s.prompt_len_in_block,
                sub_block: s.sub_block,
                step: s.step,
                forward_passes: s.forward_passes,
                committed: s.committed.to_vec(),
                is_final: s.is_final,
            })
        })
        .unwrap();
        assert!(!states.is_empty(), "{what}");
        // Replay: each block starts as its prompt tail and masks; each state's commits turn
        // exactly its newly unmasked positions into its tokens.
        let mut current: Option<Vec<u32>> = None;
        let mut finals: Vec<u32> = Vec::new();
        let mut next_block = len / b;
        for (i, s) in states.iter().enumerate() {
            assert_eq!(s.step, i + 1, "{what}: steps count 1, 2, …");
            assert_eq!(s.tokens.len(), b, "{what}");
            assert_eq!(s.block_index, next_block, "{what}: step {}", s.step);
            assert_eq!(s.block_start, s.block_index * b, "{what}");
            let in_prompt = len.saturating_sub(s.block_start).min(b);
            assert_eq!(s.prompt_len_in_block, in_prompt, "{what}");
            assert!(s.forward_passes <= got.stats.forward_passes, "{what}");
            let mut before = current.take().unwrap_or_else(|| {
                let mut t = pr[s.block_start.min(len)..].to_vec();
                t.truncate(in_prompt);
                t.resize(b, mask);
                t
            });
            for c in &s.committed {
                assert_eq!(
                    before[c.pos], mask,
                    "{what}: step {} commits {} twice",
                    s.step, c.pos
                );
                before[c.pos] = c.token;
                match c.confidence {
                    Some(conf) => {
                        assert!((0.0..=1.0).contains(&conf), "{what}: {conf}");
                        assert!(
                            (s.sub_block.0..s.sub_block.1).contains(&c.pos),
                            "{what}: step {} commits {} outside {:?}",
                            s.step,
                            c.pos,
                            s.sub_block
                        );
                    }
                    None => assert_eq!(c.pos, 0, "{what}: only a block's first token is greedy"),
                }
            }
            assert_eq!(before, s.tokens, "{what}: step {} is its commits", s.step);
            if !s.is_final {
                assert!(
                    !s.committed.is_empty(),
                    "{what}: step {} commits nothing",
                    s.step
                );
                current = Some(before);
            } else {
                finals.extend_from_slice(&s.tokens[s.prompt_len_in_block..]);
                next_block += 1;
            }
        }
        assert!(
            states.last().unwrap().is_final,
            "{what}: the last state is final"
        );
        assert!(
            finals.len() >= got.tokens.len(),
            "{what}: {} final positions for {} tokens",
            finals.len(),
            got.tokens.len()
        );
        assert_eq!(finals[..got.tokens.len()], got.tokens[..], "{what}");
    }
}
