//! The model's tensors, located in the memory-mapped GGUF. Matrices stay where they are; only the
//! small vectors (norms, biases) are decoded to f32 at load.

use gguf::{GgmlType, GgufFile, TensorInfo};
use quant::kernels::QMatrix;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// A weight matrix: where it lives in the file and its shape (`rows` outputs × `cols` inputs).
#[derive(Clone, Debug)]
pub struct Linear {
    /// The tensor's directory entry.
    pub info: TensorInfo,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
}

impl Linear {
    /// Borrows the matrix for the kernels.
    pub fn matrix<'a>(&self, file: &'a GgufFile) -> QMatrix<'a> {
        QMatrix {
            ty: self.info.ggml_type,
            data: file.tensor_data(&self.info),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// One decoder layer's tensors.
#[derive(Clone, Debug)]
pub struct Layer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) wq: Linear,
    pub(crate) wk: Linear,
    pub(crate) wv: Linear,
    pub(crate) wo: Linear,
    pub(crate) bq: Option<Vec<f32>>,
    pub(crate) bk: Option<Vec<f32>>,
    pub(crate) bv: Option<Vec<f32>>,
    pub(crate) q_norm: Option<Vec<f32>>,
    pub(crate) k_norm: Option<Vec<f32>>,
    pub(crate) attn_sub_norm: Option<Vec<f32>>,
    pub(crate) ffn_norm: Vec<f32>,
    pub(crate) w_gate: Linear,
    pub(crate) w_up: Linear,
    pub(crate) w_down: Linear,
    pub(crate) ffn_sub_norm: Option<Vec<f32>>,
}

/// All tensors of the model.
#[derive(Clone, Debug)]
pub struct Weights {
    pub(crate) token_embd: Linear,
    pub(crate) layers: Vec<Layer>,
    pub(crate) output_norm: Vec<f32>,
    /// The LM head: `output.weight`, or the embedding when tied.
    pub(crate) output: Linear,
}

fn tensor_err(name: &str, problem: impl Into<String>) -> ModelError {
    ModelError::Tensor {
        name: name.to_string(),
        problem: problem.into(),
    }
}

struct Loader<'a> {
    file: &'a GgufFile,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| tensor_err(name, "missing from the GGUF"))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        if t.n_elements() != len as u64 {
            return Err(tensor_err(
                name,
                format!("has {} elements, expected {len}", t.n_elements()),
            ));
        }
        let v = quant::dequantize(
            t.ggml_type,
            self.file.tensor_data(t),
            t.dims[0] as usize,
            len,
        )?;
        // Norm weights and biases are small and scale every activation: a NaN or an infinity
        // would make every later value NaN, so they are checked whole at load.
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(tensor_err(
                name,
                format!(
                    "element {i} is {}; norm weights and biases must be finite",
                    v[i]
                ),
            ));
        }
        Ok(v)
    }

    fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        if self.file.tensor(name).is_none() {
            return Ok(None);
        }
        self.vector(name, len).map(Some)
    }

    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let info = self.info(name)?.clone();
        if info.dims.len() != 2 || info.dims[0] != cols as u64 || info.dims[1] != rows as u64 {
            return Err(tensor_err(
                name,
                format!("has shape {:?}, expected [{cols}, {rows}]", info.dims),
            ));
        }
        QMatrix::new(info.ggml_type, self.file.tensor_data(&info), rows, cols)
            .map_err(|e| tensor_err(name, e.to_string()))?;
        Ok(Linear { info, rows, cols })
    }
}

impl Weights {
    /// Locates and checks every tensor the config needs.
    pub fn load(file: &GgufFile, cfg: &ModelConfig) -> Result<Weights> {
        let l = Loader { file };
        let (h, f, hd) = (cfg.hidden, cfg.ffn, cfg.head_dim);
        let (qd, kvd) = (cfg.n_heads * hd, cfg.kv_dim());
        let token_embd = l.linear("token_embd.weight", cfg.vocab, h)?;
        if token_embd.info.ggml_type.is_per_tensor_packed() {
            return Err(tensor_err("token_embd.weight", format!("{} embeddings are not supported (bitnet.cpp measured them as a model failure); convert with F16 embeddings", token_embd.info.ggml_type)));
        }
        // Each layer needs its own tensors: no more layers than tensors are reserved, whatever
        // block_count says (a missing layer is an error below).
        let mut layers = Vec::with_capacity(cfg.n_layers.min(file.tensors.len()));
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: l.vector(&n("attn_norm.weight"), h)?,
                wq: l.linear(&n("attn_q.weight"), qd, h)?,
                wk: l.linear(&n("attn_k.weight"), kvd, h)?,
                wv: l.linear(&n("attn_v.weight"), kvd, h)?,
                wo: l.linear(&n("attn_output.weight"), h, qd)?,
                bq: l.opt_vector(&n("attn_q.bias"), qd)?,
                bk: l.opt_vector(&n("attn_k.bias"), kvd)?,
                bv: l.opt_vector(&n("attn_v.bias"), kvd)?,
                q_norm: if cfg.qk_norm {
                    Some(l.vector(&n("attn_q_norm.weight"), hd)?)
                } else {
                    None
                },
                k_norm: if cfg.qk_norm {
                    Some(l.vector(&n("attn_k_norm.weight"), hd)?)
                } else {
                    None
                },
                attn_sub_norm: if cfg.sub_norm {
                    Some(l.vector(&n("attn_sub_norm.weight"), qd)?)
                } else {
                    None
                },
                ffn_norm: l.vector(&n("ffn_norm.weight"), h)?,
                w_gate: l.linear(&n("ffn_gate.weight"), f, h)?,
                w_up: l.linear(&n("ffn_up.weight"), f, h)?,
                w_down: l.linear(&n("ffn_down.weight"), h, f)?,
                ffn_sub_norm: if cfg.sub_norm {
                    Some(l.vector(&n("ffn_sub_norm.weight"), f)?)
                } else {
                    None
                },
            });
        }
        let output = match file.tensor("output.weight") {
            Some(_) => l.linear("output.weight", cfg.vocab, h)?,
            None => token_embd.clone(),
        };
        if output.info.ggml_type == GgmlType::I2_S {
            return Err(tensor_err(
                &output.info.name,
                "an I2_S LM head is not supported",
            ));
        }
        Ok(Weights {
            token_embd,
            layers,
            output_norm: l.vector("output_norm.weight", h)?,
            output,
        })
    }
}
