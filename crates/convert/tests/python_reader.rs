//! llama.cpp's own Python `gguf` package reads the files `dlm convert` writes, and dequantizes
//! every tensor (TQ1_0 and TQ2_0 included, and Q6_K embeddings and LM heads) to exactly the values
//! our codecs give.

use std::path::Path;
use std::process::Command;

use convert::tiny::{TinyFamily, TinySpec};
use convert::{ConvertOptions, HeadTypes, OutType};
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
