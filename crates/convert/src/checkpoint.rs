//! Reading a Hugging Face checkpoint directory: JSON side files and (sharded) safetensors weights.
//!
//! Weights are memory-mapped; a tensor is decoded to `f32` only when the converter asks for it, so
//! converting a model needs one tensor's worth of memory at a time, not the whole checkpoint.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value as Json;

use crate::error::{ConvertError, Result};

/// Reads a JSON file, or `None` when it does not exist.
pub fn read_json_opt(path: &Path) -> Result<Option<Json>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ConvertError::Json {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConvertError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A JSON object (such as `config.json`) with typed getters whose errors name the file and key.
#[derive(Clone, Debug)]
pub struct JsonConfig {
    file: String,
    value: Json,
}

impl JsonConfig {
    /// Wraps a parsed JSON document; `file` is used in error messages.
    pub fn new(file: &str, value: Json) -> Result<Self> {
        if !value.is_object() {
            return Err(ConvertError::config(
                file,
                "expected a JSON object at the top level",
            ));
        }
        Ok(JsonConfig {
            file: file.to_string(),
            value,
        })
    }

    /// The raw value of `key`, if present and not `null`.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &str) -> ConvertError {
        let found = match self.get(key) {
            Some(Json::Bool(_)) => "a boolean",
            Some(Json::Number(_)) => "a number",
            Some(Json::String(_)) => "a string",
            Some(Json::Array(_)) => "an array",
            Some(Json::Object(_)) => "an object",
            _ => "null",
        };
        ConvertError::config(
            &self.file,
            format!("`{key}` is {found}, expected {expected}"),
        )
    }

    /// A required non-negative integer.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?
            .ok_or_else(|| ConvertError::config(&self.file, format!("missing `{key}`")))
    }

    /// An optional non-negative integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer")),
        }
    }

    /// An optional number.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number")),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "true or false")),
        }
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string")),
        }
    }

    /// An optional token id that may be given as one integer or a list of integers (the first
    /// is taken as the id; all are returned).
    pub fn opt_ids(&self, key: &str) -> Result<Vec<u64>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .ok_or_else(|| self.wrong(key, "a list of token ids"))
                })
                .collect(),
            Some(v) => v
                .as_u64()
                .map(|id| vec![id])
                .ok_or_else(|| self.wrong(key, "a token id")),
        }
    }
}

/// Element type of a stored safetensors tensor that the converter can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
    /// Raw bytes (packed ternary weights of offline BitNet checkpoints).
    U8,
}

/// Where one tensor lives inside the memory-mapped shards.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    /// Name in the checkpoint (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Element type.
    pub dtype: StoredDtype,
    /// Shape in PyTorch order (outermost first).
    pub shape: Vec<usize>,
    shard: usize,
    start: usize,
    end: usize,
}

impl StoredTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// All safetensors shards of a checkpoint, memory-mapped, with a name → location index.
pub struct Weights {
    shards: Vec<(PathBuf, Mmap)>,
    tensors: BTreeMap<String, StoredTensor>,
}

impl Weights {
    /// Opens `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Weights> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if let Some(index) = read_json_opt(&index_path)? {
            let map = index
                .get("weight_map")
                .and_then(Json::as_object)
                .ok_or_else(|| {
                    ConvertError::config(
                        "model.safetensors.index.json",
                        "missing object `weight_map`",
                    )
                })?;
            let mut names: Vec<&str> = Vec::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    ConvertError::config(
                        "model.safetensors.index.json",
                        format!("`weight_map.{tensor}` is not a file name"),
                    )
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(ConvertError::config(
                        "model.safetensors.index.json",
                        format!("shard name `{file}` must be a plain file name in the checkpoint directory"),
                    ));
                }
                if !names.contains(&file) {
                    names.push(file);
                }
            }
            names.iter().map(|f| dir.join(f)).collect()
        } else if dir.join("model.safetensors").exists() {
            vec![dir.join("model.safetensors")]
        } else {
            return Err(ConvertError::MissingFile {
                dir: dir.to_path_buf(),
                what: "model.safetensors (or model.safetensors.index.json with shards)".into(),
            });
        };

        let mut shards = Vec::new();
        let mut tensors = BTreeMap::new();
        for (shard, path) in files.into_iter().enumerate() {
            let file = File::open(&path).map_err(|source| ConvertError::Io {
                path: path.clone(),
                source,
            })?;
            // SAFETY: the file is opened read-only; like every mmap-based loader we assume it is
            // not truncated by another process while we read it.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ConvertError::Io {
                path: path.clone(),
                source,
            })?;
            let bad = |problem: String| ConvertError::Safetensors {
                path: path.clone(),
                problem,
            };
            let (header_len, meta) =
                safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| bad(e.to_string()))?;
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                let dtype = match info.dtype {
                    safetensors::Dtype::F32 => StoredDtype::F32,
                    safetensors::Dtype::F16 => StoredDtype::F16,
                    safetensors::Dtype::BF16 => StoredDtype::BF16,
                    safetensors::Dtype::U8 => StoredDtype::U8,
                    other => return Err(bad(format!("tensor `{name}` has dtype {other:?}; only F32, F16, BF16 (and U8 packed ternary) are supported"))),
                };
                let (start, end) = info.data_offsets;
                let (start, end) = (base + start, base + end);
                if end > mmap.len() || start > end {
                    return Err(bad(format!("tensor `{name}` data lies outside the file")));
                }
                if tensors.contains_key(&name) {
                    return Err(bad(format!(
                        "tensor `{name}` appears in more than one shard"
                    )));
                }
                let stored = StoredTensor {
                    name: name.clone(),
                    dtype,
                    shape: info.shape.clone(),
                    shard,
                    start,
                    end,
                };
                tensors.insert(name, stored);
            }
            shards.push((path, mmap));
        }
        Ok(Weights { shards, tensors })
    }

    /// Every tensor, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = &StoredTensor> {
        self.tensors.values()
    }

    /// One tensor by checkpoint name.
    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.get(name)
    }

    /// The raw stored bytes of a tensor.
    pub fn bytes(&self, t: &StoredTensor) -> &[u8] {
        &self.shards[t.shard].1[t.start..t.end]
    }

    /// Decodes a floating-point tensor to `f32`.
    pub fn to_f32(&self, t: &StoredTensor) -> Result<Vec<f32>> {
        let bytes = self.bytes(t);
        let elem = match t.dtype {
            StoredDtype::F32 => 4,
            StoredDtype::F16 | StoredDtype::BF16 => 2,
            StoredDtype::U8 => {
                return Err(ConvertError::tensor(
                    &t.name,
                    "is a packed U8 tensor, not a float tensor",
                ))
            }
        };
        if bytes.len() != t.n_elements() * elem {
            return Err(ConvertError::tensor(
                &t.name,
                format!(
                    "holds {} bytes but shape {:?} needs {}",
                    bytes.len(),
                    t.shape,
                    t.n_elements() * elem
                ),
            ));
        }
        Ok(match t.dtype {
            StoredDtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StoredDtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            StoredDtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            StoredDtype::U8 => unreachable!("rejected above"),
        })
    }
}
