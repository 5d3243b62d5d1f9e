//! `data.path` → the data files to read, in order, with `data.split` applied.
//!
//! `data.path` is one file (`.jsonl`/`.json`, `.txt` or `.parquet`) or a directory of shards:
//! every `.parquet` and `.jsonl` file under it, at any depth (hidden files and folders such as
//! `.cache/` or `.git/` left out), read in the order of their paths relative to it, so
//! `data/train-00000-of-00002.parquet` comes before `data/train-00001-of-00002.parquet`.
//!
//! Splits follow the Hub's naming (the `datasets` library's and the dataset viewer's): a file
//! belongs to split `S` when a part of its relative path, cut at `/`, `-` and `.`, is exactly
//! `S`: `train.parquet`, `data/train-00000-of-00002.parquet`, `default/train/0000.parquet`,
//! `train/part-0.jsonl`, `squad-validation.parquet`. (`train_sft-00000-of-00003.parquet` is split
//! `train_sft`, not `train`.) With `data.split` set only that split's files are read, and a split
//! no file names is an error listing the ones that are there. With it unset every file is read,
//! unless the files name two or more of the standard splits (`train`, `validation`, `test`, …):
//! then the choice is asked for, so test data is never trained on by accident.

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// How a data file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line.
    Jsonl,
    /// Plain text documents (`data.text_split`).
    Text,
    /// An Apache Parquet file, streamed row group by row group.
    Parquet,
}

/// One file to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFile {
    /// Where it is.
    pub path: PathBuf,
    /// How it is read.
    pub format: Format,
}

/// The split names the `datasets` library recognises in file names without a configuration.
pub const STANDARD_SPLITS: &[&str] = &[
    "train",
    "training",
    "validation",
    "valid",
    "val",
    "dev",
    "test",
    "testing",
    "eval",
    "evaluation",
];

/// Directories deeper than this under `data.path` are not searched (a guard against symlink
/// loops).
const MAX_DEPTH: usize = 16;

/// The files `data.path` = `path` stands for, in reading order, restricted to `split`.
pub fn data_files(path: &Path, split: Option<&str>) -> Result<Vec<DataFile>> {
    let meta = std::fs::metadata(path).map_err(|e| TrainError::io(path, e))?;
    if !meta.is_dir() {
        let format = format_of(path).ok_or_else(|| {
            TrainError::Data(format!(
                "{}: data must be .jsonl (chat or text lines), .parquet, .txt, or a directory of \
                 .parquet/.jsonl shards",
                path.display()
            ))
        })?;
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        if let Some(s) = split {
            if !in_split(&name, s) {
                return Err(TrainError::Data(format!(
                    "{}: data.split is `{s}` but the file does not belong to it (its name \
                     names no such split); unset data.split or point data.path at the dataset \
                     directory",
                    path.display()
                )));
            }
        }
        return Ok(vec![DataFile {
            path: path.to_path_buf(),
            format,
        }]);
    }

    let mut found: Vec<PathBuf> = Vec::new();
    walk(path, Path::new(""), 0, &mut found)?;
    found.sort();
    if found.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: the directory holds no .parquet or .jsonl file",
            path.display()
        )));
    }
    let chosen: Vec<PathBuf> = match split {
        Some(s) => {
            let chosen: Vec<PathBuf> = found.iter().filter(|f| in_split(f, s)).cloned().collect();
            if chosen.is_empty() {
                return Err(TrainError::Data(format!(
                    "{}: no data file belongs to split `{s}` (data.split); splits the file \
                     names suggest: {}",
                    path.display(),
                    suggested_splits(&found).join(", ")
                )));
            }
            chosen
        }
        None => {
            let named: Vec<&str> = STANDARD_SPLITS
                .iter()
                .copied()
                .filter(|s| found.iter().any(|f| in_split(f, s)))
                .collect();
            if named.len() >= 2 {
                return Err(TrainError::Data(format!(
                    "{}: the files name the splits {}; choose one with data.split=NAME",
                    path.display(),
                    named.join(", ")
                )));
            }
            found
        }
    };
    Ok(chosen
        .into_iter()
        .map(|rel| {
            let format = format_of(&rel).unwrap_or(Format::Jsonl);
            DataFile {
                path: path.join(rel),
                format,
            }
        })
        .collect())
}

/// The format a file name says, if it is a data file.
fn format_of(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "json" => Some(Format::Jsonl),
        "txt" => Some(Format::Text),
        "parquet" => Some(Format::Parquet),
        _ => None,
    }
}

/// Collects the `.parquet` and `.jsonl` files under `root/rel` (paths relative to `root`),
/// following symlinks (a Hub cache snapshot is made of them) and skipping hidden entries.
fn walk(root: &Path, rel: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    if depth > MAX_DEPTH {
        return Err(TrainError::Data(format!(
            "{}: more than {MAX_DEPTH} directory levels under data.path (a symlink loop?)",
            dir.display()
        )));
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(&dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let child = rel.join(&name);
        let meta = std::fs::metadata(entry.path()).map_err(|e| TrainError::io(&entry.path(), e))?;
        if meta.is_dir() {
            walk(root, &child, depth + 1, out)?;
        } else if matches!(
            child.extension().and_then(|e| e.to_str()),
            Some(e) if e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("jsonl")
        ) {
            out.push(child);
        }
    }
    Ok(())
}

/// The words of a relative path: its components cut at `-` and `.`.
fn words(rel: &Path) -> impl Iterator<Item = String> + '_ {
    rel.components().flat_map(|c| {
        c.as_os_str()
            .to_string_lossy()
            .split(['-', '.'])
            .map(str::to_string)
            .collect::<Vec<_>>()
    })
}

/// Whether the file at relative path `rel` belongs to split `split` (see the module docs).
pub fn in_split(rel: &Path, split: &str) -> bool {
    words(rel).any(|w| w == split)
}

/// For an error message: the split each file seems to be of (the first word of its name, or its
/// folder's name when the name is a number), without repeats.
fn suggested_splits(files: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in files {
        let stem = f.file_stem().map(|s| s.to_string_lossy().to_string());
        let first = stem
            .as_deref()
            .and_then(|s| s.split(['-', '.']).next())
            .unwrap_or("")
            .to_string();
        let guess = if first.is_empty() || first.chars().all(|c| c.is_ascii_digit()) {
            f.parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or(first)
        } else {
            first
        };
        if !guess.is_empty() && !out.contains(&guess) {
            out.push(guess);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_membership_follows_the_hub_names() {
        let yes = [
            ("train.parquet", "train"),
            ("data/train-00000-of-00002.parquet", "train"),
            ("default/train/0000.parquet", "train"),
            ("train/part-0.jsonl", "train"),
            ("plain_text/squad-validation.parquet", "validation"),
            ("data/train_sft-00000-of-00003.parquet", "train_sft"),
        ];
        for (rel, split) in yes {
            assert!(in_split(Path::new(rel), split), "{rel} ∈ {split}");
        }
        let no = [
            ("data/train_sft-00000-of-00003.parquet", "train"),
            ("data/test-00000-of-00001.parquet", "train"),
            ("trainer/0000.parquet", "train"),
        ];
        for (rel, split) in no {
            assert!(!in_split(Path::new(rel), split), "{rel} ∉ {split}");
        }
        let files: Vec<PathBuf> = ["data/code-00000-of-00002.parquet", "math/0000.parquet"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(suggested_splits(&files), ["code", "math"]);
    }
}
