//! Chat templates: the model's Jinja `tokenizer.chat_template`, rendered with minijinja the way
//! Hugging Face `transformers` renders it, or a fallback for models without one.
//!
//! Hugging Face renders with `trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension, the
//! globals `raise_exception` and `strftime_now`, and its own `tojson` filter
//! (`json.dumps(x, ensure_ascii=False, indent=…, separators=…, sort_keys=…)`, which unlike
//! Jinja's does not escape `<`, `>`, `&`, `'`). The template sees `messages`,
//! `add_generation_prompt`, `tools` and `documents` (none) and the special token texts
//! (`bos_token`, `eos_token`, `unk_token`, `pad_token`, each only when the model has it). Python
//! string methods (`.strip()`, `.startswith()`, …) come from minijinja-contrib's pycompat, and the
//! `{% generation %}` blocks of training templates render their content as plain text.

use gguf::Metadata;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::{Tokenizer, TokenizerError};

/// GGUF key of the Jinja chat template.
const KEY_TEMPLATE: &str = "tokenizer.chat_template";
/// The name the template is registered under (shown in error locations).
const NAME: &str = "chat_template";

/// The work one render may do, in minijinja fuel (about one unit per instruction or per 64
/// bytes of data): a template from a model file is untrusted code, and without a budget a loop
/// or a doubling string in it hangs or exhausts the server on every request. Real chat templates
/// use a few thousand units per conversation; this allows about 4 million instructions or
/// 256 MB, well under a second.
pub const TEMPLATE_FUEL: u64 = 4_000_000;

/// ChatML, for vocabularies with `<|im_start|>` / `<|im_end|>` but no template.
const CHATML: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// Plain text for base models: `System: …\nUser: …\nAssistant: `.
const PLAIN: &str = "{%- for message in messages %}\
{{- (message.role | capitalize) + ': ' + message.content + '\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- 'Assistant: ' }}{%- endif %}";

/// One chat message: `role` is `system`, `user`, `assistant` (or what the template accepts).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// Who speaks: `system`, `user`, `assistant`, `tool`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The special token variables a template is rendered with, when the model has the token.
pub const SPECIAL_TOKEN_NAMES: &[&str] = &["bos_token", "eos_token", "unk_token", "pad_token"];

/// Where the chat template in use comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// The model's own template: the GGUF `tokenizer.chat_template`, or the checkpoint's given to
    /// [`ChatTemplate::from_source`].
    Gguf,
    /// No template in the file; the vocabulary has `<|im_start|>`/`<|im_end|>`, so ChatML.
    ChatmlFallback,
    /// No template and no ChatML tokens (a base model): `System: …\nUser: …\nAssistant: `.
    PlainFallback,
}

impl std::fmt::Display for TemplateSource {
    /// `gguf`, `chatml fallback`, `plain fallback`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemplateSource::Gguf => "gguf",
            TemplateSource::ChatmlFallback => "chatml fallback",
            TemplateSource::PlainFallback => "plain fallback",
        })
    }
}

/// A compiled chat template with the special token texts it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    text: String,
    source: TemplateSource,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` that the model has.
    special_tokens: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The chat template of a GGUF file: `tokenizer.chat_template` when present; otherwise ChatML
    /// when the vocabulary has `<|im_start|>` and `<|im_end|>`, else plain text. The special token
    /// texts come from `tok` (BOS, EOS) and the unknown/padding ids of `md`.
    pub fn from_gguf(md: &Metadata, tok: &Tokenizer) -> Result<ChatTemplate, TokenizerError> {
        let (text, source) = match md.opt_str(KEY_TEMPLATE)? {
            Some(t) => (t.to_string(), TemplateSource::Gguf),
            None if tok.token_to_id("<|im_start|>").is_some()
                && tok.token_to_id("<|im_end|>").is_some() =>
            {
                (CHATML.to_string(), TemplateSource::ChatmlFallback)
            }
            None => (PLAIN.to_string(), TemplateSource::PlainFallback),
        };
        let mut special_tokens = Vec::new();
        let ids = [
            ("bos_token", tok.bos_id()),
            ("eos_token", tok.eos_id()),
            ("unk_token", md.opt_u32("tokenizer.ggml.unknown_token_id")?),
            ("pad_token", md.opt_u32("tokenizer.ggml.padding_token_id")?),
        ];
        for (name, id) in ids {
            if let Some(text) = id.and_then(|id| tok.token_text(id)) {
                special_tokens.push((name, text.to_string()));
            }
        }
        let env = environment(&text)?;
        Ok(ChatTemplate {
            env,
            text,
            source,
            special_tokens,
        })
    }

    /// A template from its Jinja source as a Hugging Face checkpoint holds it
    /// (`tokenizer_config.json` `chat_template`, or `chat_template.jinja`), rendered with the given
    /// special token texts: pairs of a name from [`SPECIAL_TOKEN_NAMES`] and the token's text
    /// (`("eos_token", "<|im_end|>")`). Its [`source`](Self::source) is
    /// [`TemplateSource::Gguf`], the model's own template. An unknown name is an error.
    pub fn from_source(
        text: &str,
        special_tokens: &[(&str, &str)],
    ) -> Result<ChatTemplate, TokenizerError> {
        let special_tokens = special_tokens
            .iter()
            .map(|(name, token)| {
                let name = SPECIAL_TOKEN_NAMES
                    .iter()
                    .find(|known| *known == name)
                    .ok_or_else(|| {
                        TokenizerError::Template(format!(
                            "unknown special token variable `{name}` (known: {})",
                            SPECIAL_TOKEN_NAMES.join(", ")
                        ))
                    })?;
                Ok((*name, token.to_string()))
            })
            .collect::<Result<Vec<_>, TokenizerError>>()?;
        Ok(ChatTemplate {
            env: environment(text)?,
            text: text.to_string(),
            source: TemplateSource::Gguf,
            special_tokens,
        })
    }

    /// Which template is in use.
    pub fn source(&self) -> TemplateSource {
        self.source
    }

    /// The Jinja source of the template in use.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the opening of an
    /// assistant turn. A template's `raise_exception(msg)` becomes
    /// [`TokenizerError::TemplateException`] with `msg`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from(Serde(messages))),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        for (name, text) in &self.special_tokens {
            ctx.push((name, Value::from(text.as_str())));
        }
        let template = self.env.get_template(NAME).map_err(template_error)?;
        template
            .render(Value::from_pairs(ctx))
            .map_err(template_error)
    }
}

/// A minijinja environment configured like Hugging Face's, holding `text` as [`NAME`].
fn environment(text: &str) -> Result<Environment<'static>, TokenizerError> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_error)?,
    );
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_template_owned(NAME, strip_generation_tags(text))
        .map_err(template_error)?;
    Ok(env)
}

/// A minijinja error as a [`TokenizerError`]: the message of `raise_exception`, or the error
/// with its location.
fn template_error(e: Error) -> TokenizerError {
    if e.kind() == ErrorKind::OutOfFuel {
        return TokenizerError::Template(format!(
            "the chat template ran past its budget of {TEMPLATE_FUEL} steps (a loop or a value too large for a chat prompt)"
        ));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(raised) = err.downcast_ref::<Raised>() {
            return TokenizerError::TemplateException(raised.0.clone());
        }
        source = err.source();
    }
    TokenizerError::Template(e.to_string())
}

/// The message of a template's `raise_exception(...)` call, carried as an error source.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// `raise_exception(msg)`: fails the render with `msg`.
fn raise_exception(msg: Value) -> Result<Value, Error> {
    let msg = match msg.as_str() {
        Some(s) => s.to_string(),
        None => msg.to_string(),
    };
    Err(Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(Raised(msg)))
}

/// `{% generation %}` / `{% endgeneration %}` (used by training templates to mark assistant
/// text) rewritten to `{% if true %}` / `{% endif %}`, keeping whitespace-control markers.
fn strip_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match generation_tag(tag) {
            Some((len, open, end, close)) => {
                let body = if end { "endif" } else { "if true" };
                out.push_str(&format!("{{%{open} {body} {close}%}}"));
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// If `s` starts with a `{% generation %}` or `{% endgeneration %}` tag: its length, its opening
/// and closing whitespace markers (`-`, `+` or empty) and whether it is the end tag.
fn generation_tag(s: &str) -> Option<(usize, &str, bool, &str)> {
    let body = s.strip_prefix("{%")?;
    let marker = |t: &str| match t.chars().next() {
        Some(c @ ('-' | '+')) => c.len_utf8(),
        _ => 0,
    };
    let open_len = marker(body);
    let open = &body[..open_len];
    let after_open = body[open_len..].trim_start();
    let (end, after_name) = if let Some(r) = after_open.strip_prefix("endgeneration") {
        (true, r)
    } else {
        (false, after_open.strip_prefix("generation")?)
    };
    if after_name.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let after_ws = after_name.trim_start();
    let close_len = marker(after_ws);
    let close = &after_ws[..close_len];
    let tail = after_ws[close_len..].strip_prefix("%}")?;
    Some((s.len() - tail.len(), open, end, close))
}

/// Hugging Face's `tojson`: `json.dumps(value, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)` with those keyword arguments honoured.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => {
                let n = v.as_i64().ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an integer or a string",
                    )
                })?;
                " ".repeat(n.max(0) as usize)
            }
        }),
    };
    let (item_sep, key_sep) = match separators.filter(|v| !v.is_none()) {
        Some(v) => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .filter(|p: &Vec<String>| p.len() == 2)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    )
                })?;
            (parts[0].clone(), parts[1].clone())
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let mut out = String::new();
    let json = Json {
        indent: indent.as_deref(),
        item_sep: &item_sep,
        key_sep: &key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    json.write(&mut out, value, 0)?;
    Ok(Value::from_safe_string(out))
}

/// Python `json.dumps` formatting options.
struct Json<'a> {
    indent: Option<&'a str>,
    item_sep: &'a str,
    key_sep: &'a str,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl Json<'_> {
    /// Appends `value` at nesting `depth`.
    fn write(&self, out: &mut String, value: &Value, depth: usize) -> Result<(), Error> {
        match value.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
            ValueKind::Number => out.push_str(&python_float(f64::try_from(value.clone())?)),
            ValueKind::String => self.string(out, value.as_str().unwrap_or_default()),
            ValueKind::Bytes => self.string(
                out,
                &String::from_utf8_lossy(value.as_bytes().unwrap_or_default()),
            ),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.container(out, '[', ']', depth, items.len(), |out, i| {
                    self.write(out, &items[i], depth + 1)
                })?;
            }
            ValueKind::Map => {
                let mut entries: Vec<(String, Value)> = value
                    .try_iter()?
                    .map(|k| Ok((json_key(&k), value.get_item(&k)?)))
                    .collect::<Result<_, Error>>()?;
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container(out, '{', '}', depth, entries.len(), |out, i| {
                    self.string(out, &entries[i].0);
                    out.push_str(self.key_sep);
                    self.write(out, &entries[i].1, depth + 1)
                })?;
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "tojson: a value of kind {} is not JSON serializable",
                        value.kind()
                    ),
                ))
            }
        }
        Ok(())
    }

    /// Writes `n` items between `open` and `close`, separated and indented like Python.
    fn container(
        &self,
        out: &mut String,
        open: char,
        close: char,
        depth: usize,
        n: usize,
        mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if n == 0 {
            out.push(close);
            return Ok(());
        }
        let newline = |out: &mut String, level: usize| {
            if let Some(ind) = self.indent {
                out.push('\n');
                for _ in 0..level {
                    out.push_str(ind);
                }
            }
        };
        for i in 0..n {
            if i > 0 {
                out.push_str(self.item_sep);
            }
            newline(out, depth + 1);
            item(out, i)?;
        }
        newline(out, depth);
        out.push(close);
        Ok(())
    }

    /// A JSON string literal: `"`, `\` and control characters escaped (plus non-ASCII as
    /// `\uXXXX` with `ensure_ascii`), as Python's encoder does.
    fn string(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if self.ensure_ascii && !c.is_ascii() => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// A map key as Python's `json.dumps` writes it (keys become strings).
fn json_key(k: &Value) -> String {
    match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
        ValueKind::None | ValueKind::Undefined => "null".to_string(),
        ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).to_string(),
        ValueKind::Number if !k.is_integer() => {
            f64::try_from(k.clone()).map_or_else(|_| k.to_string(), python_float)
        }
        _ => k.to_string(),
    }
}

/// Python's `repr(float)` as `json.dumps` writes it: shortest round-trip digits, exponent form
/// below 1e-4 and from 1e16 (`1e+16`, `1.5e-05`), `.0` on integral values, `NaN`/`Infinity`.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e3".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

/// `strftime_now(format)`: the current time formatted like Python's `strftime`. The time is UTC
/// (no time-zone database is bundled). Supports `%Y %y %m %d %e %B %b %h %A %a %H %I %M %S %p
/// %j %F %T %D %%`; other directives are copied verbatim.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&format, secs)
}

/// Formats the Unix time `secs` (UTC) with the directives of [`strftime_now`].
fn strftime(format: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (hour, minute, second) = (tod / 3600, tod % 3600 / 60, tod % 60);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let piece = match d {
            'Y' => year.to_string(),
            'y' => format!("{:02}", year.rem_euclid(100)),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => format!("{day:2}"),
            'B' => MONTHS[month as usize - 1].to_string(),
            'b' | 'h' => MONTHS[month as usize - 1][..3].to_string(),
            'A' => DAYS[weekday].to_string(),
            'a' => DAYS[weekday][..3].to_string(),
            'H' => format!("{hour:02}"),
            'I' => format!("{hour12:02}"),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'j' => format!("{yday:03}"),
            'F' => format!("{year}-{month:02}-{day:02}"),
            'T' => format!("{hour:02}:{minute:02}:{second:02}"),
            'D' => format!("{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            '%' => "%".to_string(),
            other => format!("%{other}"),
        };
        out.push_str(&piece);
    }
    out
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day count since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.0, "123456789012345.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.1 + 0.2, "0.30000000000000004"),
            (100.0, "100.0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float(x), want, "{x:e}");
        }
    }

    #[test]
    fn strftime_formats_known_instants() {
        // 2024-07-26 13:05:09 UTC, a Friday (day 208 of a leap year).
        let t = 1_721_999_109;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %e %H:%M:%S %I%p %j %y %% %F %T %D %q", t),
            "Friday July 26 13:05:09 01PM 208 24 % 2024-07-26 13:05:09 07/26/24 %q"
        );
        assert_eq!(strftime("%Y-%m-%d %a", 0), "1970-01-01 Thu");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400), "2000-02-29");
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            strip_generation_tags(
                "a{% generation %}b{%- endgeneration -%}c{% if x %}{% generations %}"
            ),
            "a{% if true %}b{%- endif -%}c{% if x %}{% generations %}"
        );
    }
}
