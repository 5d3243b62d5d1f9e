//! `dlm generate` and `dlm tokenize` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use convert::tiny::{TinyFamily, TinySpec};
use serde_json::Value as Json;

fn dlm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dlm")).args(args).output().expect("run dlm");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn stories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K.gguf")
}

#[test]
fn greedy_generation_from_bos_tells_llama2cs_story() {
    let model = stories();
    let (ok, out, err) = dlm(&["generate", "-m", model.to_str().unwrap(), "--max-tokens", "24", "--json", "--threads", "1"]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["prompt_tokens"], serde_json::json!([1]));
    assert_eq!(v["tokens"].as_array().unwrap().len(), 24);
    assert_eq!(v["finish_reason"], "length");
    assert!(v["text"].as_str().unwrap().starts_with("Once upon a time, there was a little girl named Lily."), "{}", v["text"]);
    assert_eq!(v["stats"]["generated_tokens"], 24);
    assert!(err.contains("decode 24 tokens"), "{err}");

    // Streaming text mode prints the same text.
    let (ok, streamed, _) = dlm(&["generate", "-m", model.to_str().unwrap(), "--max-tokens", "24"]);
    assert!(ok);
    assert_eq!(streamed.trim_end_matches('\n'), v["text"].as_str().unwrap());
}

#[test]
fn stop_strings_end_generation_and_are_not_printed() {
    let model = stories();
    let (ok, out, err) = dlm(&["generate", "-m", model.to_str().unwrap(), "--max-tokens", "60", "--stop", "Lily", "--json"]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["text"], "Once upon a time, there was a little girl named ");
    assert_eq!(v["finish_reason"], "stop");
}

#[test]
fn raw_prompts_apply_only_the_models_bos_rule_and_tokenize_shows_ids() {
    let model = stories();
    let (ok, out, _) = dlm(&["tokenize", "-m", model.to_str().unwrap(), "Once upon a time", "--json"]);
    assert!(ok);
    let ids: Vec<u64> = serde_json::from_str::<Json>(&out).unwrap()["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(!ids.is_empty() && ids[0] != 1, "no BOS without --bos: {ids:?}");
    let (_, with_bos, _) = dlm(&["tokenize", "-m", model.to_str().unwrap(), "Once upon a time", "--bos"]);
    assert!(with_bos.starts_with("1 "), "{with_bos}");

    let (ok, out, err) = dlm(&["generate", "-m", model.to_str().unwrap(), "-p", "Once upon a time", "--max-tokens", "3", "--json"]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    let prompt: Vec<u64> = v["prompt_tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(prompt[0], 1, "stories260K adds BOS");
    assert_eq!(&prompt[1..], &ids[..]);
}

#[test]
fn chat_prompts_use_the_models_template() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("qwen");
    TinySpec::new(TinyFamily::Qwen2).write(&ckpt).unwrap();
    let gguf = dir.path().join("qwen.gguf");
    let (ok, _, err) = dlm(&["convert", ckpt.to_str().unwrap(), "--outfile", gguf.to_str().unwrap(), "--outtype", "f16", "-q"]);
    assert!(ok, "{err}");
    let (ok, out, err) = dlm(&["generate", "-m", gguf.to_str().unwrap(), "--chat", "the cat", "--max-tokens", "5", "--json"]);
    assert!(ok, "{err}");
    let v: Json = serde_json::from_str(out.trim()).unwrap();
    let prompt = v["prompt_tokens"].as_array().unwrap();
    // <|im_start|> is the second added token of the tiny byte-level vocabulary (after <|endoftext|>).
    let (_, ids, _) = dlm(&["tokenize", "-m", gguf.to_str().unwrap(), "<|im_start|>user\n"]);
    let first: u64 = ids.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(prompt[0].as_u64().unwrap(), first);
    assert!(v["tokens"].as_array().unwrap().len() <= 5);

    let (ok, _, err) = dlm(&["generate", "-m", gguf.to_str().unwrap(), "-p", "x", "--chat", "y"]);
    assert!(!ok && err.contains("either"), "{err}");
    let (ok, _, err) = dlm(&["generate", "-m", gguf.to_str().unwrap(), "-p", "x", "--top-p", "0"]);
    assert!(!ok && err.contains("top_p"), "{err}");
}
