//! The Llama-2 SentencePiece vocabulary of llama-2-tiny-random.gguf (32000 pieces with scores, no
//! tokenizer.huggingface.json): the tokenizer is built from the GGUF keys alone.

mod common;

use common::{expected_ids, gguf_metadata, stream_pieces};
use tokenizer::{ChatTemplate, TemplateSource, Tokenizer};

fn llama2() -> (gguf::Metadata, Tokenizer) {
    let md = gguf_metadata(&common::fixture("third-party/llama-2-tiny-random.gguf"));
    assert!(!md.contains_key(tokenizer::KEY_HF_JSON));
    assert_eq!(md.get_str("tokenizer.ggml.model").unwrap(), "llama");
    let tok = Tokenizer::from_gguf(&md).unwrap();
    (md, tok)
}

#[test]
fn well_known_llama2_ids() {
    // Produced once with the `sentencepiece` library 0.2.3 from a SentencePiece BPE model built out
    // of this file's pieces/scores/types with Llama-2's normalizer settings (see
    // tests/fixtures/make_expected_ids.py); they are also Llama-2's published ids
    // ("Hello" 15043, "▁world" 3186, BOS 1).
    let (_, tok) = llama2();
    let cases: &[(&str, &[u32])] = &[
        ("Hello world", &[15043, 3186]),
        ("Hello", &[15043]),
        (" world", &[29871, 3186]),
        ("café 😀", &[274, 28059, 29871, 243, 162, 155, 131]),
        (
            "  two leading spaces\nnew line",
            &[259, 1023, 8236, 8162, 13, 1482, 1196],
        ),
        (
            "The quick brown fox jumps over the lazy dog.",
            &[
                450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889,
            ],
        ),
        (
            "12345 don't",
            &[29871, 29896, 29906, 29941, 29946, 29945, 1016, 29915, 29873],
        ),
        (
            "日本語のテキスト",
            &[
                29871, 30325, 30346, 30968, 30199, 30572, 30454, 30255, 30279,
            ],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&tok.encode(text, false).unwrap(), want, "{text:?}");
        let with_bos = tok.encode(text, true).unwrap();
        assert_eq!(with_bos[0], 1);
        assert_eq!(&with_bos[1..], *want);
        assert_eq!(tok.decode(&with_bos, true).unwrap(), *text);
    }
}

#[test]
fn matches_sentencepiece_on_stories_and_multilingual_text() {
    // tests/fixtures/expected_ids.json["llama2"]: sentencepiece's encode of the first 200 story
    // lines and 15 multilingual strings.
    let (_, tok) = llama2();
    let expected = expected_ids("llama2");
    assert_eq!(expected.len(), 215);
    for (text, want) in &expected {
        assert_eq!(&tok.encode(text, false).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(want, true).unwrap(), *text, "{want:?}");
    }
}

#[test]
fn special_ids_from_gguf_keys() {
    let (md, tok) = llama2();
    // The file has no add_bos_token key: SentencePiece vocabularies add BOS (llama.cpp's default).
    assert!(!md.contains_key("tokenizer.ggml.add_bos_token"));
    assert!(tok.add_bos_token());
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.eog_ids(), [2]);
    assert_eq!(tok.vocab_size(), 32000);
    assert_eq!(tok.mask_id(), None);
    assert_eq!(tok.token_text(15043), Some("▁Hello"));
    assert!(tok.is_special(1) && tok.is_special(2) && !tok.is_special(15043));
    assert_eq!(tok.encode("<s>Hi</s>", false).unwrap(), [1, 6324, 2]);
    // Text after a special token gets the ▁ prefix again, as in llama.cpp and HF's legacy mode.
    assert_eq!(tok.encode("</s>Hi", false).unwrap(), [2, 6324]);
    assert_eq!(tok.decode(&[1, 6324, 2], true).unwrap(), "Hi");
    // No template and no ChatML tokens: plain text.
    let t = ChatTemplate::from_gguf(&md, &tok).unwrap();
    assert_eq!(t.source(), TemplateSource::PlainFallback);
}

#[test]
fn decode_stream_on_llama2() {
    let (_, tok) = llama2();
    let text = "Hello world! café 😀 日本語, 🇫🇷 ok";
    let ids = tok.encode(text, true).unwrap();
    let pieces = stream_pieces(&tok, &ids, true);
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(&pieces[..3], ["", "Hello", " world"]);
    // BOS (skipped), then the emoji and the two regional indicators of the flag, 4 byte pieces
    // each: 3 held back per character.
    let held = pieces[..ids.len()].iter().filter(|p| p.is_empty()).count();
    assert_eq!(held, 1 + 3 * 3, "{pieces:?}");
}
