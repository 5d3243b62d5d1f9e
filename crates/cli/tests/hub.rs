//! `hf://` sources end to end, against a stand-in for the Hub on loopback
//! (`tests/py/hub_standin.py`: the API and resolve paths hf-hub and huggingface_hub use, with
//! ETag, X-Repo-Commit, LFS redirects, Range and a 401 for a private repository). `HF_ENDPOINT`
//! points at it and `HF_HOME` at a fresh folder, so nothing touches the real Hub or cache.
//! Shown: conversion from the Hub equals the local one and works offline; resumed downloads
//! (within a run, and in the next run); the 401 message and tokens; GGUF choice by file or
//! `:QUANT`, served; training from a Hub checkpoint and a parquet dataset split, then offline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use convert::tiny::{TinyFamily, TinySpec};

mod common;

/// The stand-in process; killed on drop.
struct Standin {
    child: Child,
    url: String,
}

impl Standin {
    /// Starts the stand-in on `root`, or `None` (test skipped) when python3 is missing and
    /// `DLM_REQUIRE_PYTHON` is unset.
    fn start(root: &Path, extra: &[&str]) -> Option<Standin> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/hub_standin.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(root)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if std::env::var_os("DLM_REQUIRE_PYTHON").is_none() => {
                eprintln!("skipped: cannot run python3 for the Hub stand-in: {e}");
                return None;
            }
            Err(e) => panic!("python3: {e}"),
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .expect("stand-in port line");
        Some(Standin {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The requests served so far: (method, path, Range header).
    fn log(&self) -> Vec<(String, String, Option<String>)> {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())",
                &format!("{}/_standin/log", self.url),
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["method"].as_str().unwrap().to_string(),
                    r["path"].as_str().unwrap().to_string(),
                    r["range"].as_str().map(str::to_string),
                )
            })
            .collect()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dlm` with the Hub environment: the stand-in's URL (or a closed port), `HF_HOME` under `home`.
fn dlm(home: &Path, endpoint: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dlm"));
    c.args(args)
        .current_dir(home)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home.join("hf"))
        .env("CANDLE_NUM_THREADS", "1");
    for k in [
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "HF_TOKEN_PATH",
        "HUGGING_FACE_HUB_TOKEN",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn fails_with(o: Output, needles: &[&str]) {
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for n in needles {
        assert!(t.contains(n), "`{n}` not in: {t}");
    }
}

fn snapshot(home: &Path, folder: &str) -> PathBuf {
    let repo = home.join("hf/hub").join(folder);
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    repo.join("snapshots").join(commit.trim())
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            for sub in files_under(&e.path()) {
                out.push(format!("{name}/{sub}"));
            }
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

#[test]
fn convert_from_the_hub_equals_local_then_works_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hub");
    let repo = root.join("models/org/tiny-bitnet");
    let mut spec = TinySpec::new(TinyFamily::BitNet);
    spec.shards = 2;
    spec.write(&repo).unwrap();
    // Files no conversion needs: never fetched.
    std::fs::create_dir_all(repo.join("original")).unwrap();
    std::fs::write(repo.join("original/consolidated.bin"), vec![7u8; 4096]).unwrap();
    std::fs::write(repo.join("README.md"), "# tiny\n").unwrap();
    let Some(hub) = Standin::start(&root, &[]) else {
        return;
    };
    let home = tmp.path();
    let local = home.join("local.gguf");
    let repo_s = repo.display().to_string();
    let local_s = local.display().to_string();
    ok(dlm(
        home,
        &hub.url,
        &[],
        &[
            "convert",
            &repo_s,
            "--outtype",
            "i2_s",
            "--outfile",
            &local_s,
            "-q",
        ],
    ));
    ok(dlm(
        home,
        &hub.url,
        &[],
        &["convert", "hf://org/tiny-bitnet", "--outtype", "i2_s", "-q"],
    ));
    let from_hub = std::fs::read(home.join("tiny-bitnet-i2_s.gguf")).unwrap();
    assert!(
        from_hub == std::fs::read(&local).unwrap(),
        "hf:// and local conversions differ"
    );

    // The cache is huggingface_hub's layout, holding only what the conversion needs.
    let snap = snapshot(home, "models--org--tiny-bitnet");
    let mut want: Vec<String> = [
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .filter(|f| repo.join(f).exists())
    .collect();
    want.sort();
    assert_eq!(files_under(&snap), want);
    for f in &want {
        let link = std::fs::read_link(snap.join(f)).unwrap();
        assert!(link.starts_with("../../blobs"), "{f} -> {}", link.display());
        assert_eq!(
            std::fs::read(snap.join(f)).unwrap(),
            std::fs::read(repo.join(f)).unwrap(),
            "{f}"
        );
    }
    let gets: Vec<_> = hub.log().into_iter().map(|(_, p, _)| p).collect();
    assert!(!gets
        .iter()
        .any(|p| p.contains("original/") || p.contains("README")));

    // The Hub gone: HF_HUB_OFFLINE=1 converts from the cache alone, to the same bytes.
    drop(hub);
    let closed = "http://127.0.0.1:9";
    let off = [("HF_HUB_OFFLINE", "1")];
    ok(dlm(
        home,
        closed,
        &off,
        &[
            "convert",
            "hf://org/tiny-bitnet",
            "--outtype",
            "i2_s",
            "--outfile",
            "off.gguf",
            "-q",
        ],
    ));
    assert!(std::fs::read(home.join("off.gguf")).unwrap() == from_hub);
    // Without the flag, an unreachable Hub says how to work offline.
    fails_with(
        dlm(
            home,
            closed,
            &[],
            &["convert", "hf://org/tiny-bitnet", "-q"],
        ),
        &["cannot reach http://127.0.0.1:9", "HF_HUB_OFFLINE=1"],
    );
    // Offline, what the cache lacks is named.
    fails_with(
        dlm(home, closed, &off, &["convert", "hf://org/absent", "-q"]),
        &["HF_HUB_OFFLINE", "hf://org/absent", "not in the cache"],
    );
    std::fs::remove_file(snap.join("model-00002-of-00002.safetensors")).unwrap();
    fails_with(
        dlm(
            home,
            closed,
            &off,
            &["convert", "hf://org/tiny-bitnet", "-q"],
        ),
        &["`model-00002-of-00002.safetensors`", "not in the cache"],
    );
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hub");
    let repo = root.join("models/org/tiny");
    TinySpec::new(TinyFamily::Llama).write(&repo).unwrap();
    let Some(hub) = Standin::start(&root, &["--cut", "model.safetensors"]) else {
        return;
    };
    let home = tmp.path();
    ok(dlm(
        home,
        &hub.url,
        &[],
        &["convert", "hf://org/tiny", "-q"],
    ));
    let weights = std::fs::read(repo.join("model.safetensors")).unwrap();
    let cached = std::fs::read(snapshot(home, "models--org--tiny").join("model.safetensors"));
    assert!(cached.unwrap() == weights, "the resumed file differs");
    // The body was cut at half; the client asked again from where it stopped.
    let ranges: Vec<String> = hub
        .log()
        .into_iter()
        .filter(|(m, p, _)| m == "GET" && p.starts_with("/cdn-lfs/"))
        .filter_map(|(_, _, r)| r)
        .collect();
    let half = weights.len() / 2;
    assert!(
        ranges.contains(&format!("bytes={half}-")),
        "no resume from byte {half}: {ranges:?}"
    );
    assert!(!home
        .join("hf/hub/models--org--tiny/blobs")
        .read_dir()
        .unwrap()
        .any(|e| { e.unwrap().path().extension().is_some_and(|x| x == "part") }));
}

#[test]
fn a_download_that_keeps_failing_resumes_in_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hub");
    let repo = root.join("models/org/tiny");
    TinySpec::new(TinyFamily::Llama).write(&repo).unwrap();
    // Nine cut bodies: the first run's five attempts (one and three retries, and hf-hub's
    // uncounted fourth) all fail; the second run's first four too, and its fifth completes.
    let Some(hub) = Standin::start(&root, &["--cut", "model.safetensors:9"]) else {
        return;
    };
    let home = tmp.path();
    fails_with(
        dlm(home, &hub.url, &[], &["convert", "hf://org/tiny", "-q"]),
        &[
            "`model.safetensors`",
            "after 3 retries",
            "run again to resume",
        ],
    );
    let blobs = home.join("hf/hub/models--org--tiny/blobs");
    let part = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "part"))
        .expect("a .part file");
    let weights = std::fs::read(repo.join("model.safetensors")).unwrap();
    let kept = std::fs::read(&part).unwrap();
    assert!(kept.len() > weights.len() / 2 && kept.len() < weights.len());
    assert!(
        kept[..] == weights[..kept.len()],
        "the partial file is not a prefix"
    );
    let requests = |hub: &Standin| -> Vec<String> {
        hub.log()
            .into_iter()
            .filter(|(m, p, r)| {
                m == "GET" && p.starts_with("/cdn-lfs/") && r.as_deref() != Some("bytes=0-0")
            })
            .filter_map(|(_, _, r)| r)
            .collect()
    };
    assert_eq!(requests(&hub).len(), 5);
    // The next run continues from the part file, and its last attempt completes the file
    // (hf-hub calls that attempt failed; the hub crate finishes the part file).
    ok(dlm(
        home,
        &hub.url,
        &[],
        &["convert", "hf://org/tiny", "-q"],
    ));
    let cached = std::fs::read(snapshot(home, "models--org--tiny").join("model.safetensors"));
    assert!(cached.unwrap() == weights, "the resumed file differs");
    let second = requests(&hub);
    assert_eq!(second.len(), 10, "{second:?}");
    assert_eq!(second[5], format!("bytes={}-", kept.len()));
    assert!(home.join("tiny-f16.gguf").is_file());
}

#[test]
fn a_private_repo_needs_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hub");
    TinySpec::new(TinyFamily::Llama)
        .write(&root.join("models/org/secret"))
        .unwrap();
    let Some(hub) = Standin::start(&root, &["--private", "org/secret", "--token", "hf_good"])
    else {
        return;
    };
    let home = tmp.path();
    let args = ["convert", "hf://org/secret", "-q"];
    fails_with(
        dlm(home, &hub.url, &[], &args),
        &[
            "hf://org/secret",
            "401",
            "set HF_TOKEN",
            "huggingface-cli login",
        ],
    );
    fails_with(
        dlm(home, &hub.url, &[("HF_TOKEN", "hf_bad")], &args),
        &["401", "was refused"],
    );
    ok(dlm(home, &hub.url, &[("HF_TOKEN", "hf_good")], &args));
    // The token file that `huggingface-cli login` writes serves as well.
    std::fs::write(home.join("hf/token"), "hf_good\n").unwrap();
    std::fs::remove_file(home.join("secret-f16.gguf")).unwrap();
    ok(dlm(home, &hub.url, &[], &args));
    assert!(home.join("secret-f16.gguf").is_file());
}

#[test]
fn a_gguf_repo_is_picked_by_file_or_quant() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hub");
    let repo = root.join("models/org/tiny-gguf");
    std::fs::create_dir_all(&repo).unwrap();
    let spec = TinySpec::new(TinyFamily::BitNet);
    for (t, name) in [
        (convert::OutType::I2_S, "tiny-I2_S.gguf"),
        (convert::OutType::TQ2_0, "tiny-TQ2_0.gguf"),
    ] {
        let g = spec.write_gguf(&tmp.path().join(name), t).unwrap();
        std::fs::rename(g, repo.join(name)).unwrap();
    }
    let Some(hub) = Standin::start(&root, &[]) else {
        return;
    };
    let home = tmp.path();
    let inspect = |src: &str| dlm(home, &hub.url, &[], &["inspect", src, "--json"]);
    fails_with(
        inspect("hf://org/tiny-gguf"),
        &["2 GGUF files", "tiny-I2_S.gguf", "tiny-TQ2_0.gguf", ":I2_S"],
    );
    fails_with(
        inspect("hf://org/tiny-gguf:Q4_K_M"),
        &[
            "no GGUF file matches `:Q4_K_M`",
            "tiny-I2_S.gguf, tiny-TQ2_0.gguf",
        ],
    );
    for (src, file) in [
        ("hf://org/tiny-gguf:i2_s", "tiny-I2_S.gguf"),
        ("hf://org/tiny-gguf/tiny-TQ2_0.gguf", "tiny-TQ2_0.gguf"),
    ] {
        let o = ok(inspect(src));
        let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let want = dlm(
            home,
            &hub.url,
            &[],
            &["inspect", &repo.join(file).display().to_string(), "--json"],
        );
        let mut w: serde_json::Value = serde_json::from_slice(&want.stdout).unwrap();
        w["file"] = d["file"].clone();
        assert_eq!(d, w, "{src}");
    }
    // Only the chosen files were downloaded.
    let snap = snapshot(home, "models--org--tiny-gguf");
    assert_eq!(files_under(&snap), ["tiny-I2_S.gguf", "tiny-TQ2_0.gguf"]);

    // `dlm serve` (the program `dlm_server` runs) serves the repository's I2_S file.
    let mut server = Command::new(env!("CARGO_BIN_EXE_dlm"))
        .args(["serve", "--model", "hf://org/tiny-gguf:I2_S", "--port", "0"])
        .current_dir(home)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", home.join("hf"))
        .env_remove("HF_HUB_OFFLINE")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut seen = String::new();
    let port = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = server.kill();
            panic!("the server exited: {seen}");
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            break digits.parse::<u16>().unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    // The server listens while it loads; /health turns 200 once the model is in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !request(port, "GET /health", "").starts_with("HTTP/1.1 200") {
        assert!(
            std::time::Instant::now() < deadline,
            "/health never answered 200"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answer = request(
        port,
        "POST /v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4}"#,
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["model"], "tiny-I2_S", "{body}");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant", "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{body}"
    );
}

/// One HTTP/1.1 request over a plain socket (`line`: method and path); the raw response.
fn request(port: u16, line: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    write!(
        s,
        "{line} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn train_from_a_hub_checkpoint_and_dataset_then_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hub");
    let src = common::shared_fixtures().join("stories260K");
    let model = root.join("models/org/tiny");
    std::fs::create_dir_all(&model).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    // A parquet dataset laid out as the Hub's converter does: split shards under data/.
    let data = root.join("datasets/org/chat/data");
    let sample = std::fs::read_to_string(src.join("tinystories_sample.txt")).unwrap();
    let docs: Vec<&str> = sample
        .split("\n\n")
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .take(12)
        .collect();
    common::write_text_parquet(&data.join("train-00000-of-00002.parquet"), &docs[..6]);
    common::write_text_parquet(&data.join("train-00001-of-00002.parquet"), &docs[6..]);
    common::write_text_parquet(&data.join("test-00000-of-00001.parquet"), &docs[..2]);
    std::fs::write(root.join("datasets/org/chat/README.md"), "# chat\n").unwrap();
    let Some(hub) = Standin::start(&root, &[]) else {
        return;
    };
    let home = tmp.path();
    let train = |endpoint: &str, env: &[(&str, &str)], out: &str| {
        dlm(
            home,
            endpoint,
            env,
            &[
                "train",
                "model=stories260k",
                "source.path=hf://org/tiny",
                "data.path=hf://datasets/org/chat",
                "data.split=train",
                &format!("output.path={out}"),
                "training.seq_len=64",
                "conversion.bd_size=16",
                "training.batch_size=2",
                "conversion.total_tokens=256",
            ],
        )
    };
    let o = ok(train(&hub.url, &[], "out1"));
    assert!(text(&o).contains("trained"), "{}", text(&o));
    assert!(home.join("out1/model.safetensors").is_file());
    let snap = snapshot(home, "datasets--org--chat");
    // Only the train split's shards were downloaded.
    assert_eq!(
        files_under(&snap),
        [
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet"
        ]
    );
    assert!(
        text(&o).contains("12 examples from 2 file(s)"),
        "{}",
        text(&o)
    );
    drop(hub);
    ok(train(
        "http://127.0.0.1:9",
        &[("HF_HUB_OFFLINE", "1")],
        "out2",
    ));
    assert!(
        std::fs::read(home.join("out1/model.safetensors")).unwrap()
            == std::fs::read(home.join("out2/model.safetensors")).unwrap(),
        "the offline run trained on something else"
    );
}
