//! Request parsing and validation for the OpenAI routes. Every field is read by name, so an error
//! names the parameter at fault; fields OpenAI defines that this server cannot honour are refused
//! unless they hold their neutral value, and unknown fields are refused like OpenAI does.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokenizer::ChatMessage;

use crate::config::ModeArg;
use crate::error::ApiError;

/// What both routes ask of the decoder.
#[derive(Clone, Debug, Default)]
pub struct GenOptions {
    /// `model`, when sent.
    pub model: Option<String>,
    /// `max_tokens` / `max_completion_tokens`.
    pub max_tokens: Option<usize>,
    /// Sampling temperature (default 1 as OpenAI; 0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Extension: top-k.
    pub top_k: Option<usize>,
    /// Extension: min-p.
    pub min_p: Option<f32>,
    /// Extension: repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// RNG seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Stream with server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Extension `stream_options.include_steps`: the block-diffusion step trace (docs/api.md).
    pub include_steps: bool,
    /// Extension: decoding mode.
    pub mode: Option<ModeArg>,
    /// Extension: block size.
    pub block_size: Option<usize>,
    /// Extension: sub-block size.
    pub small_block_size: Option<usize>,
    /// Extension: confidence threshold.
    pub threshold: Option<f32>,
}

/// A parsed `/v1/chat/completions` request.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Decoding options.
    pub options: GenOptions,
}

/// A parsed `/v1/completions` request.
#[derive(Clone, Debug)]
pub struct CompletionRequest {
    /// One or more prompts.
    pub prompts: Vec<String>,
    /// Return the prompt before the completion text.
    pub echo: bool,
    /// Decoding options.
    pub options: GenOptions,
}

/// Fields shared by both routes.
const COMMON: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "mode",
    "block_size",
    "small_block_size",
    "threshold",
];

/// Fields only chat has.
const CHAT: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "modalities",
];

/// Fields only completions has.
const COMPLETION: &[&str] = &["prompt", "echo", "suffix", "best_of"];

/// Parses a request body into a JSON object, with OpenAI-style errors for bytes that are not one.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::invalid(None, format!("the request body is not valid UTF-8: {e}"))
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            None,
            "the request body is empty; send a JSON object",
        ));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid(
            None,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::invalid(
            None,
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

fn check_known(body: &Map<String, Value>, own: &[&str]) -> Result<(), ApiError> {
    for key in body.keys() {
        if !COMMON.contains(&key.as_str()) && !own.contains(&key.as_str()) {
            return Err(ApiError::param(
                key,
                format!("Unrecognized request argument supplied: {key}"),
            ));
        }
    }
    Ok(())
}

/// Reads an optional field; `null` counts as absent.
fn get<T: DeserializeOwned>(
    body: &Map<String, Value>,
    key: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|_| {
            ApiError::param(
                key,
                format!("`{key}` must be {expected}, got {}", describe(v)),
            )
        }),
    }
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(40)])
    } else {
        s
    }
}

/// Refuses a field unless it is absent or holds `neutral`.
fn only_neutral(
    body: &Map<String, Value>,
    key: &str,
    neutral: impl Fn(&Value) -> bool,
    what: &str,
) -> Result<(), ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if neutral(v) => Ok(()),
        Some(_) => Err(ApiError::param(
            key,
            format!("`{key}` is not supported by this server ({what})"),
        )),
    }
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

fn is_false(v: &Value) -> bool {
    v.as_bool() == Some(false)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn options(body: &Map<String, Value>, max_tokens_keys: &[&str]) -> Result<GenOptions, ApiError> {
    let mut o = GenOptions {
        model: get(body, "model", "a string")?,
        ..Default::default()
    };
    for key in max_tokens_keys {
        if let Some(n) = get::<u64>(body, key, "a positive integer")? {
            if n == 0 {
                return Err(ApiError::param(key, format!("`{key}` must be at least 1")));
            }
            o.max_tokens = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
    o.temperature = get(body, "temperature", "a number between 0 and 2")?;
    if let Some(t) = o.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::param(
                "temperature",
                format!("`temperature` must be between 0 and 2, got {t}"),
            ));
        }
    }
    o.top_p = get(body, "top_p", "a number in (0, 1]")?;
    if let Some(p) = o.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::param(
                "top_p",
                format!("`top_p` must be in (0, 1], got {p}"),
            ));
        }
    }
    o.top_k = get(body, "top_k", "a non-negative integer")?;
    o.min_p = get(body, "min_p", "a number in [0, 1]")?;
    if let Some(p) = o.min_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::param(
                "min_p",
                format!("`min_p` must be in [0, 1], got {p}"),
            ));
        }
    }
    o.repetition_penalty = get(body, "repetition_penalty", "a positive number")?;
    if let Some(p) = o.repetition_penalty {
        if !(p.is_finite() && p > 0.0) {
            return Err(ApiError::param(
                "repetition_penalty",
                format!("`repetition_penalty` must be positive, got {p}"),
            ));
        }
    }
    // OpenAI seeds are signed 64-bit integers.
    o.seed = get::<i64>(body, "seed", "an integer")?.map(|s| s as u64);
    o.stop = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut stops = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => stops.push(s.clone()),
                    other => {
                        return Err(ApiError::param(
                            "stop",
                            format!("`stop` must hold strings, got {}", describe(other)),
                        ))
                    }
                }
            }
            stops
        }
        Some(other) => {
            return Err(ApiError::param(
                "stop",
                format!(
                    "`stop` must be a string or a list of strings, got {}",
                    describe(other)
                ),
            ))
        }
    };
    if o.stop.len() > 16 {
        return Err(ApiError::param(
            "stop",
            "`stop` may hold at most 16 strings",
        ));
    }
    if o.stop.iter().any(String::is_empty) {
        return Err(ApiError::param("stop", "`stop` strings must not be empty"));
    }
    if let Some(n) = get::<u64>(body, "n", "an integer")? {
        if n != 1 {
            return Err(ApiError::param(
                "n",
                format!("`n` must be 1 on this server, got {n}"),
            ));
        }
    }
    o.stream = get(body, "stream", "a boolean")?.unwrap_or(false);
    if let Some(so) = body.get("stream_options").filter(|v| !v.is_null()) {
        let Value::Object(so) = so else {
            return Err(ApiError::param(
                "stream_options",
                "`stream_options` must be an object",
            ));
        };
        for key in so.keys() {
            if !["include_usage", "include_obfuscation", "include_steps"].contains(&key.as_str()) {
                return Err(ApiError::param(
                    "stream_options",
                    format!("Unrecognized stream option: {key}"),
                ));
            }
        }
        o.include_usage = get(so, "include_usage", "a boolean")?.unwrap_or(false);
        o.include_steps = match so.get("include_steps") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ApiError::param(
                    "stream_options.include_steps",
                    format!(
                        "`stream_options.include_steps` must be a boolean, got {}",
                        describe(other)
                    ),
                ))
            }
        };
        if o.include_steps && !o.stream {
            return Err(ApiError::param(
                "stream_options.include_steps",
                "`stream_options.include_steps` needs `stream: true`: the step trace is sent as \
                 comment lines of the event stream",
            ));
        }
    }
    get::<String>(body, "user", "a string")?;
    get::<Map<String, Value>>(body, "metadata", "an object")?;
    get::<bool>(body, "store", "a boolean")?;
    get::<String>(body, "service_tier", "a string")?;
    only_neutral(body, "frequency_penalty", is_zero, "use repetition_penalty")?;
    only_neutral(body, "presence_penalty", is_zero, "use repetition_penalty")?;
    only_neutral(body, "logit_bias", is_empty, "no logit bias")?;
    only_neutral(
        body,
        "logprobs",
        |v| is_false(v) || is_zero(v),
        "no log probabilities",
    )?;

    o.mode = get(body, "mode", "\"dlm\" or \"ar\"")?;
    o.block_size = get(body, "block_size", "a positive integer")?;
    if o.block_size == Some(0) || o.block_size.is_some_and(|b| b > 4096) {
        return Err(ApiError::param(
            "block_size",
            "`block_size` must be between 1 and 4096",
        ));
    }
    o.small_block_size = get(body, "small_block_size", "a positive integer")?;
    if o.small_block_size == Some(0) {
        return Err(ApiError::param(
            "small_block_size",
            "`small_block_size` must be positive",
        ));
    }
    o.threshold = get(body, "threshold", "a number in [0, 1]")?;
    if let Some(t) = o.threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::param(
                "threshold",
                format!("`threshold` must be in [0, 1], got {t}"),
            ));
        }
    }
    Ok(o)
}

/// Parses and checks a chat request body.
pub fn chat_request(body: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
    check_known(body, CHAT)?;
    let options = options(body, &["max_tokens", "max_completion_tokens"])?;
    only_neutral(body, "top_logprobs", is_zero, "no log probabilities")?;
    only_neutral(body, "tools", is_empty, "no tool calls")?;
    only_neutral(
        body,
        "tool_choice",
        |v| v.as_str() == Some("none") || v.as_str() == Some("auto"),
        "no tool calls",
    )?;
    get::<bool>(body, "parallel_tool_calls", "a boolean")?;
    only_neutral(
        body,
        "response_format",
        |v| v.get("type").and_then(Value::as_str) == Some("text"),
        "text output only",
    )?;
    get::<String>(body, "reasoning_effort", "a string")?;
    only_neutral(
        body,
        "modalities",
        |v| v.as_array().is_some_and(|a| a.iter().all(|m| m == "text")),
        "text only",
    )?;
    let messages = match body.get("messages") {
        None | Some(Value::Null) => {
            return Err(ApiError::param("messages", "`messages` is required"))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::param(
                "messages",
                format!("`messages` must be an array, got {}", describe(other)),
            ))
        }
    };
    if messages.is_empty() {
        return Err(ApiError::param(
            "messages",
            "`messages` must hold at least one message",
        ));
    }
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChatRequest { messages, options })
}

fn message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(m) = m else {
        return Err(ApiError::param(
            &format!("messages[{i}]"),
            format!("messages[{i}] must be an object with `role` and `content`"),
        ));
    };
    for key in m.keys() {
        if !["role", "content", "name", "refusal"].contains(&key.as_str()) {
            return Err(ApiError::param(
                &at(key),
                format!("messages[{i}].{key} is not supported by this server"),
            ));
        }
    }
    let role = match m.get("role") {
        Some(Value::String(r)) => r.as_str(),
        Some(other) => {
            return Err(ApiError::param(
                &at("role"),
                format!(
                    "messages[{i}].role must be a string, got {}",
                    describe(other)
                ),
            ))
        }
        None => {
            return Err(ApiError::param(
                &at("role"),
                format!("messages[{i}].role is required"),
            ))
        }
    };
    let role = match role {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        other => {
            return Err(ApiError::param(
                &at("role"),
                format!(
                    "messages[{i}].role `{other}` is not one of system, developer, user, assistant"
                ),
            ))
        }
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) if role == "assistant" => String::new(),
        None | Some(Value::Null) => {
            return Err(ApiError::param(
                &at("content"),
                format!("messages[{i}].content is required"),
            ))
        }
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (Some("text"), _) => {
                        return Err(ApiError::param(
                            &at(&format!("content[{j}].text")),
                            format!("messages[{i}].content[{j}].text must be a string"),
                        ))
                    }
                    (Some(other), _) => {
                        return Err(ApiError::param(
                            &at(&format!("content[{j}].type")),
                            format!(
                                "messages[{i}].content[{j}] has type `{other}`; this server takes text parts only"
                            ),
                        ))
                    }
                    (None, _) => {
                        return Err(ApiError::param(
                            &at(&format!("content[{j}]")),
                            format!("messages[{i}].content[{j}] must be an object with a `type`"),
                        ))
                    }
                }
            }
            text
        }
        Some(other) => {
            return Err(ApiError::param(
                &at("content"),
                format!(
                    "messages[{i}].content must be a string or an array of text parts, got {}",
                    describe(other)
                ),
            ))
        }
    };
    Ok(ChatMessage::new(role, content))
}

/// Parses and checks a completions request body.
pub fn completion_request(body: &Map<String, Value>) -> Result<CompletionRequest, ApiError> {
    check_known(body, COMPLETION)?;
    let options = options(body, &["max_tokens"])?;
    only_neutral(body, "suffix", |v| v.as_str() == Some(""), "no suffix")?;
    only_neutral(body, "best_of", |v| v.as_u64() == Some(1), "best_of 1 only")?;
    let echo = get(body, "echo", "a boolean")?.unwrap_or(false);
    let prompts = match body.get("prompt") {
        None | Some(Value::Null) => return Err(ApiError::param("prompt", "`prompt` is required")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::param(
                    "prompt",
                    format!(
                        "`prompt` must be a string or a list of strings, got an item {}",
                        describe(other)
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::param("prompt", "`prompt` must not be empty"))
        }
        Some(other) => {
            return Err(ApiError::param(
                "prompt",
                format!(
                    "`prompt` must be a string or a list of strings, got {}",
                    describe(other)
                ),
            ))
        }
    };
    if prompts.len() > 16 {
        return Err(ApiError::param("prompt", "at most 16 prompts per request"));
    }
    if options.stream && prompts.len() > 1 {
        return Err(ApiError::param(
            "prompt",
            "streaming takes a single prompt; send one request per prompt",
        ));
    }
    Ok(CompletionRequest {
        prompts,
        echo,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(v: Value) -> Result<ChatRequest, ApiError> {
        chat_request(v.as_object().unwrap())
    }

    #[test]
    fn a_typical_sdk_request_parses() {
        let r = chat(json!({
            "model": "m", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}
            ],
            "max_tokens": 5, "temperature": 0, "stop": "x", "stream": true,
            "stream_options": {"include_usage": true}, "threshold": 0.9, "block_size": 32,
            "frequency_penalty": 0, "user": "u"
        }))
        .unwrap();
        assert_eq!(r.messages[1].content, "Hi there");
        assert_eq!(r.options.max_tokens, Some(5));
        assert_eq!(r.options.stop, vec!["x"]);
        assert!(r.options.stream && r.options.include_usage);
        assert_eq!(r.options.threshold, Some(0.9));
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (json!({"messages": []}), "messages"),
            (json!({"messages": "hi"}), "messages"),
            (json!({}), "messages"),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": 3}),
                "temperature",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
                "max_tokens",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
                "max_tokens",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
                "n",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "bogus": 1}),
                "bogus",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
                "tools",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]}),
                "stop",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "threshold": 2}),
                "threshold",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "mode": "fast"}),
                "mode",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "top_p": 0}),
                "top_p",
            ),
        ];
        for (body, param) in cases {
            let e = chat(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn include_steps_is_a_boolean_of_streamed_requests() {
        let with = |so: Value, stream: bool| {
            chat(json!({
                "messages": [{"role": "user", "content": "x"}],
                "stream": stream,
                "stream_options": so,
            }))
        };
        let on = with(json!({"include_steps": true, "include_usage": true}), true).unwrap();
        assert!(on.options.include_steps && on.options.include_usage);
        assert!(
            !with(json!({"include_steps": false}), true)
                .unwrap()
                .options
                .include_steps
        );
        assert!(!with(json!({}), true).unwrap().options.include_steps);
        assert!(
            !with(json!({"include_steps": false}), false)
                .unwrap()
                .options
                .include_steps
        );
        for (so, stream) in [
            (json!({"include_steps": "yes"}), true),
            (json!({"include_steps": 1}), true),
            (json!({"include_steps": [true]}), true),
            (json!({"include_steps": true}), false),
        ] {
            let e = with(so.clone(), stream).unwrap_err();
            assert_eq!(e.status, 400, "{so}");
            assert_eq!(
                e.param.as_deref(),
                Some("stream_options.include_steps"),
                "{so}"
            );
            assert!(e.message.contains("include_steps"), "{}", e.message);
        }
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        for body in [&b""[..], b"{", b"[1]", b"\xff\xfe", b"null"] {
            let e = parse_body(body).unwrap_err();
            assert_eq!(e.status, 400);
        }
        assert!(parse_body(b" {\"a\": 1} ").is_ok());
    }

    #[test]
    fn completions_take_a_string_or_a_list() {
        let one = completion_request(json!({"prompt": "Once"}).as_object().unwrap()).unwrap();
        assert_eq!(one.prompts, vec!["Once"]);
        let two = completion_request(json!({"prompt": ["a", "b"]}).as_object().unwrap()).unwrap();
        assert_eq!(two.prompts.len(), 2);
        for bad in [
            json!({"prompt": []}),
            json!({"prompt": [1]}),
            json!({}),
            json!({"prompt": ["a", "b"], "stream": true}),
        ] {
            assert_eq!(
                completion_request(bad.as_object().unwrap())
                    .unwrap_err()
                    .param
                    .as_deref(),
                Some("prompt")
            );
        }
    }
}
