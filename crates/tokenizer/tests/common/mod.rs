//! Fixture paths and loaders shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use gguf::Metadata;

/// `../shared/fixtures/<rel>` next to the repository, or `/work/shared/fixtures/<rel>` where the
/// checkout lives elsewhere.
pub fn fixture(rel: &str) -> PathBuf {
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    let base = if beside.exists() {
        beside
    } else {
        PathBuf::from("/work/shared/fixtures")
    };
    base.join(rel)
}

/// The metadata of a GGUF file.
pub fn gguf_metadata(path: &std::path::Path) -> Metadata {
    gguf::GgufFile::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .metadata
}

/// The metadata of the bundled stories260K model (converted from the stories260K fixture).
pub fn stories_metadata() -> Metadata {
    gguf_metadata(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K.gguf"))
}

/// `(text, ids)` pairs of `tests/fixtures/expected_ids.json` under `key` (see
/// `tests/fixtures/make_expected_ids.py` for how each set was produced).
pub fn expected_ids(key: &str) -> Vec<(String, Vec<u32>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/expected_ids.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` in {}", path.display()))
        .iter()
        .map(|pair| {
            let text = pair[0].as_str().unwrap().to_string();
            let ids = pair[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_u64().unwrap() as u32)
                .collect();
            (text, ids)
        })
        .collect()
}

/// The first 200 lines of the TinyStories sample.
pub fn story_lines() -> Vec<String> {
    std::fs::read_to_string(fixture("stories260K/tinystories_sample.txt"))
        .unwrap()
        .split('\n')
        .take(200)
        .map(str::to_string)
        .collect()
}

/// Every piece of a streamed decode, pushing `ids` one at a time and finishing.
pub fn stream_pieces(tok: &tokenizer::Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut stream = tokenizer::DecodeStream::new(tok, skip_special);
    let mut pieces: Vec<String> = ids.iter().map(|id| stream.push(*id).unwrap()).collect();
    pieces.push(stream.finish().unwrap());
    pieces
}
