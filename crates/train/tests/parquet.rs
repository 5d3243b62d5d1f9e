//! Parquet datasets for `data.path`: files written here with the parquet crate's own writer and
//! by pyarrow (tests/py/parquet_write.py, the writer behind `datasets` and the Hub's exports)
//! load to exactly the examples (token ids and labels) of the same records as JSONL; shards are
//! read in name order, `data.split` picks the Hub's split files, `data.columns` maps ShareGPT and
//! other names; a file without a usable column, a column of the wrong type, and a truncated or
//! corrupt file are errors naming what is wrong.
//!
//! The pyarrow cross-check is skipped with a note when python3 or pyarrow is missing, unless
//! `DLM_REQUIRE_PYTHON=1` (CI sets it), which turns the skip into a failure.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde_json::{json, Value};
use train::config::{ColumnsConfig, DataConfig, TrainConfig};
use train::data::{load_examples, pack, DataTokenizer, Loaded};

/// The Fast-dLLM v2 (Qwen2.5) tokenizer with its chat template, as in tests/data.rs, built once.
fn qwen() -> &'static DataTokenizer {
    static TOK: OnceLock<DataTokenizer> = OnceLock::new();
    TOK.get_or_init(common::fast_dllm_tokenizer)
}

fn data_config() -> DataConfig {
    TrainConfig::preset("qwen3_4b").unwrap().data
}

/// A chat of `turns` user/assistant exchanges, different for every `seed`.
fn chat(seed: usize, turns: usize) -> Vec<(String, String)> {
    let mut m = Vec::new();
    if seed.is_multiple_of(3) {
        m.push(("system".into(), format!("You are helper number {seed}.")));
    }
    for t in 0..turns {
        m.push(("user".into(), format!("What is {seed} + {t}?")));
        m.push(("assistant".into(), format!("{seed} + {t} = {}.", seed + t)));
    }
    m
}

fn chats(range: std::ops::Range<usize>) -> Vec<Vec<(String, String)>> {
    range.map(|i| chat(i, 1 + i % 3)).collect()
}

/// The same chats as JSONL `messages` lines.
fn jsonl_of(chats: &[Vec<(String, String)>]) -> String {
    chats
        .iter()
        .map(|c| {
            let msgs: Vec<Value> = c
                .iter()
                .map(|(r, t)| json!({"role": r, "content": t}))
                .collect();
            format!("{}\n", json!({ "messages": msgs }))
        })
        .collect()
}

/// A column the Rust writer below can write.
enum Col<'a> {
    /// `optional group NAME (LIST) { repeated group list { optional group element {
    /// optional binary ROLE (UTF8); optional binary CONTENT (UTF8); } } }`, as pyarrow writes
    /// list<struct<…>>; a `None` row is null.
    Chat {
        name: &'a str,
        role: &'a str,
        content: &'a str,
        rows: Vec<Option<Vec<(String, String)>>>,
    },
    /// `optional binary NAME (UTF8)`.
    Text {
        name: &'a str,
        rows: Vec<Option<String>>,
    },
    /// `optional int64 NAME`.
    Int { name: &'a str, rows: Vec<i64> },
}

impl Col<'_> {
    fn len(&self) -> usize {
        match self {
            Col::Chat { rows, .. } => rows.len(),
            Col::Text { rows, .. } => rows.len(),
            Col::Int { rows, .. } => rows.len(),
        }
    }

    fn schema(&self) -> String {
        match self {
            Col::Chat {
                name,
                role,
                content,
                ..
            } => format!(
                "optional group {name} (LIST) {{ repeated group list {{ optional group element {{ \
                 optional binary {role} (UTF8); optional binary {content} (UTF8); }} }} }}"
            ),
            Col::Text { name, .. } => format!("optional binary {name} (UTF8);"),
            Col::Int { name, .. } => format!("optional int64 {name};"),
        }
    }
}

fn bytes(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

/// Writes `cols` (of equal length) to `path` with the parquet crate's low-level writer, in row
/// groups of `group_rows` rows.
fn write_parquet(path: &Path, cols: &[Col], compression: Compression, group_rows: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let fields: Vec<String> = cols.iter().map(Col::schema).collect();
    let schema = parse_message_type(&format!("message schema {{ {} }}", fields.join(" "))).unwrap();
    let props = WriterProperties::builder()
        .set_compression(compression)
        .build();
    let mut writer = SerializedFileWriter::new(
        File::create(path).unwrap(),
        Arc::new(schema),
        Arc::new(props),
    )
    .unwrap();
    let n = cols[0].len();
    for start in (0..n).step_by(group_rows) {
        let rows = start..(start + group_rows).min(n);
        let mut group = writer.next_row_group().unwrap();
        for col in cols {
            match col {
                Col::Chat { rows: data, .. } => {
                    // Two leaves: role, then content. Levels: def 4 = a message, 1 = an empty
                    // list, 0 = null; rep 0 = a new row, 1 = the next message of the row.
                    for leaf in 0..2 {
                        let (mut values, mut defs, mut reps) = (Vec::new(), Vec::new(), Vec::new());
                        for row in &data[rows.clone()] {
                            match row {
                                None => {
                                    defs.push(0);
                                    reps.push(0);
                                }
                                Some(m) if m.is_empty() => {
                                    defs.push(1);
                                    reps.push(0);
                                }
                                Some(m) => {
                                    for (j, (role, content)) in m.iter().enumerate() {
                                        values.push(bytes(if leaf == 0 { role } else { content }));
                                        defs.push(4);
                                        reps.push(i16::from(j > 0));
                                    }
                                }
                            }
                        }
                        let mut c = group.next_column().unwrap().unwrap();
                        c.typed::<ByteArrayType>()
                            .write_batch(&values, Some(&defs), Some(&reps))
                            .unwrap();
                        c.close().unwrap();
                    }
                }
                Col::Text { rows: data, .. } => {
                    let part = &data[rows.clone()];
                    let values: Vec<ByteArray> = part.iter().flatten().map(|s| bytes(s)).collect();
                    let defs: Vec<i16> = part.iter().map(|r| i16::from(r.is_some())).collect();
                    let mut c = group.next_column().unwrap().unwrap();
                    c.typed::<ByteArrayType>()
                        .write_batch(&values, Some(&defs), None)
                        .unwrap();
                    c.close().unwrap();
                }
                Col::Int { rows: data, .. } => {
                    let part = &data[rows.clone()];
                    let mut c = group.next_column().unwrap().unwrap();
                    c.typed::<Int64Type>()
                        .write_batch(part, Some(&vec![1; part.len()]), None)
                        .unwrap();
                    c.close().unwrap();
                }
            }
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
}

fn chat_col(rows: &[Vec<(String, String)>]) -> Col<'static> {
    Col::Chat {
        name: "messages",
        role: "role",
        content: "content",
        rows: rows.iter().cloned().map(Some).collect(),
    }
}

fn load(path: &Path, data: &DataConfig) -> Loaded {
    load_examples(path, qwen(), data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_err(path: &Path, data: &DataConfig) -> String {
    match load_examples(path, qwen(), data) {
        Ok(l) => panic!("{}: loaded {} examples", path.display(), l.examples.len()),
        Err(e) => e.to_string(),
    }
}

/// The ids and labels of every example must be identical, not just as many.
fn assert_same_examples(got: &Loaded, want: &Loaded, what: &str) {
    assert_eq!(got.examples.len(), want.examples.len(), "{what}: count");
    for (i, (g, w)) in got.examples.iter().zip(&want.examples).enumerate() {
        assert_eq!(g.input_ids, w.input_ids, "{what}: example {i} ids");
        assert_eq!(g.labels, w.labels, "{what}: example {i} labels");
    }
    assert_eq!(got.stats.conversations, want.stats.conversations, "{what}");
    assert_eq!(got.stats.documents, want.stats.documents, "{what}");
    assert_eq!(
        got.stats.assistant_turns, want.stats.assistant_turns,
        "{what}"
    );
}

#[test]
fn sharded_split_directory_loads_exactly_like_the_same_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dataset");
    let all = chats(0..13);
    // Two train shards (snappy in row groups of 2, zstd in row groups of 3), a test shard
    // that must not be read, and files the Hub keeps beside the data.
    write_parquet(
        &root.join("data/train-00000-of-00002.parquet"),
        &[chat_col(&all[..5])],
        Compression::SNAPPY,
        2,
    );
    write_parquet(
        &root.join("data/train-00001-of-00002.parquet"),
        &[chat_col(&all[5..11])],
        Compression::ZSTD(Default::default()),
        3,
    );
    write_parquet(
        &root.join("data/test-00000-of-00001.parquet"),
        &[chat_col(&all[11..])],
        Compression::SNAPPY,
        2,
    );
    std::fs::write(root.join("README.md"), "---\nlicense: mit\n---\n").unwrap();
    std::fs::create_dir_all(root.join(".cache/huggingface")).unwrap();
    std::fs::write(root.join(".cache/huggingface/x.parquet"), "not data").unwrap();

    let jsonl = dir.path().join("train.jsonl");
    std::fs::write(&jsonl, jsonl_of(&all[..11])).unwrap();
    let want = load(&jsonl, &data_config());
    assert_eq!(want.examples.len(), 11);

    let mut data = data_config();
    data.split = Some("train".into());
    let got = load(&root, &data);
    assert_same_examples(&got, &want, "train split");
    assert_eq!(got.stats.files, 2);
    // Packed windows too (the training input).
    let (a, b) = (
        pack(&got.examples, 64, 32, true, 151665).unwrap(),
        pack(&want.examples, 64, 32, true, 151665).unwrap(),
    );
    assert_eq!(a.windows, b.windows);
    assert!(a.stats.windows > 3);

    // One shard file on its own.
    let one = load(
        &root.join("data/train-00001-of-00002.parquet"),
        &data_config(),
    );
    assert_eq!(one.examples, want.examples[5..]);

    // The test split alone; a split no file names lists those that are there; no split at all
    // with train and test files asks for one.
    data.split = Some("test".into());
    let test = load(&root, &data);
    assert_eq!(test.examples.len(), 2);
    data.split = Some("validation".into());
    let err = load_err(&root, &data);
    assert!(
        err.contains("split `validation`") && err.contains("suggest: test, train"),
        "{err}"
    );
    let err = load_err(&root, &data_config());
    assert!(
        err.contains("train, test") && err.contains("data.split"),
        "{err}"
    );
}

#[test]
fn text_columns_nulls_gzip_and_split_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let docs: Vec<Option<String>> = (0..9)
        .map(|i| match i {
            4 => None,
            7 => Some(String::new()),
            i => Some(format!(
                "Document {i}: the cat sat on mat {i}.\nSecond line {i}."
            )),
        })
        .collect();
    // The dataset viewer's layout: CONFIG/SPLIT/NNNN.parquet.
    write_parquet(
        &root.join("default/train/0000.parquet"),
        &[
            Col::Int {
                name: "id",
                rows: (0..5).collect(),
            },
            Col::Text {
                name: "text",
                rows: docs[..5].to_vec(),
            },
        ],
        Compression::GZIP(Default::default()),
        2,
    );
    write_parquet(
        &root.join("default/train/0001.parquet"),
        &[Col::Text {
            name: "text",
            rows: docs[5..].to_vec(),
        }],
        Compression::UNCOMPRESSED,
        10,
    );
    let jsonl = dir.path().join("docs.jsonl");
    let lines: String = docs
        .iter()
        .flatten()
        .map(|d| format!("{}\n", json!({ "text": d })))
        .collect();
    std::fs::write(&jsonl, lines).unwrap();
    let want = load(&jsonl, &data_config());
    let mut data = data_config();
    data.split = Some("train".into());
    let got = load(&root, &data);
    assert_same_examples(&got, &want, "text");
    assert_eq!(got.stats.documents, 7);
    // The null row and the empty document are skipped, and counted.
    assert_eq!(got.stats.skipped, 2);
    assert_eq!(want.stats.skipped, 1);
}

#[test]
fn sharegpt_and_renamed_columns_map_to_the_same_chats() {
    let dir = tempfile::tempdir().unwrap();
    let all = chats(0..6);
    let jsonl = dir.path().join("chats.jsonl");
    std::fs::write(&jsonl, jsonl_of(&all)).unwrap();
    let want = load(&jsonl, &data_config());

    // ShareGPT: `conversations` of {from, value} with human/gpt roles, found without settings.
    let sharegpt: Vec<Option<Vec<(String, String)>>> = all
        .iter()
        .map(|c| {
            Some(
                c.iter()
                    .map(|(r, t)| {
                        let r = match r.as_str() {
                            "user" => "human",
                            "assistant" => "gpt",
                            r => r,
                        };
                        (r.to_string(), t.clone())
                    })
                    .collect(),
            )
        })
        .collect();
    let path = dir.path().join("sharegpt.parquet");
    write_parquet(
        &path,
        &[Col::Chat {
            name: "conversations",
            role: "from",
            content: "value",
            rows: sharegpt.clone(),
        }],
        Compression::SNAPPY,
        4,
    );
    assert_same_examples(&load(&path, &data_config()), &want, "sharegpt");

    // Any other names, through data.columns.
    let path = dir.path().join("dialog.parquet");
    write_parquet(
        &path,
        &[
            Col::Text {
                name: "source",
                rows: vec![Some("web".into()); all.len()],
            },
            Col::Chat {
                name: "dialog",
                role: "speaker",
                content: "utterance",
                rows: sharegpt,
            },
        ],
        Compression::ZSTD(Default::default()),
        5,
    );
    let err = load_err(&path, &data_config());
    assert!(
        err.contains("no usable column")
            && err.contains("source (string)")
            && err.contains("dialog (list<struct<speaker: string, utterance: string>>)"),
        "{err}"
    );
    let mut data = data_config();
    data.columns = ColumnsConfig {
        messages: Some("dialog".into()),
        ..ColumnsConfig::default()
    };
    let err = load_err(&path, &data);
    assert!(
        err.contains("no role key") && err.contains("data.columns.role"),
        "{err}"
    );
    data.columns.role = Some("speaker".into());
    data.columns.content = Some("utterance".into());
    assert_same_examples(&load(&path, &data), &want, "renamed");

    // The same mapping applies to JSONL lines.
    let renamed = dir.path().join("renamed.jsonl");
    let lines: String = all
        .iter()
        .map(|c| {
            let m: Vec<Value> = c
                .iter()
                .map(|(r, t)| json!({"speaker": r, "utterance": t}))
                .collect();
            format!("{}\n", json!({ "dialog": m, "source": "web" }))
        })
        .collect();
    std::fs::write(&renamed, lines).unwrap();
    assert_same_examples(&load(&renamed, &data), &want, "renamed jsonl");

    // A configured column that is not there.
    data.columns.messages = Some("chat".into());
    let err = load_err(&path, &data);
    assert!(
        err.contains("data.columns.messages names `chat`") && err.contains("dialog ("),
        "{err}"
    );
}

#[test]
fn unusable_truncated_and_corrupt_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // No usable column: the error names every column with its type.
    let path = dir.path().join("nothing.parquet");
    write_parquet(
        &path,
        &[
            Col::Int {
                name: "id",
                rows: vec![1, 2],
            },
            Col::Text {
                name: "prompt",
                rows: vec![Some("a".into()), Some("b".into())],
            },
        ],
        Compression::SNAPPY,
        2,
    );
    let err = load_err(&path, &data_config());
    assert!(err.contains("nothing.parquet: no usable column"), "{err}");
    assert!(
        err.contains("id (int64), prompt (string)") && err.contains("data.columns.text"),
        "{err}"
    );
    // A `text` column that is not text.
    let path = dir.path().join("ints.parquet");
    write_parquet(
        &path,
        &[Col::Int {
            name: "text",
            rows: vec![1, 2],
        }],
        Compression::SNAPPY,
        2,
    );
    let err = load_err(&path, &data_config());
    assert!(
        err.contains("column `text` is int64, not a string"),
        "{err}"
    );

    // A good file, then cut short, then with its first page overwritten.
    let good = dir.path().join("good.parquet");
    write_parquet(&good, &[chat_col(&chats(0..8))], Compression::SNAPPY, 3);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = load_err(&cut, &data_config());
    assert!(
        err.contains("cut.parquet: not a readable parquet file"),
        "{err}"
    );
    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    let err = load_err(&empty, &data_config());
    assert!(
        err.contains("empty.parquet: not a readable parquet file"),
        "{err}"
    );
    let mut broken = bytes.clone();
    for b in &mut broken[4..40] {
        *b = 0xff;
    }
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, &broken).unwrap();
    let err = load_err(&corrupt, &data_config());
    assert!(
        err.contains("corrupt.parquet: row 0 (row group 0)"),
        "{err}"
    );

    // A row whose chat has no assistant turn names the row.
    let path = dir.path().join("noassistant.parquet");
    let mut rows = chats(0..4);
    rows[2].retain(|(r, _)| r != "assistant");
    write_parquet(&path, &[chat_col(&rows)], Compression::SNAPPY, 3);
    let err = load_err(&path, &data_config());
    assert!(
        err.contains("noassistant.parquet: row 2: `messages` has no assistant message"),
        "{err}"
    );
}

fn python() -> String {
    std::env::var("DLM_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether python3 with pyarrow is usable; prints why not (or panics when required).
fn pyarrow_ready() -> bool {
    let probe = Command::new(python())
        .args(["-c", "import pyarrow.parquet"])
        .output();
    let problem = match probe {
        Err(e) => format!("cannot run `{}`: {e}", python()),
        Ok(o) if !o.status.success() => format!(
            "`{}` lacks pyarrow: {}",
            python(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => return true,
    };
    if std::env::var("DLM_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("DLM_REQUIRE_PYTHON=1 but {problem} (pip install -r tests/py/requirements.txt)");
    }
    eprintln!("skipped: {problem} (pip install -r tests/py/requirements.txt; DLM_REQUIRE_PYTHON=1 makes this fail)");
    false
}

#[test]
fn files_written_by_pyarrow_load_like_ours_and_like_jsonl() {
    if !pyarrow_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let all = chats(0..10);
    let as_json = |c: &Vec<(String, String)>, r: &str, t: &str| -> Value {
        Value::Array(c.iter().map(|(a, b)| json!({ r: a, t: b })).collect())
    };
    let messages: Vec<Value> = all.iter().map(|c| as_json(c, "role", "content")).collect();
    let sharegpt: Vec<Value> = all
        .iter()
        .map(|c| {
            let c: Vec<(String, String)> = c
                .iter()
                .map(|(r, t)| {
                    let r = if r == "user" {
                        "human"
                    } else if r == "assistant" {
                        "gpt"
                    } else {
                        r
                    };
                    (r.to_string(), t.clone())
                })
                .collect();
            as_json(&c, "from", "value")
        })
        .collect();
    let texts: Vec<Value> = (0..7)
        .map(|i| json!(format!("Story {i}: once upon a time.")))
        .collect();
    let spec = json!([
        {"path": "chat/data/train-00000-of-00002.parquet", "compression": "snappy",
         "row_group_size": 2, "columns": {"id": (0..4).collect::<Vec<_>>(), "messages": messages[..4]}},
        {"path": "chat/data/train-00001-of-00002.parquet", "compression": "zstd",
         "row_group_size": 4, "columns": {"messages": messages[4..]}},
        {"path": "chat/data/validation-00000-of-00001.parquet", "compression": "gzip",
         "columns": {"messages": messages[..1]}},
        {"path": "sharegpt/train.parquet", "compression": "zstd", "row_group_size": 3,
         "columns": {"conversations": sharegpt}},
        {"path": "text/default/train/0000.parquet", "compression": "gzip", "row_group_size": 3,
         "columns": {"text": texts}},
    ]);
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/parquet_write.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&spec_path)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "parquet_write.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    // pyarrow wrote what the test means: several row groups, the three codecs, nested chats.
    assert_eq!(summary[0]["row_groups"], 2, "{summary}");
    assert_eq!(summary[0]["compression"], "SNAPPY");
    assert_eq!(summary[1]["compression"], "ZSTD");
    assert_eq!(summary[2]["compression"], "GZIP");
    assert!(
        summary[0]["schema"]
            .as_str()
            .unwrap()
            .contains("list<element: struct<role: string, content: string>>"),
        "{summary}"
    );

    let jsonl = dir.path().join("chats.jsonl");
    std::fs::write(&jsonl, jsonl_of(&all)).unwrap();
    let want = load(&jsonl, &data_config());
    let mut train = data_config();
    train.split = Some("train".into());
    assert_same_examples(
        &load(&dir.path().join("chat"), &train),
        &want,
        "pyarrow chat",
    );
    assert_same_examples(
        &load(&dir.path().join("sharegpt"), &train),
        &want,
        "pyarrow sharegpt",
    );
    // Ours and pyarrow's files of the same chats agree.
    let ours = dir.path().join("ours.parquet");
    write_parquet(&ours, &[chat_col(&all)], Compression::SNAPPY, 4);
    assert_same_examples(&load(&ours, &data_config()), &want, "rust writer");

    let text_jsonl = dir.path().join("text.jsonl");
    let lines: String = texts
        .iter()
        .map(|t| format!("{}\n", json!({ "text": t })))
        .collect();
    std::fs::write(&text_jsonl, lines).unwrap();
    assert_same_examples(
        &load(&dir.path().join("text"), &train),
        &load(&text_jsonl, &data_config()),
        "pyarrow text",
    );
}
