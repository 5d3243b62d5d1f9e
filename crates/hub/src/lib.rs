//! `hf://` sources: one way to name a Hugging Face Hub repository (or a file or folder in it)
//! wherever a `dlm` command takes a path, resolved to local files before the loaders run.
//!
//! ```text
//! hf://org/repo[@revision][/path/in/repo][:QUANT]     a model repository
//! hf://datasets/org/name[@revision][/path/in/repo]    a dataset repository
//! ```
//!
//! [`resolve`] fetches only what the command needs ([`Need`]): a checkpoint's `config.json`,
//! tokenizer files, generation/DLM configs and the safetensors shards that
//! `model.safetensors.index.json` lists (or the single `model.safetensors`); one GGUF file; a
//! dataset's data files. Downloads go through the `hf-hub` crate into the cache that Python's
//! `huggingface_hub` uses (`models--org--repo/{blobs,snapshots/<commit>,refs}`), so either tool
//! reuses what the other downloaded; [`HubConfig::from_env`] reads the same environment
//! variables. Where hf-hub 0.4 falls short, this crate fills the gap (see [`client`]).
//! Anything that is not `hf://…` is a local path and passes through untouched.

pub mod client;
mod select;

use std::path::{Path, PathBuf};

pub use client::HubConfig;

/// The URL scheme of a Hub source.
pub const SCHEME: &str = "hf://";

/// What a command needs from a source, which decides the files fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A Hugging Face checkpoint directory (config, tokenizer, safetensors).
    Checkpoint,
    /// One GGUF file.
    Gguf,
    /// Training data: one data file, or a folder of them (jsonl, parquet).
    Dataset,
}

/// Model or dataset repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    /// `hf://org/repo`.
    Model,
    /// `hf://datasets/org/name`.
    Dataset,
}

/// A parsed `hf://` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSource {
    /// Model or dataset.
    pub kind: RepoKind,
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit (`main` when not given).
    pub revision: String,
    /// A file or folder inside the repository (`""`: the root).
    pub path: String,
    /// The `:QUANT` suffix that picks one GGUF file (models only).
    pub quant: Option<String>,
}

/// Everything that can go wrong resolving a source; each message names the source and the fix.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The `hf://` string is malformed.
    #[error("{0}")]
    Spec(String),
    /// The Hub refused the request for lack of (valid) credentials.
    #[error("{0}")]
    Auth(String),
    /// The repository, revision or a file is not there (on the Hub or, offline, in the cache).
    #[error("{0}")]
    NotFound(String),
    /// The Hub could not be reached or answered unexpectedly.
    #[error("{0}")]
    Http(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, HubError>;

/// True when `s` names a Hub source (`hf://…`).
pub fn is_hub(s: &Path) -> bool {
    s.to_str().is_some_and(|s| s.starts_with(SCHEME))
}

/// Resolves `source` to a local path for `need`: a local path is returned as is; an `hf://`
/// source is fetched (or, with `HF_HUB_OFFLINE=1`, found in the cache) with the configuration of
/// [`HubConfig::from_env`].
pub fn resolve(source: &Path, need: Need) -> Result<PathBuf> {
    resolve_quiet(source, need, false)
}

/// [`resolve`], without progress bars when `quiet` (a command's `-q`).
pub fn resolve_quiet(source: &Path, need: Need, quiet: bool) -> Result<PathBuf> {
    if !is_hub(source) {
        return Ok(source.to_path_buf());
    }
    let spec = HubSource::parse(source.to_str().unwrap_or_default())?;
    let mut config = HubConfig::from_env();
    config.progress &= !quiet;
    resolve_with(&spec, need, &config)
}

/// [`resolve_quiet`] for a dataset, fetching only the data files `keep` accepts (it gets each
/// file's path relative to the folder the source names, e.g. `data/train-00000-of-00002.parquet`):
/// the caller's split rule, so that `data.split=train` does not download the test shards.
pub fn resolve_dataset(source: &Path, quiet: bool, keep: &dyn Fn(&str) -> bool) -> Result<PathBuf> {
    if !is_hub(source) {
        return Ok(source.to_path_buf());
    }
    let spec = HubSource::parse(source.to_str().unwrap_or_default())?;
    let mut config = HubConfig::from_env();
    config.progress &= !quiet;
    let snapshot = client::Snapshot::open(&spec, &config)?;
    select::dataset(&snapshot, &spec.path, keep)
}

/// [`resolve`] with an explicit configuration.
pub fn resolve_with(spec: &HubSource, need: Need, config: &HubConfig) -> Result<PathBuf> {
    let snapshot = client::Snapshot::open(spec, config)?;
    select::select(spec, need, &snapshot)
}

impl HubSource {
    /// Parses `hf://[datasets/]org/name[@revision][/path][:QUANT]`.
    pub fn parse(s: &str) -> Result<HubSource> {
        let bad = |why: &str| {
            HubError::Spec(format!(
                "`{s}`: {why}; expected hf://org/repo[@revision][/path][:QUANT] or \
                 hf://datasets/org/name[@revision][/path]"
            ))
        };
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("not an hf:// source"))?;
        let (kind, rest) = match rest.strip_prefix("datasets/") {
            Some(r) => (RepoKind::Dataset, r),
            None if rest.starts_with("spaces/") => return Err(bad("Spaces are not supported")),
            None => (
                RepoKind::Model,
                rest.strip_prefix("models/").unwrap_or(rest),
            ),
        };
        // The `:QUANT` suffix belongs to the last segment (repository names cannot hold `:`).
        let (rest, quant) = match rest.rsplit_once(':') {
            Some((head, q)) if !q.contains('/') => (head, Some(q)),
            _ => (rest, None),
        };
        if let Some(q) = quant {
            if kind == RepoKind::Dataset {
                return Err(bad(
                    "a :QUANT suffix picks a GGUF file of a model repository",
                ));
            }
            if q.is_empty() || !q.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad(&format!(
                    "`{q}` is not a quantization name such as I2_S"
                )));
            }
        }
        let mut segments = rest.split('/');
        let org = segments.next().unwrap_or_default();
        let name_rev = segments.next().ok_or_else(|| bad("no repository name"))?;
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) if !r.is_empty() => (n, r),
            Some(_) => return Err(bad("empty revision after @")),
            None => (name_rev, "main"),
        };
        let valid = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(org) || !valid(name) {
            return Err(bad(&format!("`{org}/{name}` is not a repository id")));
        }
        let path: Vec<&str> = segments.filter(|p| !p.is_empty()).collect();
        if path.iter().any(|p| *p == "." || *p == "..") {
            return Err(bad("`.` and `..` are not allowed in the path"));
        }
        Ok(HubSource {
            kind,
            repo: format!("{org}/{name}"),
            revision: revision.to_string(),
            path: path.join("/"),
            quant: quant.map(str::to_string),
        })
    }

    /// The source written back as `hf://…` (for messages).
    pub fn display(&self) -> String {
        let prefix = match self.kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        };
        let rev = if self.revision == "main" {
            String::new()
        } else {
            format!("@{}", self.revision)
        };
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("/{}", self.path)
        };
        let quant = self
            .quant
            .as_ref()
            .map(|q| format!(":{q}"))
            .unwrap_or_default();
        format!("{SCHEME}{prefix}{}{rev}{path}{quant}", self.repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let p = HubSource::parse("hf://org/repo").unwrap();
        assert_eq!(
            p,
            HubSource {
                kind: RepoKind::Model,
                repo: "org/repo".into(),
                revision: "main".into(),
                path: String::new(),
                quant: None
            }
        );
        let p = HubSource::parse("hf://org/repo@v1.0/sub/dir/model-I2_S.gguf").unwrap();
        assert_eq!(
            (p.revision.as_str(), p.path.as_str(), p.quant),
            ("v1.0", "sub/dir/model-I2_S.gguf", None)
        );
        let p = HubSource::parse("hf://org/tiny-gguf:I2_S").unwrap();
        assert_eq!(
            (p.repo.as_str(), p.quant.as_deref()),
            ("org/tiny-gguf", Some("I2_S"))
        );
        let p = HubSource::parse("hf://org/r@abc123:q4_k_m").unwrap();
        assert_eq!(
            (p.revision.as_str(), p.quant.as_deref()),
            ("abc123", Some("q4_k_m"))
        );
        let p = HubSource::parse("hf://datasets/org/chat@refs-x/data/train").unwrap();
        assert_eq!(p.kind, RepoKind::Dataset);
        assert_eq!(
            (p.repo.as_str(), p.path.as_str()),
            ("org/chat", "data/train")
        );
        assert_eq!(p.display(), "hf://datasets/org/chat@refs-x/data/train");
        assert_eq!(
            HubSource::parse("hf://models/org/r:I2_S")
                .unwrap()
                .display(),
            "hf://org/r:I2_S"
        );
    }

    #[test]
    fn refuses_malformed_sources() {
        for (s, why) in [
            ("hf://org", "no repository name"),
            ("hf://org/", "is not a repository id"),
            ("hf://o rg/x", "is not a repository id"),
            ("hf://org/r@", "empty revision"),
            ("hf://org/r/../x", "`.` and `..`"),
            ("hf://datasets/org/d:I2_S", "picks a GGUF file"),
            ("hf://org/r:I2-S", "is not a quantization name"),
            ("hf://spaces/org/s", "Spaces"),
        ] {
            let e = HubSource::parse(s).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(s), "{s}: {e}");
        }
    }

    #[test]
    fn local_paths_pass_through() {
        let p = Path::new("/some/dir/model.gguf");
        assert_eq!(resolve(p, Need::Gguf).unwrap(), p);
        assert!(!is_hub(Path::new("hf:/x/y")) && is_hub(Path::new("hf://x/y")));
    }
}
