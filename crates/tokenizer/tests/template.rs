//! Chat-template extensions that Hugging Face's Jinja environment has: `raise_exception`,
//! `tojson` with Python's formatting, python string methods, loop controls, `{% generation %}`,
//! `strftime_now`, and the special token variables.

mod common;

use gguf::Value;
use tokenizer::{ChatMessage, ChatTemplate, TemplateSource, Tokenizer, TokenizerError};

/// A template over the stories260K tokenizer (BOS `<s>`, EOS `</s>`, UNK `<unk>`).
fn with_template(source: &str) -> ChatTemplate {
    let mut md = common::stories_metadata();
    md.insert("tokenizer.chat_template", Value::String(source.to_string()));
    let tok = Tokenizer::from_gguf(&md).unwrap();
    let t = ChatTemplate::from_gguf(&md, &tok).unwrap();
    assert_eq!(t.source(), TemplateSource::Gguf);
    assert_eq!(t.text(), source);
    t
}

#[test]
fn raise_exception_surfaces_the_message() {
    let t = with_template(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}ok",
    );
    let err = t
        .render(&[ChatMessage::new("assistant", "x")], true)
        .unwrap_err();
    match &err {
        TokenizerError::TemplateException(msg) => assert_eq!(
            msg,
            "Conversation roles must alternate user/assistant/user/assistant/..."
        ),
        other => panic!("not a template exception: {other:?}"),
    }
    assert!(err.to_string().contains("roles must alternate"), "{err}");
    assert_eq!(
        t.render(&[ChatMessage::new("user", "x")], true).unwrap(),
        "ok"
    );
}

#[test]
fn other_template_errors_are_template_errors() {
    let err = ChatTemplate::from_gguf(
        &{
            let mut md = common::stories_metadata();
            md.insert("tokenizer.chat_template", Value::String("{% for %}".into()));
            md
        },
        &Tokenizer::from_gguf(&common::stories_metadata()).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, TokenizerError::Template(_)), "{err:?}");
    let t = with_template("{{ messages[0].content | no_such_filter }}");
    let err = t
        .render(&[ChatMessage::new("user", "x")], false)
        .unwrap_err();
    assert!(
        matches!(err, TokenizerError::Template(ref m) if m.contains("no_such_filter")),
        "{err}"
    );
}

#[test]
fn tojson_matches_python_json_dumps() {
    // Expected output produced once with transformers 5.24 (HF's own Jinja environment, whose
    // tojson is json.dumps(x, ensure_ascii=False, indent=..., sort_keys=...)):
    // tok.apply_chat_template(messages, chat_template=<this template>, tokenize=False).
    let t = with_template(
        r#"{%- set x = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "Città <b> & 'x'"}}, "required": ["city"]}, "n": [1, -2.5, true, none, 1e20, 0.0001], "empty": {}, "list": []} %}{{ x | tojson }}
{{ x | tojson(indent=2) }}
{{ messages | tojson }}
{{ x.parameters | tojson(indent=4, sort_keys=true) }}"#,
    );
    let messages = [ChatMessage::new("user", "Qué tal? <b>&'\"\\\n\t😀")];
    let want = "{\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"Città <b> & 'x'\"}}, \"required\": [\"city\"]}, \"n\": [1, -2.5, true, null, 1e+20, 0.0001], \"empty\": {}, \"list\": []}\n{\n  \"name\": \"get_weather\",\n  \"parameters\": {\n    \"type\": \"object\",\n    \"properties\": {\n      \"city\": {\n        \"type\": \"string\",\n        \"description\": \"Città <b> & 'x'\"\n      }\n    },\n    \"required\": [\n      \"city\"\n    ]\n  },\n  \"n\": [\n    1,\n    -2.5,\n    true,\n    null,\n    1e+20,\n    0.0001\n  ],\n  \"empty\": {},\n  \"list\": []\n}\n[{\"role\": \"user\", \"content\": \"Qué tal? <b>&'\\\"\\\\\\n\\t😀\"}]\n{\n    \"properties\": {\n        \"city\": {\n            \"description\": \"Città <b> & 'x'\",\n            \"type\": \"string\"\n        }\n    },\n    \"required\": [\n        \"city\"\n    ],\n    \"type\": \"object\"\n}";
    assert_eq!(t.render(&messages, false).unwrap(), want);
}

#[test]
fn tojson_ensure_ascii_and_separators() {
    // Python: json.dumps({"k": "é😀", "v": [1, 2]}, ensure_ascii=True, separators=(",", ":"))
    let t = with_template(
        r#"{{ {"k": "é😀", "v": [1, 2]} | tojson(ensure_ascii=true, separators=[",", ":"]) }}"#,
    );
    assert_eq!(
        t.render(&[], false).unwrap(),
        r#"{"k":"\u00e9\ud83d\ude00","v":[1,2]}"#
    );
}

#[test]
fn python_methods_loop_controls_and_generation_blocks() {
    // Expected output produced once with transformers 5.24 as above.
    let t = with_template(
        r#"{% for m in messages %}
  {% if m.role == 'user' %}
    {% generation %}{{ m.content.strip().upper() }}{% endgeneration %}
  {% endif %}
{% endfor %}
{%- for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}|{{ "a,b".split(",") | join("-") }}|{% if "Hello".startswith("He") %}yes{% endif %}"#,
    );
    let messages = [
        ChatMessage::new("user", "  spaced out  "),
        ChatMessage::new("assistant", "x"),
    ];
    assert_eq!(t.render(&messages, false).unwrap(), "SPACED OUT02|a-b|yes");
}

#[test]
fn special_token_variables_and_strftime_now() {
    let t = with_template(
        "{{ bos_token }}|{{ eos_token }}|{{ unk_token }}|{{ pad_token }}|{{ add_generation_prompt }}|{{ tools is none }}|{{ strftime_now('%Y') | length }}",
    );
    // stories260K has no padding token: pad_token is undefined and prints as nothing. Booleans
    // print as Python's (Jinja2 does the same).
    assert_eq!(t.render(&[], true).unwrap(), "<s>|</s>|<unk>||True|True|4");
}

#[test]
fn template_source_names() {
    assert_eq!(TemplateSource::Gguf.to_string(), "gguf");
    assert_eq!(
        TemplateSource::ChatmlFallback.to_string(),
        "chatml fallback"
    );
    assert_eq!(TemplateSource::PlainFallback.to_string(), "plain fallback");
}

#[test]
fn chat_messages_serialize_as_role_and_content() {
    let m: ChatMessage = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
    assert_eq!(m, ChatMessage::new("user", "hi"));
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"role":"user","content":"hi"}"#
    );
}

#[test]
fn from_source_renders_a_checkpoint_template_with_the_given_special_tokens() {
    let t = ChatTemplate::from_source(
        "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}{% endfor %}",
        &[("bos_token", "<s>"), ("eos_token", "</s>")],
    )
    .unwrap();
    assert_eq!(t.source(), TemplateSource::Gguf);
    assert_eq!(
        t.render(&[ChatMessage::new("user", "hi")], false).unwrap(),
        "<s>user: hi</s>"
    );
    let err = ChatTemplate::from_source("x", &[("mask_token", "|<MASK>|")]).unwrap_err();
    assert!(err.to_string().contains("mask_token"), "{err}");
    assert!(ChatTemplate::from_source("{% if %}", &[]).is_err());
}
