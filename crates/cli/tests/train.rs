//! `dlm train` and `dlm validate` as a user runs them: a short run on stories260K exports a
//! directory that validates (files, conversion, AR and block-diffusion decodes); broken
//! directories and configurations fail with exit status 2 and a message naming the fault; a run
//! on a parquet dataset laid out as the Hub does (split shards).

use std::path::Path;
use std::process::{Command, Output};

mod common;

fn dlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dlm"))
        .args(args)
        .env("CANDLE_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn train_then_validate_then_break_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::shared_fixtures().join("stories260K");
    let text_path = tmp.path().join("stories.txt");
    let sample = std::fs::read_to_string(src.join("tinystories_sample.txt")).unwrap();
    let cut = sample[..8000].rfind("\n\n").unwrap();
    std::fs::write(&text_path, &sample[..cut]).unwrap();
    let out = tmp.path().join("out");
    let arg = |k: &str, p: &Path| format!("{k}={}", p.display());
    let o = dlm(&[
        "train",
        "-q",
        "model=stories260k",
        &arg("source.path", &src),
        &arg("data.path", &text_path),
        &arg("output.path", &out),
        "training.seq_len=64",
        "conversion.bd_size=16",
        "training.batch_size=2",
        "conversion.total_tokens=256",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "dlm_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let outs = out.display().to_string();
    let o = dlm(&["validate", &outs, "--max-tokens", "20"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("mask token `|<MASK>|` = 512"), "{t}");
    assert!(
        t.contains("AR :") && t.contains("DLM:") && t.contains("tokens/forward"),
        "{t}"
    );

    // A mask id that is not the mask token.
    let dc = out.join("dlm_config.json");
    let good = std::fs::read_to_string(&dc).unwrap();
    std::fs::write(&dc, good.replace("512", "100")).unwrap();
    let o = dlm(&["validate", &outs, "--no-decode"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("not the mask token"), "{}", text(&o));
    std::fs::write(&dc, &good).unwrap();

    // bd_size disagreeing between the two configs.
    let cj = out.join("config.json");
    let cfg = std::fs::read_to_string(&cj).unwrap();
    std::fs::write(&cj, cfg.replace("\"bd_size\": 16", "\"bd_size\": 32")).unwrap();
    let o = dlm(&["validate", &outs, "--no-decode"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("bd_size"), "{}", text(&o));

    // A config with an unknown key.
    let o = dlm(&["train", "model=stories260k", "training.learning_rate=1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("training.lr"), "{}", text(&o));
}

#[test]
fn train_on_a_parquet_dataset_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::shared_fixtures().join("stories260K");
    let sample = std::fs::read_to_string(src.join("tinystories_sample.txt")).unwrap();
    let docs: Vec<&str> = sample[..8000]
        .split("\n\n")
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let (a, b) = docs.split_at(docs.len() / 2);
    let ds = tmp.path().join("dataset");
    common::write_text_parquet(&ds.join("data/train-00000-of-00002.parquet"), a);
    common::write_text_parquet(&ds.join("data/train-00001-of-00002.parquet"), b);
    common::write_text_parquet(&ds.join("data/test-00000-of-00001.parquet"), &docs[..1]);
    let out = tmp.path().join("out");
    let arg = |k: &str, p: &Path| format!("{k}={}", p.display());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train".to_string(),
            "model=stories260k".into(),
            arg("source.path", &src),
            arg("data.path", &ds),
            arg("output.path", &out),
            "training.seq_len=64".into(),
            "conversion.bd_size=16".into(),
            "training.batch_size=2".into(),
            "conversion.total_tokens=256".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dlm(&args)
    };
    // Train and test shards side by side: the split must be named.
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("data.split"), "{}", text(&o));

    let o = run(&["data.split=train"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(&format!("{} examples from 2 file(s)", docs.len())),
        "{t}"
    );
    for f in ["config.json", "model.safetensors", "dlm_config.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}
