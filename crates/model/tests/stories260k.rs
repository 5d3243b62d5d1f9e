//! The real trained stories260K model, converted by our converter, generates greedily from BOS
//! exactly the text llama2.c's own test expects (karpathy/llama2.c test_all.py, `run -t 0.0 -n 200`).

use std::path::Path;

mod common;

use model::Model;

/// llama2.c test_all.py `expected_stdout` (stories260K, temperature 0, 200 steps).
const EXPECTED: &str = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play with your ball, but I can't find it.\"\nLily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\nLily didn't want to help her mom, so she";

/// SentencePiece detokenization as llama2.c does it: `▁` is a space, `<0xNN>` a raw byte, and the
/// first piece after BOS loses its leading space.
fn detokenize(tokens: &[&str], ids: &[u32]) -> String {
    let mut bytes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let piece = tokens[*id as usize];
        if piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') {
            bytes.push(u8::from_str_radix(&piece[3..5], 16).unwrap());
            continue;
        }
        let text = piece.replace('▁', " ");
        let text = if i == 0 {
            text.trim_start_matches(' ').to_string()
        } else {
            text
        };
        bytes.extend_from_slice(text.as_bytes());
    }
    String::from_utf8(bytes).unwrap()
}

#[test]
fn greedy_from_bos_reproduces_llama2c() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K.gguf");
    let model = Model::load(&path).unwrap();
    let tokens = model
        .file()
        .metadata
        .get_str_array("tokenizer.ggml.tokens")
        .unwrap();
    let mut cache = model.new_cache(201);
    // run.c -n 200: 200 forwards from BOS, each printing its next token; it stops at BOS.
    let out = common::greedy(&model, &mut cache, &[1], 200, Some(1));
    let text = detokenize(&tokens, &out);
    assert_eq!(text, EXPECTED);
}
