//! The stories260K tokenizer: a real SentencePiece BPE vocabulary (512 tokens, byte fallback,
//! legacy `▁` prefix, add_bos_token true), loaded from its tokenizer.json and rebuilt from the
//! GGUF keys alone.

mod common;

use common::{expected_ids, stories_metadata, stream_pieces};
use tokenizer::{ChatMessage, ChatTemplate, TemplateSource, Tokenizer};

fn hf_json() -> String {
    std::fs::read_to_string(common::fixture("stories260K/tokenizer.json")).unwrap()
}

/// The tokenizer built from the GGUF keys only (tokenizer.huggingface.json removed).
fn keys_only() -> Tokenizer {
    let mut md = stories_metadata();
    assert!(md.remove(tokenizer::KEY_HF_JSON).is_some());
    Tokenizer::from_gguf(&md).unwrap()
}

#[test]
fn known_encodings_match_python_tokenizers() {
    // Produced once with the Python `tokenizers` package 0.23.3:
    // Tokenizer.from_file(".../stories260K/tokenizer.json").encode(text).ids (BOS included).
    let cases: &[(&str, &[u32])] = &[
        (
            "Once upon a time, there was a little girl.",
            &[
                1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 426,
            ],
        ),
        ("Hello\nworld", &[1, 346, 306, 414, 13, 424, 304, 341]),
        ("café 😀", &[1, 280, 412, 431, 485, 410, 243, 162, 155, 131]),
        (
            "  two leading spaces",
            &[
                1, 410, 410, 259, 424, 414, 278, 411, 380, 299, 262, 427, 412, 331, 419,
            ],
        ),
        ("", &[1]),
    ];
    let from_json = Tokenizer::from_hf_json(&hf_json(), None).unwrap();
    let from_file = Tokenizer::from_gguf(&stories_metadata()).unwrap();
    let from_keys = keys_only();
    for tok in [&from_json, &from_file, &from_keys] {
        assert!(tok.add_bos_token());
        for (text, want) in cases {
            assert_eq!(&tok.encode(text, true).unwrap(), want, "{text:?}");
            assert_eq!(&tok.encode(text, false).unwrap(), &want[1..], "{text:?}");
            assert_eq!(tok.decode(want, true).unwrap(), *text);
        }
    }
}

#[test]
fn special_tokens_in_text_are_parsed_and_bos_is_never_doubled() {
    // Python `tokenizers` gives [1, 1, 317, 2, 410, 352, 303] (its post-processor adds <s> before
    // the <s> of the text); our add_bos flag does not double it.
    let tok = Tokenizer::from_gguf(&stories_metadata()).unwrap();
    let keys = keys_only();
    for tok in [&tok, &keys] {
        let ids = tok.encode("<s>Lily</s> ran", true).unwrap();
        assert_eq!(ids, [1, 317, 2, 410, 352, 303]);
        assert_eq!(tok.encode("<s>Lily</s> ran", false).unwrap(), ids);
        // Python: decode(ids, skip_special_tokens=False) == '<s> Lily</s>  ran'.
        assert_eq!(tok.decode(&ids, false).unwrap(), "<s> Lily</s>  ran");
        // Python: decode(ids, skip_special_tokens=True) == 'Lily  ran' (the ▁ after </s> stays).
        assert_eq!(tok.decode(&ids, true).unwrap(), "Lily  ran");
    }
}

#[test]
fn special_ids_and_vocabulary() {
    let json_only = Tokenizer::from_hf_json(&hf_json(), None).unwrap();
    for tok in [
        Tokenizer::from_gguf(&stories_metadata()).unwrap(),
        keys_only(),
        json_only,
    ] {
        assert_eq!(tok.vocab_size(), 512);
        assert_eq!(tok.bos_id(), Some(1));
        assert_eq!(tok.mask_id(), None);
        assert_eq!(tok.token_text(13), Some("<0x0A>"));
        assert_eq!(tok.token_text(403), Some("▁Once"));
        assert_eq!(tok.token_text(512), None);
        assert!(tok.is_special(0) && tok.is_special(1) && tok.is_special(2));
        assert!(!tok.is_special(13) && !tok.is_special(403));
        assert_eq!(tok.eog_ids(), [2]);
        assert!(matches!(
            tok.decode(&[1, 512], false),
            Err(tokenizer::TokenizerError::UnknownId {
                id: 512,
                vocab_size: 512
            })
        ));
    }
    let tok = Tokenizer::from_gguf(&stories_metadata()).unwrap();
    assert_eq!(tok.eos_id(), Some(2));
    assert!(!tok.add_eos_token());
}

#[test]
fn gguf_keys_agree_with_tokenizer_json_on_the_story_corpus() {
    let from_json = Tokenizer::from_gguf(&stories_metadata()).unwrap();
    let from_keys = keys_only();
    let lines = common::story_lines();
    assert_eq!(lines.len(), 200);
    let mut tokens = 0;
    for line in &lines {
        let want = from_json.encode(line, true).unwrap();
        assert_eq!(from_keys.encode(line, true).unwrap(), want, "{line:?}");
        assert_eq!(from_keys.decode(&want, true).unwrap(), *line);
        tokens += want.len();
    }
    assert!(tokens > 4000, "{tokens} tokens");
}

#[test]
fn both_paths_match_python_tokenizers_on_stories_and_multilingual_text() {
    // tests/fixtures/expected_ids.json["stories260K"]: Python `tokenizers` on tokenizer.json,
    // add_special_tokens=False (the first 200 story lines, then multilingual strings).
    let expected = expected_ids("stories260K");
    assert_eq!(expected.len(), 215);
    let from_file = Tokenizer::from_gguf(&stories_metadata()).unwrap();
    let from_keys = keys_only();
    for (text, want) in &expected {
        assert_eq!(&from_file.encode(text, false).unwrap(), want, "{text:?}");
        assert_eq!(&from_keys.encode(text, false).unwrap(), want, "{text:?}");
    }
}

#[test]
fn decode_stream_reassembles_byte_fallback_characters() {
    let text = "Lily saw a 😀 and a café — 日本 ok";
    for tok in [
        Tokenizer::from_gguf(&stories_metadata()).unwrap(),
        keys_only(),
    ] {
        let ids = tok.encode(text, false).unwrap();
        // Python `tokenizers`: the emoji and the two CJK characters are byte-fallback tokens
        // (<0xNN>, ids 3..259); "—" and "é" are in the vocabulary.
        assert_eq!(
            ids,
            [
                317, 394, 261, 410, 243, 162, 155, 131, 269, 261, 280, 412, 431, 485, 410, 481,
                410, 233, 154, 168, 233, 159, 175, 334, 433
            ]
        );
        let pieces = stream_pieces(&tok, &ids, true);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        // Held back while a character is incomplete: 3 + 2 + 2 empty pushes.
        let held = pieces[..ids.len()].iter().filter(|p| p.is_empty()).count();
        assert_eq!(held, 3 + 2 + 2, "{pieces:?}");
        assert_eq!(pieces[7], "😀");
        assert_eq!(pieces[19], "日");
        assert_eq!(pieces.last().unwrap(), "");
    }
}

#[test]
fn decode_stream_keeps_sentencepiece_spaces() {
    let tok = Tokenizer::from_gguf(&stories_metadata()).unwrap();
    let text = "Once upon a time,  there was\na girl.";
    let ids = tok.encode(text, true).unwrap();
    let pieces = stream_pieces(&tok, &ids, true);
    assert_eq!(pieces.concat(), text);
    // The first word has no space (the decoder strips the prefix space), later ones keep theirs.
    assert_eq!(&pieces[..4], ["", "Once", " upon", " a"]);
    // Special tokens are kept when not skipped.
    let pieces = stream_pieces(&tok, &[1, 403, 2], false);
    assert_eq!(pieces.concat(), tok.decode(&[1, 403, 2], false).unwrap());
    assert_eq!(pieces.concat(), "<s> Once</s>");
}

#[test]
fn decode_stream_finish_flushes_an_incomplete_character() {
    let tok = Tokenizer::from_gguf(&stories_metadata()).unwrap();
    let mut stream = tokenizer::DecodeStream::new(&tok, true);
    assert_eq!(stream.push(403).unwrap(), "Once");
    assert_eq!(stream.push(243).unwrap(), ""); // <0xF0>: the first byte of a 4-byte character
    assert_eq!(stream.finish().unwrap(), "\u{FFFD}");
    // The stream starts over after finish.
    assert_eq!(stream.push(403).unwrap(), "Once");
}

#[test]
fn base_model_gets_the_plain_template() {
    let md = stories_metadata();
    let tok = Tokenizer::from_gguf(&md).unwrap();
    let t = ChatTemplate::from_gguf(&md, &tok).unwrap();
    assert_eq!(t.source(), TemplateSource::PlainFallback);
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Tell me a story."),
        ChatMessage::new("assistant", "Once upon a time."),
        ChatMessage::new("user", "Another one."),
    ];
    assert_eq!(
        t.render(&messages, true).unwrap(),
        "System: Be brief.\nUser: Tell me a story.\nAssistant: Once upon a time.\nUser: Another one.\nAssistant: "
    );
    assert_eq!(
        t.render(&messages[1..2], false).unwrap(),
        "User: Tell me a story.\n"
    );
}

#[test]
fn a_stream_after_a_prompt_keeps_the_continuations_leading_space() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K.gguf");
    let file = gguf::GgufFile::open(&path).unwrap();
    let tok = tokenizer::Tokenizer::from_gguf(&file.metadata).unwrap();
    let prompt = tok.encode("Once upon a time", true).unwrap();
    let cont = tok.encode("there was a dog", false).unwrap(); // SentencePiece prepends ▁
    let full: Vec<u32> = prompt.iter().chain(&cont).copied().collect();
    let whole = tok.decode(&full, true).unwrap();
    let head = tok.decode(&prompt, true).unwrap();
    let mut stream = tokenizer::DecodeStream::with_context(&tok, true, &prompt).unwrap();
    let mut text: String = cont.iter().map(|id| stream.push(*id).unwrap()).collect();
    text.push_str(&stream.finish().unwrap());
    assert_eq!(format!("{head}{text}"), whole);
    assert!(text.starts_with(" there"), "{text:?}");
    // After BOS alone the first word loses its space, as at the start of a text.
    let mut stream = tokenizer::DecodeStream::with_context(&tok, true, &[1]).unwrap();
    let first: String = prompt[1..]
        .iter()
        .map(|id| stream.push(*id).unwrap())
        .collect();
    assert!(first.starts_with("Once"), "{first:?}");
}

#[test]
fn pieces_keep_the_sentencepiece_space_and_concatenate_to_the_continuation() {
    let tok = Tokenizer::from_gguf(&stories_metadata()).unwrap();
    let id = |text: &str| tok.token_to_id(text).unwrap();
    assert_eq!(tok.piece(id("▁a")).unwrap(), " a");
    assert_eq!(
        tok.decode(&[id("▁a")], false).unwrap(),
        "a",
        "decode strips it"
    );
    assert_eq!(tok.piece(id("<0x0A>")).unwrap(), "\n");
    assert_eq!(
        tok.piece(2).unwrap(),
        tok.token_text(2).unwrap(),
        "EOS shows"
    );
    // After the first token, the pieces of an ASCII text are its decoding, split by token.
    let ids = tok
        .encode("Once upon a time,\nthere was a girl.", true)
        .unwrap();
    let pieces: String = ids[2..].iter().map(|&i| tok.piece(i).unwrap()).collect();
    let whole = tok.decode(&ids[1..], true).unwrap();
    let first = tok.decode(&ids[1..2], true).unwrap();
    assert_eq!(format!("{first}{pieces}"), whole);
}
