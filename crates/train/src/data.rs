//! Training data → fixed-length windows of token ids and labels (§2.2 of the reference notes).
//!
//! 1. **Examples.** A JSONL line or a parquet row (files and shard directories: see
//!    [`crate::dataset`]) holds one example: a chat `{"messages": [{"role", "content"}, …]}`
//!    (OpenAI's format; extra fields are ignored, `content` may be a list of text parts; ShareGPT's
//!    `conversations` of `{from, value}` too), a Nemotron post-training record `{"input":
//!    [messages] | "text", "output": "…", "system_prompt": "…"}`, or `{"text": "…"}`; other
//!    column names through `data.columns` ([`crate::columns`]). A `.txt` file is a list of
//!    documents (see [`TextSplit`]). Chats are rendered with the model's chat template and tokenized once; the
//!    labels are the token ids on assistant tokens (content, end-of-turn token(s) and the newline
//!    after them: exactly what `apply_chat_template(..., return_assistant_tokens_mask=True)` marks
//!    inside the reference template's `{% generation %}` blocks) and [`IGNORE`] elsewhere. Text
//!    documents are `tokenizer(text)` (the BOS of llama-style tokenizers, unsupervised), the text
//!    (supervised) and EOS (supervised, so the model learns to stop).
//! 2. **Packing** ([`pack`]). Examples are concatenated in file order, each optionally followed by
//!    `bd − len % bd` mask tokens with label [`IGNORE`] (the paper's "+pad": a whole block when the
//!    length is already a multiple of `bd`), and the stream is cut into windows of `seq_len`; the
//!    remainder after the last whole window is dropped. Conversations may straddle windows, as in
//!    the reference.
//!
//! Assistant spans are found by rendering: for the assistant message `i`, the conversation up to
//! `i` with the generation prompt renders a prefix `P`, and up to and including `i` a prefix `Q`;
//! the span is `Q − P` in the full rendering. A template that renders earlier turns differently
//! once later turns follow (Qwen3 drops the reasoning of earlier turns) breaks that prefix
//! property: such turns are left unsupervised and counted in [`LoadStats`]; the last assistant
//! turn always satisfies it.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};
use tokenizer::{ChatMessage, ChatTemplate};
use tokenizers::{AddedToken, Tokenizer};

use crate::columns::{self, Layout, NoLayout};
use crate::config::{DataConfig, TextSplit};
use crate::dataset::{self, Format};
use crate::error::{Result, TrainError};
use crate::parquet_rows::ParquetRows;

/// The label of a position that is not supervised (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// The mask token Fast-dLLM v2 adds to the vocabulary.
pub const MASK_TOKEN: &str = "|<MASK>|";

/// The document separator line of the TinyStories text release.
const END_OF_TEXT: &str = "<|endoftext|>";

/// One conversation or document: token ids and labels of the same length (label = the id on
/// supervised positions, [`IGNORE`] elsewhere; not shifted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Per position: the id when supervised, else [`IGNORE`].
    pub labels: Vec<i64>,
}

impl Example {
    /// The number of supervised positions.
    pub fn n_supervised(&self) -> usize {
        count_supervised(&self.labels)
    }
}

/// A training window of exactly `seq_len` tokens (labels not shifted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Per position: the id when supervised, else [`IGNORE`].
    pub labels: Vec<i64>,
}

impl Window {
    /// The number of supervised positions: this window's share of the loss normaliser.
    pub fn n_supervised(&self) -> usize {
        count_supervised(&self.labels)
    }
}

/// The number of labels that are not [`IGNORE`].
pub fn count_supervised(labels: &[i64]) -> usize {
    labels.iter().filter(|&&l| l != IGNORE).count()
}

/// The mask token's id and whether adding it grew the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskToken {
    /// The id of `|<MASK>|`.
    pub id: u32,
    /// Whether it was added now (the embedding needs a row for it when `id` ≥ its rows).
    pub added: bool,
}

/// Adds `|<MASK>|` to `tokenizer` as a special token when it is missing, as the reference does
/// (`add_special_tokens({"additional_special_tokens": ["|<MASK>|"]})`): its id is the next one after
/// the current vocabulary (added tokens included). A tokenizer that has it keeps its id.
pub fn add_mask_token(tokenizer: &mut Tokenizer) -> Result<MaskToken> {
    if let Some(id) = tokenizer.token_to_id(MASK_TOKEN) {
        return Ok(MaskToken { id, added: false });
    }
    tokenizer
        .add_special_tokens([AddedToken::from(MASK_TOKEN, true)])
        .map_err(|e| TrainError::Tokenizer(format!("adding {MASK_TOKEN}: {e}")))?;
    let id = tokenizer
        .token_to_id(MASK_TOKEN)
        .ok_or_else(|| TrainError::Tokenizer(format!("{MASK_TOKEN} is missing after adding it")))?;
    Ok(MaskToken { id, added: true })
}

/// The tokenizer side of the data pipeline: the checkpoint's `tokenizer.json`, its chat
/// template and its EOS token.
pub struct DataTokenizer {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    eos: Option<u32>,
}

impl fmt::Debug for DataTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataTokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("chat_template", &self.template.is_some())
            .field("eos", &self.eos)
            .finish()
    }
}

impl DataTokenizer {
    /// Loads `tokenizer.json`, `tokenizer_config.json` (optional) and `chat_template.jinja`
    /// (optional; used when the config has no `chat_template`) of a Hugging Face checkpoint.
    pub fn from_checkpoint(dir: &Path) -> Result<DataTokenizer> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let tokenizer: Tokenizer = text
            .parse()
            .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| TrainError::json(&config_path, e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Object(Default::default()),
            Err(e) => return Err(TrainError::io(&config_path, e)),
        };
        let jinja_path = dir.join("chat_template.jinja");
        let jinja = match std::fs::read_to_string(&jinja_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(TrainError::io(&jinja_path, e)),
        };
        DataTokenizer::new(tokenizer, &config, jinja.as_deref())
            .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", dir.display())))
    }

    /// Wraps `tokenizer` with the settings of `tokenizer_config` (the parsed
    /// `tokenizer_config.json`: `chat_template`, `bos_token`, `eos_token`, `unk_token`,
    /// `pad_token`); `chat_template` is the `chat_template.jinja` text, used when the config has
    /// none.
    pub fn new(
        tokenizer: Tokenizer,
        tokenizer_config: &Value,
        chat_template: Option<&str>,
    ) -> Result<DataTokenizer> {
        let token_text = |key: &str| -> Option<String> {
            let v = tokenizer_config.get(key)?;
            v.as_str()
                .or_else(|| v.get("content").and_then(Value::as_str))
                .map(str::to_string)
        };
        let eos = match token_text("eos_token") {
            Some(text) => Some(tokenizer.token_to_id(&text).ok_or_else(|| {
                TrainError::Tokenizer(format!(
                    "tokenizer_config.json eos_token `{text}` is not in the vocabulary"
                ))
            })?),
            None => None,
        };
        let from_config = match tokenizer_config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: the one called "default", else the first.
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or(named.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        let template = match from_config.as_deref().or(chat_template) {
            Some(source) => {
                let names = ["bos_token", "eos_token", "unk_token", "pad_token"];
                let texts: Vec<(&str, String)> = names
                    .iter()
                    .filter_map(|n| token_text(n).map(|t| (*n, t)))
                    .collect();
                let pairs: Vec<(&str, &str)> =
                    texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
                Some(
                    ChatTemplate::from_source(source, &pairs)
                        .map_err(|e| TrainError::Tokenizer(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok(DataTokenizer {
            tokenizer,
            template,
            eos,
        })
    }

    /// The Hugging Face tokenizer (with `|<MASK>|` once [`add_mask_token`](Self::add_mask_token)
    /// ran): save it as the output's `tokenizer.json`.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Adds `|<MASK>|` when missing; see [`add_mask_token`].
    pub fn add_mask_token(&mut self) -> Result<MaskToken> {
        add_mask_token(&mut self.tokenizer)
    }

    /// The EOS id (`tokenizer_config.json` `eos_token`), appended to text documents.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the checkpoint has a chat template (needed for chat data).
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders and tokenizes a conversation; labels on the assistant tokens. Also returns the
    /// number of assistant turns left unsupervised because the template renders them differently
    /// in context (see the module docs).
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<(Example, usize)> {
        let template = self.template.as_ref().ok_or_else(|| {
            TrainError::Tokenizer(
                "the model has no chat template (tokenizer_config.json `chat_template` or \
                 chat_template.jinja), so chat data cannot be rendered; use {\"text\": …} lines"
                    .into(),
            )
        })?;
        let render = |msgs: &[ChatMessage], generation_prompt: bool| {
            template
                .render(msgs, generation_prompt)
                .map_err(|e| TrainError::Tokenizer(e.to_string()))
        };
        let full = render(messages, false)?;
        let mut spans: Vec<Range<usize>> = Vec::new();
        let mut unsupervised = 0;
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = render(&messages[..i], true);
            let upto = render(&messages[..=i], false);
            match (before, upto) {
                (Ok(p), Ok(q))
                    if q.len() > p.len() && full.starts_with(&p) && full.starts_with(&q) =>
                {
                    spans.push(p.len()..q.len());
                }
                _ => unsupervised += 1,
            }
        }
        let enc = self
            .tokenizer
            .encode(full.as_str(), false)
            .map_err(|e| TrainError::Tokenizer(format!("encoding: {e}")))?;
        let labels = enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .map(|(&id, &(start, end))| {
                let inside = spans.iter().any(|s| {
                    if start == end {
                        s.contains(&start)
                    } else {
                        start < s.end && end > s.start
                    }
                });
                if inside {
                    i64::from(id)
                } else {
                    IGNORE
                }
            })
            .collect();
        let example = Example {
            input_ids: enc.get_ids().to_vec(),
            labels,
        };
        Ok((example, unsupervised))
    }

    /// Tokenizes a text document as `tokenizer(text)` does (with the tokenizer's own special
    /// tokens, e.g. BOS, unsupervised), all text supervised, then EOS (supervised) when
    /// `append_eos` and the tokenizer has one.
    pub fn encode_text(&self, text: &str, append_eos: bool) -> Result<Example> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| TrainError::Tokenizer(format!("encoding: {e}")))?;
        let mut input_ids = enc.get_ids().to_vec();
        let mut labels: Vec<i64> = input_ids
            .iter()
            .zip(enc.get_special_tokens_mask())
            .map(|(&id, &special)| if special == 1 { IGNORE } else { i64::from(id) })
            .collect();
        if let (true, Some(eos)) = (append_eos, self.eos) {
            if input_ids.last() == Some(&eos) {
                // The post-processor appended it (add_eos_token): supervise it.
                if let Some(l) = labels.last_mut() {
                    *l = i64::from(eos);
                }
            } else {
                input_ids.push(eos);
                labels.push(i64::from(eos));
            }
        }
        Ok(Example { input_ids, labels })
    }
}

/// What [`load_examples`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Data files read (shards of a dataset directory, or the one file).
    pub files: usize,
    /// Chats (`messages` or Nemotron records).
    pub conversations: usize,
    /// Text documents (`text` lines or `.txt` documents).
    pub documents: usize,
    /// Assistant turns supervised.
    pub assistant_turns: usize,
    /// Assistant turns left unsupervised because the template renders them differently once
    /// later turns follow.
    pub unsupervised_turns: usize,
    /// Blank lines, null or empty documents, null conversations and empty `.txt` documents
    /// skipped.
    pub skipped: usize,
}

/// The examples of a data file with what was read.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// One per conversation or document, in file order.
    pub examples: Vec<Example>,
    /// Counts.
    pub stats: LoadStats,
}

/// Reads the data `path` (`data.path`) stands for: a `.jsonl`/`.json` file (one JSON object a
/// line), a `.txt` file, a `.parquet` file, or a directory of `.parquet`/`.jsonl` shards
/// restricted to `data.split` (see [`crate::dataset`]). Records are read in file order, shard
/// after shard; their columns are picked following `data.columns` (see [`crate::columns`]).
/// Malformed records are errors naming the file and line (JSONL) or row (parquet).
///
/// JSONL and parquet are streamed (a line, or a row group's pages, at a time); what is kept is
/// the tokenized examples, which the trainer packs and shuffles as windows.
pub fn load_examples(path: &Path, tok: &DataTokenizer, data: &DataConfig) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    for file in dataset::data_files(path, data.split.as_deref())? {
        match file.format {
            Format::Jsonl => load_jsonl(&file.path, tok, data, &mut loaded)?,
            Format::Parquet => load_parquet(&file.path, tok, data, &mut loaded)?,
            Format::Text => {
                let text = std::fs::read_to_string(&file.path)
                    .map_err(|e| TrainError::io(&file.path, e))?;
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                for doc in split_text(text, data.text_split) {
                    let ex = tok.encode_text(&doc, data.append_eos)?;
                    loaded.examples.push(ex);
                    loaded.stats.documents += 1;
                }
            }
        }
        loaded.stats.files += 1;
    }
    Ok(loaded)
}

/// The documents of a text file: split at `<|endoftext|>` lines (when `split` is
/// [`TextSplit::Auto`] and the file has any), at blank lines, or at every line; trimmed, empty
/// ones left out. Lines inside a document keep their newlines.
pub fn split_text(text: &str, split: TextSplit) -> Vec<String> {
    let has_separator = text.lines().any(|l| l.trim() == END_OF_TEXT);
    let mut docs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |current: &mut Vec<&str>| {
        let doc = current.join("\n");
        let doc = doc.trim();
        if !doc.is_empty() {
            docs.push(doc.to_string());
        }
        current.clear();
    };
    for line in text.lines() {
        let boundary = match split {
            TextSplit::Auto if has_separator => line.trim() == END_OF_TEXT,
            TextSplit::Auto | TextSplit::Paragraph => line.trim().is_empty(),
            TextSplit::Line => true,
        };
        if boundary {
            if split == TextSplit::Line {
                current.push(line);
            }
            flush(&mut current);
        } else {
            current.push(line);
        }
    }
    flush(&mut current);
    docs
}

/// Reads JSONL examples line by line; each line's columns are picked on their own.
fn load_jsonl(
    path: &Path,
    tok: &DataTokenizer,
    data: &DataConfig,
    loaded: &mut Loaded,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| TrainError::io(path, e))?;
        let line = if n == 1 {
            line.strip_prefix('\u{feff}').unwrap_or(&line)
        } else {
            &line
        };
        if line.trim().is_empty() {
            loaded.stats.skipped += 1;
            continue;
        }
        let at = |msg: String| TrainError::data_line(path, n, msg);
        let record: Value =
            serde_json::from_str(line).map_err(|e| at(format!("not valid JSON: {e}")))?;
        let obj = record
            .as_object()
            .ok_or_else(|| at("a line must be a JSON object".into()))?;
        let layout = Layout::pick(&data.columns, obj.keys().map(String::as_str)).map_err(|e| {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            at(match e {
                NoLayout::Unknown => format!(
                    "a line needs {}; its keys: {}",
                    columns::EXPECTED,
                    keys.join(", ")
                ),
                e => format!("{e}; its keys: {}", keys.join(", ")),
            })
        })?;
        let record = parse_record(obj, &layout).map_err(at)?;
        add_record(record, tok, data.append_eos, loaded).map_err(|e| at(e.to_string()))?;
    }
    Ok(())
}

/// Reads parquet examples row group by row group (see [`crate::parquet_rows`]).
fn load_parquet(
    path: &Path,
    tok: &DataTokenizer,
    data: &DataConfig,
    loaded: &mut Loaded,
) -> Result<()> {
    let rows = ParquetRows::open(path, &data.columns)?;
    let layout = rows.layout().clone();
    rows.for_each(|row, record| {
        let at = |msg: String| TrainError::Data(format!("{}: row {row}: {msg}", path.display()));
        let obj = record
            .as_object()
            .ok_or_else(|| at("a row must be a record".into()))?;
        let record = parse_record(obj, &layout).map_err(at)?;
        add_record(record, tok, data.append_eos, loaded).map_err(|e| at(e.to_string()))
    })
}

/// Tokenizes one record into `loaded` (a null or empty one is counted as skipped).
fn add_record(
    record: Option<Record>,
    tok: &DataTokenizer,
    append_eos: bool,
    loaded: &mut Loaded,
) -> Result<()> {
    match record {
        Some(Record::Chat(messages)) => {
            let (ex, unsupervised) = tok.encode_chat(&messages)?;
            let turns = messages.iter().filter(|m| m.role == "assistant").count();
            loaded.stats.conversations += 1;
            loaded.stats.assistant_turns += turns - unsupervised;
            loaded.stats.unsupervised_turns += unsupervised;
            loaded.examples.push(ex);
        }
        Some(Record::Text(t)) if !t.trim().is_empty() => {
            let ex = tok.encode_text(&t, append_eos)?;
            loaded.stats.documents += 1;
            loaded.examples.push(ex);
        }
        Some(Record::Text(_)) | None => loaded.stats.skipped += 1,
    }
    Ok(())
}

/// One record.
enum Record {
    Chat(Vec<ChatMessage>),
    Text(String),
}

/// The record `layout` reads from `obj`: a chat (the chat column, or Nemotron `input` +
/// `output` [+ `system_prompt`]) or a text; `None` when its column is null.
fn parse_record(
    obj: &Map<String, Value>,
    layout: &Layout,
) -> std::result::Result<Option<Record>, String> {
    match layout {
        Layout::Chat { column, .. } => {
            let messages = match obj.get(column) {
                None | Some(Value::Null) => return Ok(None),
                Some(v) => parse_messages(v, column, layout)?,
            };
            if !messages.iter().any(|m| m.role == "assistant") {
                return Err(format!("`{column}` has no assistant message to learn from"));
            }
            Ok(Some(Record::Chat(messages)))
        }
        Layout::Nemotron { .. } => {
            let (Some(input), Some(output)) = (obj.get("input"), obj.get("output")) else {
                return Ok(None);
            };
            if input.is_null() || output.is_null() {
                return Ok(None);
            }
            let mut messages = Vec::new();
            if let Some(system) = obj.get("system_prompt").and_then(Value::as_str) {
                if !system.is_empty() {
                    messages.push(ChatMessage::new("system", system));
                }
            }
            match input {
                Value::String(s) => messages.push(ChatMessage::new("user", s.as_str())),
                other => messages.extend(parse_messages(other, "input", layout)?),
            }
            let output = content_text(output).ok_or("`output` must be a string")?;
            messages.push(ChatMessage::new("assistant", output));
            Ok(Some(Record::Chat(messages)))
        }
        Layout::Text { column } => match obj.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) => Ok(Some(Record::Text(t.clone()))),
            Some(_) => Err(format!("`{column}` must be a string")),
        },
    }
}

/// A list of messages, each an object with a role and a content (keys as `layout` says; roles
/// normalised with [`columns::normalise_role`]).
fn parse_messages(
    v: &Value,
    key: &str,
    layout: &Layout,
) -> std::result::Result<Vec<ChatMessage>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| format!("`{key}` must be a list of messages"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role_key = layout.role_key(m);
            let content_key = layout.content_key(m);
            let role = m
                .get(role_key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{key}[{i}] has no string `{role_key}`"))?;
            let content = match m.get(content_key) {
                None | Some(Value::Null) => String::new(),
                Some(c) => content_text(c)
                    .ok_or_else(|| format!("{key}[{i}].{content_key} is not text or text parts"))?,
            };
            Ok(ChatMessage::new(columns::normalise_role(role), content))
        })
        .collect()
}

/// Message content: a string, or OpenAI's list of parts (`{"type": "text", "text": …}`),
/// concatenated.
fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                p => p.get("text").and_then(Value::as_str),
            })
            .collect::<Option<Vec<&str>>>()
            .map(|parts| parts.concat()),
        _ => None,
    }
}

/// What [`pack`] did with the examples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Examples given.
    pub examples: usize,
    /// Examples dropped because nothing in them is supervised.
    pub dropped_unsupervised: usize,
    /// Examples dropped because they lie wholly in the remainder after the last window.
    pub dropped_tail: usize,
    /// Tokens of the stream, block padding included.
    pub tokens: usize,
    /// Mask tokens added by block padding.
    pub pad_tokens: usize,
    /// Tokens of the remainder after the last window (dropped).
    pub dropped_tokens: usize,
    /// Supervised tokens in the windows.
    pub supervised_tokens: usize,
    /// Windows made.
    pub windows: usize,
}

impl fmt::Display for PackStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} windows from {} examples ({} tokens, {} of them block padding, {} supervised); \
             dropped: {} tokens after the last window, {} examples in them, {} examples with \
             nothing supervised",
            self.windows,
            self.examples,
            self.tokens,
            self.pad_tokens,
            self.supervised_tokens,
            self.dropped_tokens,
            self.dropped_tail,
            self.dropped_unsupervised
        )
    }
}

/// The windows and what packing did.
#[derive(Clone, Debug, Default)]
pub struct Packed {
    /// Windows of `seq_len` tokens, in data order.
    pub windows: Vec<Window>,
    /// Counts.
    pub stats: PackStats,
}

/// Concatenates `examples` in order (each followed by block padding with `mask_id` when
/// `pad_to_block`) and cuts the stream into windows of `seq_len` tokens, which must be a positive
/// multiple of `bd`. Examples with no supervised token are dropped; so is the remainder after
/// the last whole window.
pub fn pack(
    examples: &[Example],
    seq_len: usize,
    bd: usize,
    pad_to_block: bool,
    mask_id: u32,
) -> Result<Packed> {
    if bd == 0 || seq_len == 0 || !seq_len.is_multiple_of(bd) {
        return Err(TrainError::Config(format!(
            "training.seq_len {seq_len} must be a positive multiple of conversion.bd_size {bd}"
        )));
    }
    let mut stats = PackStats {
        examples: examples.len(),
        ..PackStats::default()
    };
    let mut ids: Vec<u32> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    for ex in examples {
        if ex.input_ids.len() != ex.labels.len() {
            return Err(TrainError::Data(format!(
                "an example has {} ids but {} labels",
                ex.input_ids.len(),
                ex.labels.len()
            )));
        }
        if ex.n_supervised() == 0 {
            stats.dropped_unsupervised += 1;
            continue;
        }
        starts.push(ids.len());
        ids.extend_from_slice(&ex.input_ids);
        labels.extend_from_slice(&ex.labels);
        if pad_to_block {
            let pad = bd - ex.input_ids.len() % bd;
            ids.extend(std::iter::repeat_n(mask_id, pad));
            labels.extend(std::iter::repeat_n(IGNORE, pad));
            stats.pad_tokens += pad;
        }
    }
    let n_windows = ids.len() / seq_len;
    let kept = n_windows * seq_len;
    stats.tokens = ids.len();
    stats.dropped_tokens = ids.len() - kept;
    stats.dropped_tail = starts.iter().filter(|&&s| s >= kept).count();
    stats.windows = n_windows;
    stats.supervised_tokens = count_supervised(&labels[..kept]);
    let windows = ids[..kept]
        .chunks_exact(seq_len)
        .zip(labels[..kept].chunks_exact(seq_len))
        .map(|(i, l)| Window {
            input_ids: i.to_vec(),
            labels: l.to_vec(),
        })
        .collect();
    Ok(Packed { windows, stats })
}

/// Splits off a held-out set: `round(fraction · n)` windows (at least one when `fraction > 0` and
/// there are two or more; never all) chosen with `seed`. Both parts keep the data order. Returns
/// `(train, held_out)`.
pub fn split_holdout(windows: Vec<Window>, fraction: f64, seed: u64) -> (Vec<Window>, Vec<Window>) {
    let n = windows.len();
    let mut k = (fraction.clamp(0.0, 1.0) * n as f64).round() as usize;
    if fraction > 0.0 && k == 0 && n >= 2 {
        k = 1;
    }
    k = k.min(n.saturating_sub(1));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut held = vec![false; n];
    for i in rand::seq::index::sample(&mut rng, n, k) {
        held[i] = true;
    }
    let (mut train, mut held_out) = (Vec::new(), Vec::new());
    for (w, h) in windows.into_iter().zip(held) {
        if h {
            held_out.push(w);
        } else {
            train.push(w);
        }
    }
    (train, held_out)
}
