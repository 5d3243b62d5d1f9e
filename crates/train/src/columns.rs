//! Which columns of a record training reads: a JSONL line's keys or a parquet file's columns.
//!
//! A record is one of three shapes ([`Layout`]), picked from the names it has:
//!
//! | shape | columns (first match wins) | `data.columns.*` |
//! |---|---|---|
//! | chat | `messages`, else ShareGPT's `conversations`: a list of `{role, content}` (ShareGPT: `{from, value}`) | `messages`, `role`, `content` |
//! | Nemotron | `input` (a prompt or a list of messages) and `output`, with `system_prompt` when present | — |
//! | text | `text`: a string | `text` |
//!
//! `data.columns.messages` / `data.columns.text` name the column outright (the chat column wins
//! when both are set and present). Inside a message the role is read from `data.columns.role`,
//! else `role` when the message has it, else `from`; the content from `data.columns.content`,
//! else `content`, else `value`. ShareGPT's role names are mapped to the chat-template ones:
//! `human` → `user`, `gpt` → `assistant` (`system`, `tool` and the rest are kept).

use serde_json::Value;

use crate::config::ColumnsConfig;

/// The shape of a record and the columns it is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A conversation: `column` holds a list of messages.
    Chat {
        /// The chat column.
        column: String,
        /// The role key of a message (`None`: `role`, else `from`).
        role: Option<String>,
        /// The content key of a message (`None`: `content`, else `value`).
        content: Option<String>,
    },
    /// A Nemotron post-training record: `input`, `output`, optional `system_prompt`.
    Nemotron {
        /// Whether the record has a `system_prompt` column.
        system_prompt: bool,
    },
    /// A document: `column` holds a string.
    Text {
        /// The text column.
        column: String,
    },
}

/// Why no layout fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoLayout {
    /// A column named by `data.columns.<key>` is not there.
    Missing {
        /// The configuration key (`data.columns.messages`).
        key: &'static str,
        /// The column it names.
        column: String,
    },
    /// Nothing was configured and no known column is there.
    Unknown,
}

/// What a record needs, for error messages.
pub const EXPECTED: &str = "`messages` (chat: a list of {role, content}), `conversations` \
    (ShareGPT: a list of {from, value}), `text` (a string), or `input` + `output` (Nemotron); \
    name other columns with data.columns.messages=NAME or data.columns.text=NAME";

impl Layout {
    /// Picks the layout of a record whose columns are `names`, following `config` (see the
    /// module docs).
    pub fn pick<'a>(
        config: &ColumnsConfig,
        names: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<Layout, NoLayout> {
        let has = |name: &str| names.clone().into_iter().any(|n| n == name);
        let chat = |column: &str| Layout::Chat {
            column: column.to_string(),
            role: config.role.clone(),
            content: config.content.clone(),
        };
        if let Some(c) = config.messages.as_deref().filter(|c| has(c)) {
            return Ok(chat(c));
        }
        if let Some(c) = config.text.as_deref().filter(|c| has(c)) {
            return Ok(Layout::Text {
                column: c.to_string(),
            });
        }
        if let Some(c) = &config.messages {
            return Err(NoLayout::Missing {
                key: "data.columns.messages",
                column: c.clone(),
            });
        }
        if let Some(c) = &config.text {
            return Err(NoLayout::Missing {
                key: "data.columns.text",
                column: c.clone(),
            });
        }
        if let Some(c) = ["messages", "conversations"].into_iter().find(|c| has(c)) {
            return Ok(chat(c));
        }
        if has("input") && has("output") {
            return Ok(Layout::Nemotron {
                system_prompt: has("system_prompt"),
            });
        }
        if has("text") {
            return Ok(Layout::Text {
                column: "text".into(),
            });
        }
        Err(NoLayout::Unknown)
    }

    /// The columns a record of this layout is read from.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Layout::Chat { column, .. } | Layout::Text { column } => vec![column.as_str()],
            Layout::Nemotron { system_prompt } => {
                let mut c = vec!["input", "output"];
                if *system_prompt {
                    c.push("system_prompt");
                }
                c
            }
        }
    }

    /// The role key of `message` (an object): the configured one, else `role` when present,
    /// else `from`.
    pub fn role_key<'a>(&'a self, message: &Value) -> &'a str {
        match self {
            Layout::Chat { role: Some(k), .. } => k,
            _ => present_or(message, "role", "from"),
        }
    }

    /// The content key of `message`: the configured one, else `content` when present, else
    /// `value`.
    pub fn content_key<'a>(&'a self, message: &Value) -> &'a str {
        match self {
            Layout::Chat {
                content: Some(k), ..
            } => k,
            _ => present_or(message, "content", "value"),
        }
    }
}

/// `first` when `message` has it or lacks `second`, else `second`.
fn present_or(message: &Value, first: &'static str, second: &'static str) -> &'static str {
    if message.get(first).is_some() || message.get(second).is_none() {
        first
    } else {
        second
    }
}

/// A role as chat templates name it: ShareGPT's `human` and `gpt` become `user` and
/// `assistant`; anything else is kept.
pub fn normalise_role(role: &str) -> &str {
    match role {
        "human" => "user",
        "gpt" => "assistant",
        other => other,
    }
}

impl std::fmt::Display for NoLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoLayout::Missing { key, column } => {
                write!(f, "{key} names `{column}`, which is not there")
            }
            NoLayout::Unknown => write!(f, "no usable column; a record needs {EXPECTED}"),
        }
    }
}
