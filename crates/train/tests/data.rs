//! The data pipeline on the real tokenizers: assistant-only labels on the Qwen2.5 / Fast-dLLM v2
//! chat template, stories260K text documents, the mask token, packing with "+pad", the held-out
//! split, and errors naming file and line.

mod common;

use tokenizer::ChatMessage;
use train::config::{TextSplit, TrainConfig};
use train::data::{
    add_mask_token, load_examples, pack, split_holdout, split_text, DataTokenizer, Example, Window,
    IGNORE,
};

const I: i64 = IGNORE;

/// The Fast-dLLM v2 tokenizer with its chat template (see `common::fast_dllm_tokenizer`).
fn qwen() -> DataTokenizer {
    common::fast_dllm_tokenizer()
}

fn stories() -> DataTokenizer {
    DataTokenizer::from_checkpoint(&common::shared_fixtures().join("stories260K")).unwrap()
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

/// The supervised runs of an example, as lists of ids.
fn supervised_runs(ex: &Example) -> Vec<Vec<u32>> {
    let mut runs: Vec<Vec<u32>> = Vec::new();
    let mut open = false;
    for (&id, &l) in ex.input_ids.iter().zip(&ex.labels) {
        if l == I {
            open = false;
            continue;
        }
        assert_eq!(l, i64::from(id));
        if !open {
            runs.push(Vec::new());
            open = true;
        }
        runs.last_mut().unwrap().push(id);
    }
    runs
}

#[test]
fn qwen_template_labels_exactly_the_assistant_tokens() {
    let tok = qwen();
    assert_eq!(tok.eos_id(), Some(151645));
    let (ex, unsupervised) = tok
        .encode_chat(&[msg("user", "What is 2+2?"), msg("assistant", "2 + 2 = 4.")])
        .unwrap();
    assert_eq!(unsupervised, 0);
    // "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is
    // 2+2?<|im_end|>\n<|im_start|>assistant\n2 + 2 = 4.<|im_end|>\n", ids from vocab.json.
    #[rustfmt::skip]
    let ids: Vec<u32> = vec![
        151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198,   // system turn
        151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30, 151645, 198,      // user turn
        151644, 77091, 198,                                                 // <|im_start|>assistant\n
        17, 488, 220, 17, 284, 220, 19, 13, 151645, 198,                    // 2 + 2 = 4.<|im_end|>\n
    ];
    assert_eq!(ex.input_ids, ids);
    // What transformers' return_assistant_tokens_mask marks inside the reference template's
    // {% generation %} block: content, <|im_end|> and the newline.
    let mut labels = vec![I; 26];
    labels.extend([17, 488, 220, 17, 284, 220, 19, 13, 151645, 198]);
    assert_eq!(ex.labels, labels);
    assert_eq!(ex.n_supervised(), 10);
}

#[test]
fn every_assistant_turn_of_a_multi_turn_chat_is_supervised() {
    let tok = qwen();
    let (ex, unsupervised) = tok
        .encode_chat(&[
            msg("system", "Be brief."),
            msg("user", "Hi!"),
            msg("assistant", "Hello there."),
            msg("user", "Thanks."),
            msg("assistant", "Hello."),
        ])
        .unwrap();
    assert_eq!(unsupervised, 0);
    assert_eq!(
        supervised_runs(&ex),
        vec![
            vec![9707, 1052, 13, 151645, 198], // Hello there.<|im_end|>\n
            vec![9707, 13, 151645, 198],       // Hello.<|im_end|>\n
        ]
    );
    // The prompt scaffolding of the second assistant turn is not supervised.
    let pos = ex.input_ids.iter().rposition(|&id| id == 77091).unwrap();
    assert_eq!(ex.labels[pos], I);
    assert_eq!(ex.labels[pos + 1], I); // its "\n"
}

#[test]
fn turns_the_template_re_renders_in_context_are_left_unsupervised() {
    // Like Qwen3: only the last assistant message gets a (empty) think block, so the first
    // turn's standalone rendering is not a prefix of the conversation.
    let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
        {% if m.role == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}\
        {{ m.content }}<|im_end|>\n{% endfor %}\
        {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let dir = common::shared_fixtures().join("stories260K");
    let tok: tokenizers::Tokenizer =
        tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let cfg = serde_json::json!({"eos_token": "</s>"});
    let tok = DataTokenizer::new(tok, &cfg, Some(template)).unwrap();
    let (ex, unsupervised) = tok
        .encode_chat(&[
            msg("user", "a"),
            msg("assistant", "b"),
            msg("user", "c"),
            msg("assistant", "d"),
        ])
        .unwrap();
    assert_eq!(unsupervised, 1);
    assert_eq!(supervised_runs(&ex).len(), 1);
    let text = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
        .unwrap()
        .decode(&supervised_runs(&ex)[0], false)
        .unwrap();
    assert!(text.contains("</think>") && text.contains('d'), "{text:?}");
}

#[test]
fn stories_documents_are_bos_text_eos_with_bos_unsupervised() {
    let tok = stories();
    assert!(!tok.has_chat_template());
    let ex = tok.encode_text("Hello\nworld", true).unwrap();
    assert_eq!(ex.input_ids, vec![1, 346, 306, 414, 13, 424, 304, 341, 2]);
    assert_eq!(ex.labels, vec![I, 346, 306, 414, 13, 424, 304, 341, 2]);
    let ex = tok.encode_text("Hello\nworld", false).unwrap();
    assert_eq!(ex.input_ids, vec![1, 346, 306, 414, 13, 424, 304, 341]);
    let err = tok.encode_chat(&[msg("user", "a"), msg("assistant", "b")]);
    assert!(err.unwrap_err().to_string().contains("no chat template"));
}

#[test]
fn the_stories_sample_splits_into_its_paragraphs() {
    let path = common::shared_fixtures().join("stories260K/tinystories_sample.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    // The sample has no story markers: blank lines separate paragraphs (1230 of them).
    let docs = split_text(&text, TextSplit::Auto);
    assert_eq!(docs.len(), 1230);
    assert!(docs[0].starts_with("One day, a little girl named Lily found a needle"));
    assert!(docs[1].starts_with("Lily went to her mom"));
    assert_eq!(split_text(&text, TextSplit::Line).len(), 1273);
    // With TinyStories' own separators, documents are whole stories.
    let marked = "Story one.\n\nMore of one.\n<|endoftext|>\nStory two.\n";
    assert_eq!(
        split_text(marked, TextSplit::Auto),
        vec!["Story one.\n\nMore of one.", "Story two."]
    );
    assert_eq!(split_text(marked, TextSplit::Paragraph).len(), 2);

    let mut config = TrainConfig::preset("stories260k").unwrap();
    let loaded = load_examples(&path, &stories(), &config.data).unwrap();
    assert_eq!(loaded.stats.documents, 1230);
    assert!(loaded
        .examples
        .iter()
        .all(|e| e.input_ids[0] == 1 && e.input_ids.last() == Some(&2) && e.labels[0] == I));
    config.data.text_split = TextSplit::Line;
    assert_eq!(
        load_examples(&path, &stories(), &config.data)
            .unwrap()
            .examples
            .len(),
        1273
    );
}

#[test]
fn the_mask_token_is_added_once_after_the_vocabulary() {
    let dir = common::shared_fixtures().join("stories260K");
    let mut tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let m = add_mask_token(&mut tok).unwrap();
    assert_eq!((m.id, m.added), (512, true));
    assert_eq!(tok.get_vocab_size(true), 513);
    assert_eq!(tok.encode("|<MASK>|", false).unwrap().get_ids(), &[512]);
    assert_eq!(tok.decode(&[512], true).unwrap(), "");
    let again = add_mask_token(&mut tok).unwrap();
    assert_eq!((again.id, again.added), (512, false));
    // Fast-dLLM v2's tokenizer already has it at 151665.
    let mut qwen = qwen();
    let m = qwen.add_mask_token().unwrap();
    assert_eq!((m.id, m.added), (151665, false));
}

fn ex(ids: &[u32], labels: &[i64]) -> Example {
    Example {
        input_ids: ids.to_vec(),
        labels: labels.to_vec(),
    }
}

#[test]
fn packing_pads_each_conversation_to_whole_blocks_and_counts_the_drops() {
    const M: u32 = 99;
    let examples = vec![
        ex(&[1, 2, 3], &[I, 2, 3]),             // 3 → +1 pad
        ex(&[5, 6, 7, 8], &[I, I, 7, 8]),       // 4, aligned → +4 pad (a whole block)
        ex(&[9, 9], &[I, I]),                   // nothing supervised → dropped
        ex(&[4, 4, 4, 4, 4], &[4, 4, 4, 4, 4]), // 5 → +3 pad, lands in the tail
    ];
    let p = pack(&examples, 8, 4, true, M).unwrap();
    assert_eq!(
        p.windows,
        vec![
            Window {
                input_ids: vec![1, 2, 3, M, 5, 6, 7, 8],
                labels: vec![I, 2, 3, I, I, I, 7, 8],
            },
            Window {
                input_ids: vec![M, M, M, M, 4, 4, 4, 4],
                labels: vec![I, I, I, I, 4, 4, 4, 4],
            },
        ]
    );
    let s = &p.stats;
    assert_eq!(s.examples, 4);
    assert_eq!(s.dropped_unsupervised, 1);
    assert_eq!(s.tokens, 4 + 8 + 8);
    assert_eq!(s.pad_tokens, 1 + 4 + 3);
    assert_eq!(s.windows, 2);
    assert_eq!(s.dropped_tokens, 4); // "4 M M M" after the second window
    assert_eq!(s.dropped_tail, 0); // the last example starts inside window 2
    assert_eq!(s.supervised_tokens, 2 + 2 + 4);
    assert!(s.to_string().contains("2 windows from 4 examples"), "{s}");

    // Without padding: a plain concatenation; the last example lies wholly in the tail.
    let examples = vec![
        ex(&[1, 2, 3, 4, 5, 6, 7, 8], &[1, 2, 3, 4, 5, 6, 7, 8]),
        ex(&[9, 9, 9], &[9, 9, 9]),
    ];
    let p = pack(&examples, 8, 4, false, M).unwrap();
    assert_eq!(p.windows.len(), 1);
    assert_eq!((p.stats.dropped_tokens, p.stats.dropped_tail), (3, 1));
    assert_eq!(p.stats.pad_tokens, 0);

    // Padded lengths are multiples of bd on the real sample.
    let loaded = load_examples(
        &common::shared_fixtures().join("stories260K/tinystories_sample.txt"),
        &stories(),
        &TrainConfig::preset("stories260k").unwrap().data,
    )
    .unwrap();
    let p = pack(&loaded.examples, 256, 32, true, 512).unwrap();
    let raw: usize = loaded.examples.iter().map(|e| e.input_ids.len()).sum();
    let padded: usize = loaded
        .examples
        .iter()
        .map(|e| {
            e.input_ids.len().div_ceil(32) * 32 + usize::from(e.input_ids.len() % 32 == 0) * 32
        })
        .sum();
    assert_eq!(p.stats.tokens, padded);
    assert_eq!(p.stats.pad_tokens, padded - raw);
    assert_eq!(p.stats.windows, padded / 256);
    assert!(p.windows.iter().all(|w| w.input_ids.len() == 256));

    assert!(pack(&[], 100, 32, true, 0).is_err());
    assert!(pack(&[ex(&[1, 2], &[1])], 8, 4, true, 0).is_err());
}

#[test]
fn the_held_out_split_is_seeded_and_keeps_order() {
    let windows: Vec<Window> = (0..20u32)
        .map(|i| Window {
            input_ids: vec![i; 4],
            labels: vec![i64::from(i); 4],
        })
        .collect();
    let (train, held) = split_holdout(windows.clone(), 0.1, 42);
    assert_eq!((train.len(), held.len()), (18, 2));
    let first = |ws: &[Window]| ws.iter().map(|w| w.input_ids[0]).collect::<Vec<_>>();
    assert!(first(&train).windows(2).all(|p| p[0] < p[1]));
    assert!(first(&held).windows(2).all(|p| p[0] < p[1]));
    let (_, again) = split_holdout(windows.clone(), 0.1, 42);
    assert_eq!(first(&again), first(&held));
    let (_, other) = split_holdout(windows.clone(), 0.5, 43);
    assert_eq!(other.len(), 10);
    assert_eq!(split_holdout(windows.clone(), 0.0, 1).1.len(), 0);
    assert_eq!(split_holdout(windows[..2].to_vec(), 0.01, 1).1.len(), 1);
    assert_eq!(split_holdout(windows[..1].to_vec(), 0.5, 1).1.len(), 0);
}

#[test]
fn jsonl_chats_text_and_nemotron_records_load_and_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "2 + 2 = 4.", "extra": 1}], "id": "x"}"#,
            "\n\n",
            r#"{"input": [{"role": "user", "content": "What is 2+2?"}], "output": "2 + 2 = 4.", "system_prompt": "", "category": "math", "license": "cc-by-4.0"}"#,
            "\n",
            r#"{"text": "2 + 2 = 4."}"#,
            "\n",
            r#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}, {"role": "assistant", "content": "2 + 2 = 4."}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let tok = qwen();
    let data = TrainConfig::preset("qwen3_4b").unwrap().data;
    let loaded = load_examples(&path, &tok, &data).unwrap();
    assert_eq!(loaded.stats.conversations, 3);
    assert_eq!(loaded.stats.documents, 1);
    assert_eq!(loaded.stats.assistant_turns, 3);
    assert_eq!(loaded.stats.skipped, 1);
    // The three spellings of the same chat give the same example.
    assert_eq!(loaded.examples[0], loaded.examples[1]);
    assert_eq!(loaded.examples[0], loaded.examples[3]);
    assert_eq!(loaded.examples[0].n_supervised(), 10);
    // Text: all supervised, then EOS (<|im_end|>); Qwen adds no BOS.
    assert_eq!(
        loaded.examples[2].input_ids,
        vec![17, 488, 220, 17, 284, 220, 19, 13, 151645]
    );
    assert_eq!(loaded.examples[2].n_supervised(), 9);

    let cases = [
        ("{\"messages\": [", "data.jsonl:2: not valid JSON"),
        ("[1, 2]", "data.jsonl:2: a line must be a JSON object"),
        (
            "{\"prompt\": \"x\"}",
            "data.jsonl:2: a line needs `messages`",
        ),
        (
            "{\"messages\": [{\"content\": \"x\"}]}",
            "data.jsonl:2: messages[0] has no string `role`",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
            "data.jsonl:2: `messages` has no assistant message",
        ),
        ("{\"text\": 5}", "data.jsonl:2: `text` must be a string"),
    ];
    for (line, want) in cases {
        std::fs::write(&path, format!("{{\"text\": \"ok\"}}\n{line}\n")).unwrap();
        let err = load_examples(&path, &tok, &data).unwrap_err().to_string();
        assert!(err.contains(want), "{line}: {err}");
    }
    let csv = dir.path().join("data.csv");
    std::fs::write(&csv, "a,b\n").unwrap();
    assert!(load_examples(&csv, &tok, &data)
        .unwrap_err()
        .to_string()
        .contains(".jsonl"));
}
