//! `dlm generate` and `dlm tokenize` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::shared_fixtures;
use convert::tiny::{TinyFamily, TinySpec};
use serde_json::Value as Json;

fn dlm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dlm"))
        .args(args)
        .output()
        .expect("run dlm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K.gguf")
}

#[test]
fn greedy_generation_from_bos_tells_llama2cs_story() {
    let model = stories();
    let (ok, out, err) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--max-tokens",
        "24",
        "--json",
        "--threads",
        "1",
    ]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["prompt_tokens"], serde_json::json!([1]));
    assert_eq!(v["tokens"].as_array().unwrap().len(), 24);
    assert_eq!(v["finish_reason"], "length");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("Once upon a time, there was a little girl named Lily."),
        "{}",
        v["text"]
    );
    assert_eq!(v["stats"]["generated_tokens"], 24);
    assert!(err.contains("decode 24 tokens"), "{err}");

    // Streaming text mode prints the same text.
    let (ok, streamed, _) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--max-tokens",
        "24",
    ]);
    assert!(ok);
    assert_eq!(streamed.trim_end_matches('\n'), v["text"].as_str().unwrap());
}

#[test]
fn stop_strings_end_generation_and_are_not_printed() {
    let model = stories();
    let (ok, out, err) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--max-tokens",
        "60",
        "--stop",
        "Lily",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["text"],
        "Once upon a time, there was a little girl named "
    );
    assert_eq!(v["finish_reason"], "stop");
}

#[test]
fn raw_prompts_apply_only_the_models_bos_rule_and_tokenize_shows_ids() {
    let model = stories();
    let (ok, out, _) = dlm(&[
        "tokenize",
        "-m",
        model.to_str().unwrap(),
        "Once upon a time",
        "--json",
    ]);
    assert!(ok);
    let ids: Vec<u64> = serde_json::from_str::<Json>(&out).unwrap()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        !ids.is_empty() && ids[0] != 1,
        "no BOS without --bos: {ids:?}"
    );
    let (_, with_bos, _) = dlm(&[
        "tokenize",
        "-m",
        model.to_str().unwrap(),
        "Once upon a time",
        "--bos",
    ]);
    assert!(with_bos.starts_with("1 "), "{with_bos}");

    let (ok, out, err) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "Once upon a time",
        "--max-tokens",
        "3",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    let prompt: Vec<u64> = v["prompt_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(prompt[0], 1, "stories260K adds BOS");
    assert_eq!(&prompt[1..], &ids[..]);
}

#[test]
fn chat_prompts_use_the_models_template() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("qwen");
    TinySpec::new(TinyFamily::Qwen2).write(&ckpt).unwrap();
    let gguf = dir.path().join("qwen.gguf");
    let (ok, _, err) = dlm(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--outfile",
        gguf.to_str().unwrap(),
        "--outtype",
        "f16",
        "-q",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = dlm(&[
        "generate",
        "-m",
        gguf.to_str().unwrap(),
        "--chat",
        "the cat",
        "--max-tokens",
        "5",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    let prompt = v["prompt_tokens"].as_array().unwrap();
    // <|im_start|> is the second added token of the tiny byte-level vocabulary (after <|endoftext|>).
    let (_, ids, _) = dlm(&[
        "tokenize",
        "-m",
        gguf.to_str().unwrap(),
        "<|im_start|>user\n",
    ]);
    let first: u64 = ids.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(prompt[0].as_u64().unwrap(), first);
    assert!(v["tokens"].as_array().unwrap().len() <= 5);

    let (ok, _, err) = dlm(&[
        "generate",
        "-m",
        gguf.to_str().unwrap(),
        "-p",
        "x",
        "--chat",
        "y",
    ]);
    assert!(!ok && err.contains("either"), "{err}");
    let (ok, _, err) = dlm(&[
        "generate",
        "-m",
        gguf.to_str().unwrap(),
        "-p",
        "x",
        "--top-p",
        "0",
    ]);
    assert!(!ok && err.contains("top_p"), "{err}");
}

fn stories_with_mask(dir: &Path) -> PathBuf {
    let fixture = shared_fixtures().join("stories260K");
    let out = dir.join("stories-mask.gguf");
    let (ok, _, err) = dlm(&[
        "convert",
        fixture.to_str().unwrap(),
        "--outfile",
        out.to_str().unwrap(),
        "--outtype",
        "f32",
        "--add-mask-token",
        "-q",
    ]);
    assert!(ok, "{err}");
    out
}

#[test]
fn diffusion_mode_needs_a_usable_mask_token_and_says_what_to_do() {
    let model = stories();
    let (ok, _, err) = dlm(&["generate", "-m", model.to_str().unwrap(), "--mode", "dlm"]);
    assert!(!ok);
    assert!(
        err.contains("no mask token")
            && err.contains("--mode ar")
            && err.contains("--mask-token-id"),
        "{err}"
    );
    // An ordinary text token is refused as a mask token.
    let (ok, _, err) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--mode",
        "dlm",
        "--mask-token-id",
        "300",
    ]);
    assert!(!ok && err.contains("ordinary text token"), "{err}");
    let (ok, _, err) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--mode",
        "dlm",
        "--mask-token-id",
        "9999",
    ]);
    assert!(!ok && err.contains("outside the vocabulary"), "{err}");
    // AR still works on the same model.
    let (ok, _, err) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--mode",
        "ar",
        "--max-tokens",
        "4",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn diffusion_generation_reports_forward_passes_and_honours_max_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = stories_with_mask(dir.path());
    let (ok, out, err) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--max-tokens",
        "10",
        "--threshold",
        "0.9",
        "--json",
        "--visual",
    ]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["mode"], "dlm",
        "a model with a mask token defaults to diffusion"
    );
    assert_eq!(v["tokens"].as_array().unwrap().len(), 10);
    assert_eq!(v["finish_reason"], "length");
    let forwards = v["stats"]["forward_passes"].as_u64().unwrap();
    assert!(forwards >= 1, "{v}");
    assert!(err.contains('▒'), "--visual shows masks: {err}");
    // A block size that differs from the model's is allowed with a warning.
    let (ok, _, err) = dlm(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--max-tokens",
        "4",
        "--block-size",
        "16",
        "--small-block-size",
        "4",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn bench_compares_ar_with_a_threshold_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let model = stories_with_mask(dir.path());
    let prompts = dir.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"prompt\": \"Once upon a time\"}\n{\"prompt\": \"The dog\"}\n",
    )
    .unwrap();
    let (ok, out, err) = dlm(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--thresholds",
        "1.0,0.5",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(&out).unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["mode"], "ar");
    assert_eq!(rows[0]["tokens"], 16);
    assert_eq!(rows[0]["identical_to_ar"], 1.0);
    assert_eq!(rows[1]["mode"], "dlm t=1");
    let ar_tps = rows[0]["tokens_per_second"].as_f64().unwrap();
    for r in rows {
        let per_forward = r["tokens_per_forward"].as_f64().unwrap();
        assert!(per_forward > 0.0, "{r}");
        // E = tok/s ÷ (AR tok/s × tokens per forward); exactly 1 for the AR row itself.
        let e = r["efficiency"].as_f64().unwrap();
        let want = r["tokens_per_second"].as_f64().unwrap() / (ar_tps * per_forward);
        assert!((e - want).abs() < 1e-9 * want.max(1.0), "{r}");
    }
    assert!((rows[0]["efficiency"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    let step = &v["block_step"];
    assert_eq!(step["rows"], 32, "{v}");
    assert_eq!(step["logit_rows"], 8, "{v}");
    let (d, b) = (
        step["decode_ms"].as_f64().unwrap(),
        step["block_ms"].as_f64().unwrap(),
    );
    assert!(d > 0.0 && b > 0.0);
    assert!((step["decode_steps"].as_f64().unwrap() - b / d).abs() < 1e-9 * (b / d));
    let (ok, out, err) = dlm(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--thresholds",
        "1.0,0.5",
        "--compare-block-cache",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(&out).unwrap();
    let rows = v["results"].as_array().unwrap();
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(
        modes,
        [
            "ar",
            "dlm t=1",
            "dlm t=1 cached",
            "dlm t=0.5",
            "dlm t=0.5 cached"
        ]
    );
    for r in rows {
        let cached = r["mode"].as_str().unwrap().ends_with("cached");
        let same = &r["identical_to_uncached"];
        assert_eq!(same.is_null(), !cached, "{r}");
        if cached {
            let f = same.as_f64().unwrap();
            assert!((0.0..=1.0).contains(&f) && (f * 2.0).fract() == 0.0, "{r}");
        }
    }
    // With one sub-block per block the cached steps recompute the whole block against fresh
    // keys/values: the output must be exactly the uncached one.
    let (ok, out, err) = dlm(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--thresholds",
        "0.5",
        "--block-size",
        "8",
        "--small-block-size",
        "8",
        "--compare-block-cache",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(v["results"][2]["identical_to_uncached"], 1.0, "{v}");
    let (ok, table, _) = dlm(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--max-tokens",
        "4",
        "--thresholds",
        "0.9",
    ]);
    assert!(ok);
    assert!(
        table.contains("| mode | tokens/s |")
            && table.contains("| dlm t=0.9 |")
            && table.contains("decode steps here"),
        "{table}"
    );
    std::fs::write(&prompts, "not json\n").unwrap();
    let (ok, _, err) = dlm(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("p.jsonl:1"), "{err}");
}

/// The bundled default model is the trained demo DLM: with no `-m` it decodes by block diffusion
/// and commits more than one token per forward at threshold 0.9 (models/README.md).
#[test]
fn the_default_model_is_the_trained_demo_dlm() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_dlm"))
        .current_dir(&dir)
        .args([
            "generate",
            "-p",
            "Once upon a time",
            "--max-tokens",
            "64",
            "--threshold",
            "0.9",
            "--json",
            "--threads",
            "1",
        ])
        .output()
        .expect("run dlm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "dlm");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 64);
    let per_forward = v["stats"]["tokens_per_forward"].as_f64().unwrap();
    assert!(per_forward > 1.0, "{per_forward} tokens per forward");
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("Lily"), "{text}");
    assert!(!text.contains("|<MASK>|"), "{text}");
}
