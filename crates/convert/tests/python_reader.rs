//! llama.cpp's own Python `gguf` package reads the files `dlm convert` writes, and dequantizes
//! every tensor (TQ1_0 and TQ2_0 included, and Q6_K embeddings and LM heads) to exactly the values
//! our codecs give; every architecture name, key and tensor name we write is one of gguf-py's.

use std::path::Path;
use std::process::Command;

use convert::tiny::{TinyFamily, TinySpec};
use convert::{ConvertOptions, HeadTypes, OutType, Target};
use gguf::{GgmlType, GgufFile};

/// Whether the Python reference is usable; panics instead when CI demands it.
fn python_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("DLM_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
            panic!("python3 with the `gguf` and `numpy` packages is required (pip install -r tests/py/requirements.txt)");
        }
        eprintln!("skipped: python3 with the `gguf` package is not installed (pip install -r tests/py/requirements.txt)");
    }
    ok
}

#[test]
fn gguf_py_dequantizes_our_files_to_our_values() {
    if !python_available() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/gguf_dequant.py");
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let mut spec = TinySpec::new(TinyFamily::BitNet);
    spec.dlm_block_size = Some(32);
    spec.write(&ckpt).unwrap();
    let q6_k_head = HeadTypes {
        token_embd: None,
        output: Some(GgmlType::Q6_K),
    };
    let q6_k_embd = HeadTypes {
        token_embd: Some(GgmlType::Q6_K),
        output: None,
    };
    for (outtype, head_types, q6_k_tensor) in [
        (OutType::F32, HeadTypes::default(), None),
        (OutType::F16, HeadTypes::default(), None),
        (OutType::BF16, HeadTypes::default(), None),
        (OutType::Q8_0, HeadTypes::default(), None),
        (OutType::TQ1_0, HeadTypes::default(), None),
        (OutType::TQ2_0, HeadTypes::default(), None),
        // The tied head written as its own Q6_K tensor; a Q6_K table used both ways.
        (OutType::TQ1_0, q6_k_head, Some("output.weight")),
        (OutType::TQ2_0, q6_k_embd, Some("token_embd.weight")),
    ] {
        let label = format!("{}-{:?}", outtype.name(), head_types);
        let out = dir.path().join(format!("{label}.gguf"));
        let opts = ConvertOptions {
            input: ckpt.clone(),
            output: Some(out.clone()),
            outtype,
            target: Some(Target::BitnetCpp),
            force_ternary: false,
            add_mask_token: false,
            name: None,
            progress: false,
            head_types,
        };
        convert::convert(&opts).unwrap();
        let dump = dir.path().join(format!("dump-{label}"));
        std::fs::create_dir_all(&dump).unwrap();
        let run = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .arg(&dump)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "gguf-py failed on {label}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dump.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["__architecture__"], "bitnet-b1.58");

        let file = GgufFile::open(&out).unwrap();
        assert_eq!(index.as_object().unwrap().len(), file.tensors.len() + 1);
        if let Some(name) = q6_k_tensor {
            assert_eq!(
                file.tensor(name).unwrap().ggml_type,
                GgmlType::Q6_K,
                "{label}"
            );
        }
        for t in &file.tensors {
            assert_eq!(index[&t.name]["type"], t.ggml_type.name(), "{}", t.name);
            let theirs: Vec<f32> = std::fs::read(dump.join(format!("{}.f32", t.name)))
                .unwrap()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let ours = quant::dequantize(
                t.ggml_type,
                file.tensor_data(t),
                t.dims[0] as usize,
                t.n_elements() as usize,
            )
            .unwrap();
            assert_eq!(theirs.len(), ours.len(), "{}", t.name);
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || a == b,
                    "{label} {} element {i}: ours {a}, gguf-py {b}",
                    t.name
                );
            }
        }
    }
}

/// Our own keys (docs/convert.md, "Keys of our own"): the only ones gguf-py does not define.
const OWN_KEYS: &[&str] = &[
    "dlm.block_size",
    "dlm.eog_token_ids",
    "dlm.source.architecture",
];

#[test]
fn every_name_we_write_is_in_gguf_py_tables() {
    if !python_available() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/gguf_names.py");
    let dir = tempfile::tempdir().unwrap();
    // (family, target, output type, expected architecture). The bitnet.cpp file is F16: gguf-py
    // cannot read I2_S (a type of bitnet.cpp's fork only), and names do not depend on the type.
    let cases = [
        (TinyFamily::Llama, Target::LlamaCpp, OutType::F16, "llama"),
        (TinyFamily::Llama, Target::BitnetCpp, OutType::Q8_0, "llama"),
        (TinyFamily::Qwen2, Target::LlamaCpp, OutType::F16, "qwen2"),
        (TinyFamily::Qwen2, Target::BitnetCpp, OutType::F16, "qwen2"),
        (TinyFamily::Qwen3, Target::LlamaCpp, OutType::F16, "qwen3"),
        (TinyFamily::Qwen3, Target::BitnetCpp, OutType::F16, "qwen3"),
        (
            TinyFamily::BitNet,
            Target::LlamaCpp,
            OutType::TQ2_0,
            "bitnet",
        ),
        (
            TinyFamily::BitNet,
            Target::LlamaCpp,
            OutType::TQ1_0,
            "bitnet",
        ),
        (
            TinyFamily::BitNet,
            Target::BitnetCpp,
            OutType::F16,
            "bitnet-b1.58",
        ),
    ];
    let mut files = Vec::new();
    for (i, (family, target, outtype, arch)) in cases.into_iter().enumerate() {
        for dlm in [None, Some(32)] {
            let mut spec = TinySpec::new(family);
            spec.dlm_block_size = dlm;
            let ckpt = dir.path().join(format!("ckpt-{i}-{}", dlm.is_some()));
            spec.write(&ckpt).unwrap();
            let out = dir.path().join(format!("{i}-{}.gguf", dlm.is_some()));
            let report = convert::convert(&ConvertOptions {
                input: ckpt,
                output: Some(out.clone()),
                outtype,
                target: Some(target),
                force_ternary: false,
                add_mask_token: false,
                name: None,
                progress: false,
                head_types: Default::default(),
            })
            .unwrap();
            assert_eq!(report.arch, arch);
            let md = GgufFile::open(&out).unwrap().metadata;
            if family == TinyFamily::BitNet {
                assert_eq!(
                    md.get_str(&format!("{arch}.hidden_activation")).unwrap(),
                    "relu2"
                );
            }
            assert_eq!(md.opt_u64("dlm.block_size").unwrap(), dlm.map(u64::from));
            files.push((out, arch, dlm.is_some()));
        }
    }
    let run = Command::new("python3")
        .arg(&script)
        .args(files.iter().map(|(f, ..)| f))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "gguf_names.py failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    for (file, arch, dlm) in &files {
        let r = &results[file.to_str().unwrap()];
        assert_eq!(r["arch"], *arch, "{}", file.display());
        assert!(
            r.get("unknown_arch").is_none(),
            "{arch}: not a gguf-py architecture"
        );
        assert_eq!(r["unknown_keys"], serde_json::json!([]), "{arch} keys");
        assert_eq!(
            r["unknown_tensors"],
            serde_json::json!([]),
            "{arch} tensors"
        );
        let own: Vec<&str> = r["own_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        for k in &own {
            assert!(OWN_KEYS.contains(k), "{arch}: undocumented key {k}");
        }
        assert_eq!(own.contains(&"dlm.block_size"), *dlm, "{arch}: {own:?}");
    }
}

#[test]
fn the_name_check_can_fail() {
    // A file with a key and a tensor that gguf-py does not know is reported, so the test above
    // is not vacuous.
    if !python_available() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/gguf_names.py");
    let dir = tempfile::tempdir().unwrap();
    let mut w = gguf::GgufWriter::new();
    w.add("general.architecture", gguf::Value::String("llama".into()))
        .unwrap();
    w.add("llama.block_count", gguf::Value::U32(1)).unwrap();
    w.add("llama.hidden_act", gguf::Value::String("relu2".into()))
        .unwrap();
    w.add_tensor("blk.0.ffn_sub_norm.weight", &[4], gguf::GgmlType::F32)
        .unwrap();
    w.add_tensor("blk.0.attn_q.weight", &[4], gguf::GgmlType::F32)
        .unwrap();
    let path = dir.path().join("bad.gguf");
    w.write_file(&path, |_, _, out| out.write_all(&[0u8; 16]))
        .unwrap();
    let run = Command::new("python3")
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let r = &r[path.to_str().unwrap()];
    assert_eq!(r["unknown_keys"], serde_json::json!(["llama.hidden_act"]));
    assert_eq!(
        r["unknown_tensors"],
        serde_json::json!(["blk.0.ffn_sub_norm.weight"])
    );
}
