//! The real Qwen2.5 / Fast-dLLM v2 tokenizer (vocab.json + merges.txt, 151666 tokens, embedding of
//! 152064 rows): the GGUF keys our converter writes, loaded through tokenizer.huggingface.json and
//! through the `gpt2` / `qwen2` keys alone, and its ChatML-with-tools chat template.

mod common;

use std::sync::OnceLock;

use common::{expected_ids, stream_pieces};
use gguf::Metadata;
use tokenizer::{ChatMessage, ChatTemplate, TemplateSource, Tokenizer};

/// The converter's tokenizer keys for the fixture, as `dlm convert` writes them.
fn metadata() -> &'static Metadata {
    static MD: OnceLock<Metadata> = OnceLock::new();
    MD.get_or_init(|| {
        let dir = common::fixture("third-party/fast-dllm-v2-7b-tokenizer");
        let config = convert::checkpoint::read_json_opt(&dir.join("config.json"))
            .unwrap()
            .unwrap();
        let config = convert::checkpoint::JsonConfig::new("config.json", config).unwrap();
        let vocab = convert::vocab::load(&dir, 152064, &config, false).unwrap();
        vocab.metadata.into_iter().collect()
    })
}

/// Through tokenizer.huggingface.json.
fn from_json() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        assert!(metadata().contains_key(tokenizer::KEY_HF_JSON));
        Tokenizer::from_gguf(metadata()).unwrap()
    })
}

/// Through the GGUF keys alone.
fn from_keys() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let mut md = metadata().clone();
        md.remove(tokenizer::KEY_HF_JSON).unwrap();
        assert_eq!(md.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
        assert_eq!(md.get_str("tokenizer.ggml.pre").unwrap(), "qwen2");
        Tokenizer::from_gguf(&md).unwrap()
    })
}

#[test]
fn known_encodings_match_python_tokenizers() {
    // Produced once with the Python `tokenizers` package 0.23.3 from vocab.json + merges.txt with
    // the Qwen2 regex, NFC and byte level (as HF's Qwen2Converter builds it); 9707 "Hello" and
    // 1879 "Ġworld" are Qwen2's well-known ids.
    let cases: &[(&str, &[u32])] = &[
        (
            "Hello world! I don't think 12345 is prime.",
            &[
                9707, 1879, 0, 358, 1513, 944, 1744, 220, 16, 17, 18, 19, 20, 374, 10250, 13,
            ],
        ),
        (
            "你好，世界！😀 café",
            &[108386, 3837, 99489, 6313, 141334, 51950],
        ),
        (
            "fn main() {\n    println!(\"hi\");\n}\n",
            &[8822, 1887, 368, 341, 262, 13751, 17223, 6023, 797, 532],
        ),
        ("a  b\n\n  c", &[64, 220, 293, 271, 220, 272]),
        ("<|im_start|>user", &[151644, 872]),
    ];
    for tok in [from_json(), from_keys()] {
        assert!(!tok.add_bos_token());
        for (text, want) in cases {
            assert_eq!(&tok.encode(text, false).unwrap(), want, "{text:?}");
            // add_bos_token is false, but a caller asking for BOS gets the file's BOS id.
            assert_eq!(tok.encode(text, true).unwrap()[1..], want[..]);
            assert_eq!(tok.decode(want, false).unwrap(), *text);
        }
    }
}

#[test]
fn gguf_keys_agree_with_tokenizer_json_and_python_on_a_multilingual_corpus() {
    // tests/fixtures/expected_ids.json["qwen2"]: Python `tokenizers` (see make_expected_ids.py) on
    // English, code, CJK, Korean, Cyrillic, Devanagari, Arabic, Hebrew, emoji (ZWJ sequences,
    // flags), numbers, contractions, whitespace runs, special tokens and 50 story lines.
    let expected = expected_ids("qwen2");
    assert_eq!(expected.len(), 67);
    for (text, want) in &expected {
        assert_eq!(&from_json().encode(text, false).unwrap(), want, "{text:?}");
        assert_eq!(&from_keys().encode(text, false).unwrap(), want, "{text:?}");
        // The texts are in NFC, so byte-level decoding gives them back exactly.
        assert_eq!(from_keys().decode(want, false).unwrap(), *text);
    }
}

#[test]
fn special_ids() {
    for tok in [from_json(), from_keys()] {
        assert_eq!(tok.mask_id(), Some(151665));
        assert_eq!(tok.token_text(151665), Some("|<MASK>|"));
        assert_eq!(tok.eos_id(), Some(151645));
        assert!(tok.eog_ids().contains(&151645) && tok.eog_ids().contains(&151643));
        assert_eq!(tok.eog_ids(), [151645, 151643]);
        assert_eq!(tok.vocab_size(), 152064);
        assert_eq!(tok.token_text(151666), Some("[PAD151666]"));
        assert_eq!(tok.token_text(9707), Some("Hello"));
        assert_eq!(tok.token_text(1879), Some("Ġworld"));
        assert!(tok.is_special(151643) && tok.is_special(151645) && tok.is_special(151665));
        assert!(!tok.is_special(9707) && !tok.is_special(151666));
        assert_eq!(
            tok.decode(&[151644, 872, 198, 9707, 151645], true).unwrap(),
            "user\nHello"
        );
        assert_eq!(
            tok.encode("|<MASK>||<MASK>|", false).unwrap(),
            [151665, 151665]
        );
    }
    // Both tokenizers decode an embedding padding row without failing; past it is an error.
    assert_eq!(from_json().decode(&[9707, 152063], false).unwrap(), "Hello");
    assert!(from_json().decode(&[152064], false).is_err());
}

#[test]
fn decode_stream_reassembles_byte_level_characters() {
    // 👨‍👩‍👧 and 🫠 are split over several byte-level tokens (see the expected ids).
    let text = "emoji: 😀👍🏽🇫🇷 👨\u{200d}👩\u{200d}👧 🫠 — 你好，世界 done";
    for tok in [from_json(), from_keys()] {
        let ids = tok.encode(text, false).unwrap();
        let pieces = stream_pieces(tok, &ids, false);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        let held = pieces[..ids.len()].iter().filter(|p| p.is_empty()).count();
        assert!(held >= 3, "{pieces:?}");
        // Every piece ends on a character boundary of the text.
        let mut at = 0;
        for p in &pieces {
            at += p.len();
            assert!(text.is_char_boundary(at));
        }
    }
}

fn template() -> ChatTemplate {
    let t = ChatTemplate::from_gguf(metadata(), from_json()).unwrap();
    assert_eq!(t.source(), TemplateSource::Gguf);
    t
}

#[test]
fn chat_template_renders_like_transformers() {
    // Expected strings produced once with transformers 5.24:
    // AutoTokenizer.from_pretrained(<fixture>).apply_chat_template(m, tokenize=False, ...).
    let t = template();
    let m1 = [
        ChatMessage::new("system", "You are a terse bot."),
        ChatMessage::new("user", "Hi there!\nHow are you?"),
    ];
    assert_eq!(
        t.render(&m1, true).unwrap(),
        "<|im_start|>system\nYou are a terse bot.<|im_end|>\n<|im_start|>user\nHi there!\nHow are you?<|im_end|>\n<|im_start|>assistant\n"
    );
    let m2 = [
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "4"),
        ChatMessage::new("user", "And 3+3?"),
    ];
    assert_eq!(
        t.render(&m2, true).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&m2, false).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
    );
    // The rendered prompt tokenizes with the ChatML specials as single ids.
    let ids = from_json()
        .encode(&t.render(&m1, true).unwrap(), false)
        .unwrap();
    assert_eq!(ids[..3], [151644, 8948, 198]); // <|im_start|> system \n
    assert_eq!(ids[ids.len() - 3..], [151644, 77091, 198]); // <|im_start|> assistant \n
}

#[test]
fn chatml_fallback_without_a_template() {
    let mut md = metadata().clone();
    md.remove("tokenizer.chat_template").unwrap();
    let t = ChatTemplate::from_gguf(&md, from_json()).unwrap();
    assert_eq!(t.source(), TemplateSource::ChatmlFallback);
    let m = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
    ];
    assert_eq!(
        t.render(&m, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&m[1..], false).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n"
    );
}
