//! Non-finite SentencePiece scores (issue 13): the merge order is built from
//! `tokenizer.ggml.scores`, and a NaN there used to make the sort's comparator inconsistent (a
//! panic inside the standard library). A non-finite score is now refused at load, naming the key,
//! the index and the piece.

mod common;

use gguf::{GgufFile, GgufWriter, Metadata, Value, ValueType};
use tokenizer::Tokenizer;

/// The stories260K tokenizer keys (tokenizer.huggingface.json removed, so the keys are used) with
/// `scores[at] = score`, written through the GGUF writer and read back, as `dlm inspect` would.
fn with_score(at: usize, score: f32) -> Metadata {
    let mut md = common::stories_metadata();
    md.remove(tokenizer::KEY_HF_JSON).unwrap();
    let mut scores = md.get_f32_array("tokenizer.ggml.scores").unwrap();
    scores[at] = score;
    md.insert(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
    );
    let mut w = GgufWriter::new();
    for (k, v) in md.iter() {
        w.add(k, v.clone()).unwrap();
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes, |_, _, _| Ok(())).unwrap();
    GgufFile::from_bytes(bytes).unwrap().metadata
}

#[test]
fn a_nan_score_is_refused_naming_the_key_index_and_piece() {
    let md = with_score(300, f32::NAN);
    let piece = md.get_str_array("tokenizer.ggml.tokens").unwrap()[300].to_string();
    let err = Tokenizer::from_gguf(&md).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "invalid GGUF tokenizer: tokenizer.ggml.scores[300] (piece {piece:?}) is NaN: \
             scores must be finite"
        )
    );
}

#[test]
fn an_infinite_score_is_refused_too() {
    for (score, shown) in [(f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let err = Tokenizer::from_gguf(&with_score(7, score))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.ggml.scores[7]") && err.contains(&format!("is {shown}:")),
            "{err}"
        );
    }
}

#[test]
fn finite_scores_still_load_and_encode_as_before() {
    // The round trip through the writer changes nothing: same ids as the untouched metadata.
    let mut md = common::stories_metadata();
    md.remove(tokenizer::KEY_HF_JSON).unwrap();
    let score = md.get_f32_array("tokenizer.ggml.scores").unwrap()[300];
    let a = Tokenizer::from_gguf(&md).unwrap();
    let b = Tokenizer::from_gguf(&with_score(300, score)).unwrap();
    let text = "Once upon a time, there was a little girl named Lily.";
    assert_eq!(a.encode(text, true).unwrap(), b.encode(text, true).unwrap());
    assert!(a.encode(text, true).unwrap().len() > 5);
}
