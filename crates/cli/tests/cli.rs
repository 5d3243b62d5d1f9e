//! The `dlm` binary as a user runs it: the seed's convert command line, `inspect` on our files and
//! on files made by other tools, and exit code 2 with a clear message on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::shared_fixtures;
use convert::tiny::{TinyFamily, TinySpec};
use serde_json::Value as Json;

fn dlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dlm"))
        .args(args)
        .output()
        .expect("run dlm")
}

fn ok(args: &[&str]) -> String {
    let out = dlm(args);
    assert!(
        out.status.success(),
        "dlm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = dlm(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "dlm {args:?} should exit 2; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn inspect_json(path: &Path) -> Json {
    serde_json::from_str(&ok(&["inspect", path.to_str().unwrap(), "--json"])).unwrap()
}

fn fixtures() -> PathBuf {
    shared_fixtures()
}

fn tensor<'a>(d: &'a Json, name: &str) -> &'a Json {
    d["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

#[test]
fn the_seed_command_line_converts_a_bitnet_dlm_checkpoint_to_i2_s() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["BitNetForCausalLM", "BitnetForCausalLM"] {
        let ckpt = dir.path().join(class);
        let mut spec = TinySpec::new(TinyFamily::BitNet);
        spec.dlm_block_size = Some(32);
        spec.write(&ckpt).unwrap();
        let config = ckpt.join("config.json");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("BitNetForCausalLM", class);
        std::fs::write(&config, text).unwrap();
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        let out = dir.path().join("models/dlm-model.gguf");
        ok(&[
            "convert",
            ckpt.to_str().unwrap(),
            "--outfile",
            out.to_str().unwrap(),
            "--outtype",
            "i2_s",
        ]);

        let d = inspect_json(&out);
        assert_eq!(d["architecture"], "bitnet-b1.58");
        assert_eq!(d["hparams"]["block_count"], 2);
        assert_eq!(d["hparams"]["embedding_length"], 256);
        assert_eq!(d["hparams"]["head_count"], 4);
        assert_eq!(d["hparams"]["head_count_kv"], 2);
        assert_eq!(d["hparams"]["head_dim"], 64);
        assert_eq!(d["hparams"]["vocab_size"], 384);
        assert_eq!(d["dlm"]["mask_token"], "|<MASK>|");
        assert_eq!(d["dlm"]["block_size"], 32);
        assert_eq!(d["dlm"]["shift_logits"], true);
        let q = tensor(&d, "blk.0.attn_q.weight");
        assert_eq!(
            (q["type"].as_str(), q["shape"].clone()),
            (Some("I2_S"), serde_json::json!([256, 256]))
        );
        assert_eq!(q["bytes"], 256 * 256 / 4 + 32);
        assert_eq!(tensor(&d, "token_embd.weight")["type"], "F16");
        assert_eq!(tensor(&d, "blk.1.ffn_sub_norm.weight")["type"], "F32");
        assert_eq!(
            tensor(&d, "blk.1.ffn_down.weight")["shape"],
            serde_json::json!([512, 256])
        );
        let bpw = d["bits_per_weight"].as_f64().unwrap();
        assert!(bpw > 2.0 && bpw < 16.0, "{bpw}");
    }
}

#[test]
fn inspect_reads_a_gguf_made_by_another_tool() {
    let path = fixtures().join("third-party/llama-2-tiny-random.gguf");
    let d = inspect_json(&path);
    assert_eq!(d["architecture"], "llama");
    assert_eq!(d["gguf_version"], 3);
    assert_eq!(d["tensors"].as_array().unwrap().len(), 12);
    assert_eq!(d["hparams"]["embedding_length"], 8);
    assert_eq!(d["hparams"]["vocab_size"], 32000);
    assert_eq!(d["tokenizer"]["model"], "llama");
    assert_eq!(d["dlm"], Json::Null);
    assert_eq!(
        tensor(&d, "token_embd.weight")["shape"],
        serde_json::json!([8, 32000])
    );
    assert_eq!(tensor(&d, "output.weight")["type"], "F16");
    let text = ok(&["inspect", path.to_str().unwrap()]);
    assert!(text.contains("not a DLM"), "{text}");
    assert!(text.contains("token_embd.weight"), "{text}");
    assert!(text.contains("[8, 32000]"), "{text}");
}

#[test]
fn bad_input_exits_2_with_a_message_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixtures().join("third-party/llama-2-tiny-random.gguf")).unwrap();

    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &good[..good.len() / 3]).unwrap();
    let err = fails(&["inspect", truncated.to_str().unwrap()]);
    assert!(err.starts_with("error: "), "{err}");

    let magic = dir.path().join("magic.gguf");
    std::fs::write(&magic, b"GGML\x03\x00\x00\x00").unwrap();
    let err = fails(&["inspect", magic.to_str().unwrap()]);
    assert!(
        err.contains("not a GGUF file") && err.contains("GGML"),
        "{err}"
    );

    let err = fails(&["inspect", dir.path().join("nope.gguf").to_str().unwrap()]);
    assert!(err.contains("nope.gguf"), "{err}");

    let ckpt = dir.path().join("llama");
    TinySpec::new(TinyFamily::Llama).write(&ckpt).unwrap();
    let out = dir.path().join("x.gguf");
    let err = fails(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--outfile",
        out.to_str().unwrap(),
        "--outtype",
        "tq2_0",
    ]);
    assert!(err.contains("--force-ternary"), "{err}");
    assert!(!out.exists());
    let err = fails(&["convert", ckpt.to_str().unwrap(), "--outtype", "q3_k"]);
    assert!(err.contains("q3_k"), "{err}");
    ok(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--outfile",
        out.to_str().unwrap(),
        "--outtype",
        "tq2_0",
        "--force-ternary",
        "-q",
    ]);
    assert_eq!(
        tensor(&inspect_json(&out), "blk.0.ffn_up.weight")["type"],
        "TQ2_0"
    );
}

#[test]
fn convert_names_bitnet_per_target_and_warns_where_the_engine_computes_it_wrongly() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    TinySpec::new(TinyFamily::BitNet).write(&ckpt).unwrap();
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "convert",
            ckpt.to_str().unwrap(),
            "--outfile",
            out.to_str().unwrap(),
            "-q",
        ];
        args.extend_from_slice(extra);
        let o = dlm(&args);
        (o.status.code(), String::from_utf8(o.stderr).unwrap(), out)
    };

    // TQ2_0 goes to llama.cpp by default: its name, and the warning naming the engine, the
    // problem and the way out.
    let (code, stderr, out) = run("tq2.gguf", &["--outtype", "tq2_0"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(inspect_json(&out)["architecture"], "bitnet");
    assert!(
        stderr.contains("warning: llama.cpp")
            && stderr.contains("SiLU")
            && stderr.contains("squared ReLU")
            && stderr.contains("--outtype i2_s"),
        "{stderr}"
    );
    assert!(stderr.contains("bitnet for llama.cpp"), "{stderr}");

    // The same type for bitnet.cpp: its name, no warning.
    let (code, stderr, out) = run(
        "tq2-bitnet.gguf",
        &["--outtype", "tq2_0", "--target", "bitnet.cpp"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(inspect_json(&out)["architecture"], "bitnet-b1.58");
    assert!(!stderr.contains("warning"), "{stderr}");

    // I2_S defaults to bitnet.cpp; asked for llama.cpp it is refused, and nothing is written.
    let (code, stderr, out) = run("i2s.gguf", &["--outtype", "i2_s"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(inspect_json(&out)["architecture"], "bitnet-b1.58");
    let (code, stderr, out) = run(
        "i2s-llama.gguf",
        &["--outtype", "i2_s", "--target", "llama.cpp"],
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("llama.cpp has no I2_S type") && stderr.contains("tq2_0"),
        "{stderr}"
    );
    assert!(!out.exists());

    // A separate LM head is something llama.cpp's `bitnet` cannot load.
    let (code, stderr, _) = run(
        "head.gguf",
        &["--outtype", "tq2_0", "--output-type", "q8_0"],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no separate LM head"), "{stderr}");
    assert!(
        fails(&["convert", ckpt.to_str().unwrap(), "--target", "vllm"])
            .contains("choose llama.cpp or bitnet.cpp")
    );
}
