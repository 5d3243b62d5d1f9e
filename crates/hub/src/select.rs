//! Which files a command needs from a repository, fetched, and the local path the loader gets.

use std::path::PathBuf;

use crate::client::{names_under, Snapshot};
use crate::{HubError, Need, Result};

/// Tokenizer and config files fetched with a checkpoint when the repository has them.
const CHECKPOINT_EXTRAS: &[&str] = &[
    "generation_config.json",
    "dlm_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
];

/// Extensions of the training data files in a folder, as the trainer reads a folder (a `.json`
/// or `.txt` file is taken only when named: repositories hold JSON metadata and READMEs).
const DATA_EXTENSIONS: &[&str] = &[".jsonl", ".parquet"];

/// Fetches what `need` needs from `snap` and returns the local path for the loader.
pub(crate) fn select(spec: &crate::HubSource, need: Need, snap: &Snapshot) -> Result<PathBuf> {
    match need {
        Need::Checkpoint => checkpoint(snap, &spec.path),
        Need::Gguf => gguf(snap, &spec.path, spec.quant.as_deref()),
        Need::Dataset => dataset(snap, &spec.path, &|_| true),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Up to 20 file names, for messages.
fn listing(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let mut s = names
        .iter()
        .take(20)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 20 {
        s.push_str(&format!(" … ({} in all)", names.len()));
    }
    s
}

fn where_(snap: &Snapshot) -> &'static str {
    if snap.offline() {
        " in the cache"
    } else {
        ""
    }
}

/// `name` must exist: fetched, or an error that lists the folder (offline: fetch names the file
/// missing from the cache).
fn required(snap: &Snapshot, name: &str, folder: &str, why: &str) -> Result<PathBuf> {
    if snap.entry(name).is_some() || snap.offline() {
        return snap.fetch(name);
    }
    let names: Vec<&str> = names_under(&snap.files, folder).into_keys().collect();
    Err(HubError::NotFound(format!(
        "{}: no `{name}` ({why}); files there: {}",
        snap.source().display(),
        listing(&names)
    )))
}

fn checkpoint(snap: &Snapshot, prefix: &str) -> Result<PathBuf> {
    let why = "a Hugging Face checkpoint has config.json and safetensors weights";
    required(snap, &join(prefix, "config.json"), prefix, why)?;
    // The named extras, and SentencePiece / tiktoken models under any name (`tok512.model`).
    let in_folder = |n: &str| {
        n.strip_prefix(&join(prefix, ""))
            .is_some_and(|r| !r.contains('/'))
    };
    let extras: Vec<String> = snap
        .files
        .iter()
        .map(|e| e.name.clone())
        .filter(|n| {
            let base = n.rsplit('/').next().unwrap_or(n);
            in_folder(n)
                && (CHECKPOINT_EXTRAS.contains(&base)
                    || base.ends_with(".model")
                    || base.ends_with(".tiktoken"))
        })
        .collect();
    for name in extras {
        snap.fetch(&name)?;
    }
    let index = join(prefix, "model.safetensors.index.json");
    if snap.entry(&index).is_some() {
        let path = snap.fetch(&index)?;
        for shard in shards(&path)? {
            required(snap, &join(prefix, &shard), prefix, "listed in the index")?;
        }
    } else {
        required(snap, &join(prefix, "model.safetensors"), prefix, why)?;
    }
    Ok(snap.local_dir(prefix))
}

/// The distinct shard files of a `model.safetensors.index.json`, in order.
fn shards(index: &std::path::Path) -> Result<Vec<String>> {
    let bad = |why: String| HubError::NotFound(format!("{}: {why}", index.display()));
    let text = std::fs::read_to_string(index).map_err(|source| HubError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut out: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| !f.contains("..") && !f.starts_with('/') && !f.is_empty())
            .ok_or_else(|| bad(format!("weight_map[{tensor:?}] is not a shard file name")))?;
        if !out.iter().any(|f| f == file) {
            out.push(file.to_string());
        }
    }
    if out.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    Ok(out)
}

fn is_gguf(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gguf")
}

fn gguf(snap: &Snapshot, path: &str, quant: Option<&str>) -> Result<PathBuf> {
    if is_gguf(path) {
        return required(snap, path, parent(path), "the GGUF file named");
    }
    let all: Vec<&str> = names_under(&snap.files, path)
        .into_keys()
        .filter(|n| is_gguf(n))
        .collect();
    let src = snap.source().display();
    let chosen: Vec<&str> = match quant {
        None => all.clone(),
        Some(q) => {
            // llama.cpp's `-hf org/repo:QUANT`: the file whose name carries the quantization,
            // case-insensitively; a name ending in it (Q4_K, not Q4_K_M) wins a tie.
            let q = q.to_ascii_uppercase();
            let stem = |n: &str| {
                let base = n.rsplit('/').next().unwrap_or(n).to_ascii_uppercase();
                base[..base.len() - ".GGUF".len()].to_string()
            };
            let hits: Vec<&str> = all
                .iter()
                .copied()
                .filter(|n| stem(n).contains(&q))
                .collect();
            let exact: Vec<&str> = hits
                .iter()
                .copied()
                .filter(|n| stem(n).ends_with(&q))
                .collect();
            if exact.len() == 1 {
                exact
            } else {
                hits
            }
        }
    };
    match chosen.as_slice() {
        [one] => snap.fetch(one),
        [] if quant.is_some() => Err(HubError::NotFound(format!(
            "{src}: no GGUF file{} matches `:{}`; GGUF files: {}",
            where_(snap),
            quant.unwrap_or_default(),
            listing(&all)
        ))),
        [] => {
            let names: Vec<&str> = names_under(&snap.files, path).into_keys().collect();
            Err(HubError::NotFound(format!(
                "{src}: no .gguf file{}; files: {}",
                where_(snap),
                listing(&names)
            )))
        }
        many => Err(HubError::NotFound(format!(
            "{src}: {} GGUF files{} fit; name one (hf://{}/FILE.gguf) or add the quantization \
             (hf://{}:I2_S): {}",
            many.len(),
            where_(snap),
            snap.source().repo,
            snap.source().repo,
            listing(many)
        ))),
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// The data file `path` names, or the data files under the folder `path` that `keep` accepts
/// (given their path relative to the folder).
pub(crate) fn dataset(snap: &Snapshot, path: &str, keep: &dyn Fn(&str) -> bool) -> Result<PathBuf> {
    // A file named exactly.
    if !path.is_empty() && snap.entry(path).is_some() {
        return snap.fetch(path);
    }
    let rel = |n: &'_ str| -> String {
        if path.is_empty() {
            n.to_string()
        } else {
            n[path.len() + 1..].to_string()
        }
    };
    let is_data = |n: &str| {
        let lower = n.to_ascii_lowercase();
        DATA_EXTENSIONS.iter().any(|e| lower.ends_with(e))
            && !rel(n).split('/').any(|c| c.starts_with('.'))
    };
    let names: Vec<&str> = names_under(&snap.files, path).into_keys().collect();
    let all: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != path && is_data(n))
        .collect();
    let data: Vec<&str> = all.iter().copied().filter(|n| keep(&rel(n))).collect();
    let at = if path.is_empty() { "/" } else { path };
    match data.as_slice() {
        [] if all.is_empty() => Err(HubError::NotFound(format!(
            "{}: no data files (.jsonl, .parquet){} under `{at}`; files: {}",
            snap.source().display(),
            where_(snap),
            listing(&names)
        ))),
        [] => Err(HubError::NotFound(format!(
            "{}: no data file{} under `{at}` belongs to the split asked for; data files: {}",
            snap.source().display(),
            where_(snap),
            listing(&all)
        ))),
        [one] => snap.fetch(one),
        many => {
            for name in many {
                snap.fetch(name)?;
            }
            Ok(snap.local_dir(path))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::client::under;

    #[test]
    fn folder_membership() {
        assert!(under("a/b.gguf", "a") && under("a", "a") && under("x", ""));
        assert!(!under("ab/c", "a") && !under("b/a", "a"));
    }
}
