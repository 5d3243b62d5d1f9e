//! Which GGUF type each tensor gets, which transforms it needs, and the per-tensor encoding.
//!
//! Rules (following llama.cpp's converter and bitnet.cpp's, see docs/formats.md):
//! - 1-D tensors (norms, biases) are always F32.
//! - `token_embd` and an untied `output`: F32 for `f32`, BF16 for `bf16`, Q8_0 for `q8_0`, else F16
//!   (ternary embeddings break BitNet models, per bitnet.cpp's measurements), unless
//!   [`HeadTypes`] names their types (llama.cpp's `--token-embedding-type` and
//!   `--output-tensor-type`). An output type for a model with tied embeddings writes the LM head
//!   as its own `output.weight` in that type (the embedding keeps its own type): the head is
//!   read whole for every token, the embedding one row per token, so a smaller head type is
//!   where the bytes are.
//! - Projections take the output type. A row length the type cannot encode falls back to F16,
//!   and the fallback is reported.
//! - BitNet projections are ternarized with the absmean rule for every output type (the model
//!   computes with ternary weights, so the GGUF must hold them), unless already ternary.

use gguf::GgmlType;

use crate::arch::{permute_rope_rows, ArchInfo};
use crate::checkpoint::{StoredDtype, StoredTensor, Weights};
use crate::error::{ConvertError, Result};

/// The `--outtype` choices (named like the ggml types).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 8-bit blocks of 32.
    Q8_0,
    /// Ternary, 1.69 bits per weight.
    TQ1_0,
    /// Ternary, 2.06 bits per weight.
    TQ2_0,
    /// bitnet.cpp's ternary layout, 2 bits per weight and one scale per tensor.
    I2_S,
}

impl OutType {
    /// Every choice, in `--help` order.
    pub const ALL: [OutType; 7] = [
        OutType::F32,
        OutType::F16,
        OutType::BF16,
        OutType::Q8_0,
        OutType::TQ1_0,
        OutType::TQ2_0,
        OutType::I2_S,
    ];

    /// Lower-case name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutType::F32 => "f32",
            OutType::F16 => "f16",
            OutType::BF16 => "bf16",
            OutType::Q8_0 => "q8_0",
            OutType::TQ1_0 => "tq1_0",
            OutType::TQ2_0 => "tq2_0",
            OutType::I2_S => "i2_s",
        }
    }

    /// Parses a command-line name (case-insensitive).
    pub fn parse(s: &str) -> Option<OutType> {
        OutType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// The ggml type of the weight matrices.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::BF16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
            OutType::TQ1_0 => GgmlType::TQ1_0,
            OutType::TQ2_0 => GgmlType::TQ2_0,
            OutType::I2_S => GgmlType::I2_S,
        }
    }

    /// Whether the type stores ternary weights.
    pub fn is_ternary(self) -> bool {
        matches!(self, OutType::TQ1_0 | OutType::TQ2_0 | OutType::I2_S)
    }
}

/// The types [`HeadTypes`] accepts for the embedding and the LM head. Q6_K (6.5625 bits per
/// weight, llama.cpp's default for the output tensor of its k-quant mixes) needs a hidden size
/// that is a multiple of 256.
pub const HEAD_TYPES: [GgmlType; 6] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q6_K,
    GgmlType::Q4_0,
];

/// Types for the embedding table and the LM head that override the defaults derived from the
/// output type (`None` = the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadTypes {
    /// `token_embd.weight`.
    pub token_embd: Option<GgmlType>,
    /// `output.weight` (written separately from a tied embedding when set).
    pub output: Option<GgmlType>,
}

impl HeadTypes {
    /// Parses a command-line type name for the embedding or the head (case-insensitive).
    pub fn parse_type(s: &str) -> std::result::Result<GgmlType, String> {
        HEAD_TYPES
            .into_iter()
            .find(|t| t.to_string().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<String> = HEAD_TYPES
                    .iter()
                    .map(|t| t.to_string().to_lowercase())
                    .collect();
                format!(
                    "unknown embedding/output type `{s}`; choose one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How one GGUF tensor is made from the checkpoint.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub gguf_name: String,
    /// Checkpoint name.
    pub hf_name: String,
    /// ggml dims (row length first).
    pub dims: Vec<u64>,
    /// Output type.
    pub ty: GgmlType,
    /// Heads to permute rows by (llama q/k), if any.
    pub permute_heads: Option<usize>,
    /// Ternarize with the absmean rule before encoding.
    pub ternarize: bool,
    /// Name of the `weight_scale` tensor of an offline-packed BitNet weight.
    pub packed_scale: Option<String>,
    /// Rows appended to an embedding / LM head for tokens added at conversion (the mask token),
    /// each the mean of the existing rows.
    pub extra_rows: usize,
}

/// The plan for a whole checkpoint.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Tensors in file order.
    pub tensors: Vec<TensorPlan>,
    /// Human-readable notes on tensors that fell back to another type.
    pub fallbacks: Vec<String>,
}

fn sort_key(name: &str) -> (u8, u64, String) {
    if name.starts_with("token_embd") {
        (0, 0, String::new())
    } else if let Some(rest) = name.strip_prefix("blk.") {
        let (layer, tail) = rest.split_once('.').unwrap_or((rest, ""));
        (1, layer.parse().unwrap_or(u64::MAX), tail.to_string())
    } else if name.starts_with("output_norm") {
        (2, 0, String::new())
    } else {
        (3, 0, name.to_string())
    }
}

/// Decides type and transforms for every tensor, validating names and shapes against the config.
pub fn plan(
    info: &ArchInfo,
    weights: &Weights,
    outtype: OutType,
    head_types: HeadTypes,
    force_ternary: bool,
    added_tokens: usize,
) -> Result<Plan> {
    for t in [head_types.token_embd, head_types.output]
        .into_iter()
        .flatten()
    {
        if !HEAD_TYPES.contains(&t) {
            return Err(ConvertError::config(
                "options",
                format!("{t} is not a type for the embedding or the LM head (use one of {HEAD_TYPES:?})"),
            ));
        }
    }
    let ternary_source = info.family.is_ternary() || info.quantization_bitnet;
    if outtype.is_ternary() && !ternary_source && !force_ternary {
        return Err(ConvertError::NotTernary {
            outtype: outtype.name().into(),
            arch: info.hf_class.clone(),
        });
    }
    let mut tensors = Vec::new();
    let mut fallbacks = Vec::new();
    for stored in weights.tensors() {
        if stored.name.ends_with(".weight_scale") {
            let weight = stored.name.trim_end_matches("_scale");
            if weights.get(weight).is_none() {
                return Err(ConvertError::tensor(
                    &stored.name,
                    format!("has no matching `{weight}`"),
                ));
            }
            continue;
        }
        let Some(gguf_name) = info.gguf_name(&stored.name)? else {
            continue;
        };
        let packed_scale =
            (stored.dtype == StoredDtype::U8).then(|| format!("{}_scale", stored.name));
        let mut shape = logical_shape(stored, packed_scale.as_deref(), weights)?;
        let is_embedding = gguf_name == "token_embd.weight" || gguf_name == "output.weight";
        let mut extra_rows = 0;
        if is_embedding && added_tokens > 0 && shape.len() == 2 {
            shape[0] += added_tokens;
            extra_rows = added_tokens;
        }
        if let Some(expected) = info.expected_shape(&gguf_name) {
            if shape != expected {
                return Err(ConvertError::tensor(
                    &stored.name,
                    format!("has shape {shape:?} but config.json implies {expected:?}"),
                ));
            }
        }
        let dims: Vec<u64> = shape.iter().rev().map(|d| *d as u64).collect();
        let row_len = shape.last().copied().unwrap_or(1);
        let is_projection = ArchInfo::is_projection(&gguf_name);
        let wanted = if shape.len() == 1 {
            GgmlType::F32
        } else if is_embedding {
            let chosen = if gguf_name == "token_embd.weight" {
                head_types.token_embd
            } else {
                head_types.output
            };
            chosen.unwrap_or(match outtype {
                OutType::F32 => GgmlType::F32,
                OutType::BF16 => GgmlType::BF16,
                OutType::Q8_0 => GgmlType::Q8_0,
                _ => GgmlType::F16,
            })
        } else if outtype.is_ternary() && !is_projection {
            GgmlType::F16
        } else {
            outtype.ggml_type()
        };
        let ty = match quant::check_quantizable(wanted, row_len) {
            Ok(()) => wanted,
            Err(why) => {
                fallbacks.push(format!("{gguf_name}: F16 instead of {wanted} ({why})"));
                GgmlType::F16
            }
        };
        let ternarize =
            is_projection && (ternary_source || (force_ternary && outtype.is_ternary()));
        let permute_heads = match gguf_name.rsplit('.').nth(1) {
            Some("attn_q") if info.permutes_qk() => Some(info.heads as usize),
            Some("attn_k") if info.permutes_qk() => Some(info.kv_heads as usize),
            _ => None,
        };
        tensors.push(TensorPlan {
            gguf_name,
            hf_name: stored.name.clone(),
            dims,
            ty,
            permute_heads,
            ternarize,
            packed_scale,
            extra_rows,
        });
    }
    // A tied model with its own head type: the head becomes a tensor of its own.
    if let Some(head) = head_types.output {
        let has_output = tensors.iter().any(|t| t.gguf_name == "output.weight");
        let embd = tensors.iter().find(|t| t.gguf_name == "token_embd.weight");
        if let (false, Some(embd)) = (has_output, embd) {
            if embd.ty != head {
                let row_len = embd.dims[0] as usize;
                let ty = match quant::check_quantizable(head, row_len) {
                    Ok(()) => head,
                    Err(why) => {
                        fallbacks.push(format!(
                            "output.weight: {} instead of {head} ({why})",
                            embd.ty
                        ));
                        embd.ty
                    }
                };
                if ty != embd.ty {
                    let mut out = embd.clone();
                    out.gguf_name = "output.weight".into();
                    out.ty = ty;
                    tensors.push(out);
                }
            }
        }
    }
    check_complete(info, &tensors)?;
    tensors.sort_by_key(|t| sort_key(&t.gguf_name));
    Ok(Plan { tensors, fallbacks })
}

/// The unpacked PyTorch shape of a stored tensor (packed BitNet weights hold 4 rows per byte row).
fn logical_shape(
    stored: &StoredTensor,
    packed_scale: Option<&str>,
    weights: &Weights,
) -> Result<Vec<usize>> {
    let Some(scale) = packed_scale else {
        return Ok(stored.shape.clone());
    };
    if weights.get(scale).is_none() {
        return Err(ConvertError::tensor(
            &stored.name,
            format!("is packed U8 but `{scale}` is missing"),
        ));
    }
    match stored.shape.as_slice() {
        [rows, cols] => Ok(vec![rows * 4, *cols]),
        other => Err(ConvertError::tensor(
            &stored.name,
            format!("packed U8 weight must be 2-D, got {other:?}"),
        )),
    }
}

/// Every tensor the architecture needs must be present.
fn check_complete(info: &ArchInfo, tensors: &[TensorPlan]) -> Result<()> {
    use crate::arch::Family;
    let have = |n: &str| tensors.iter().any(|t| t.gguf_name == n);
    let mut required = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".to_string(),
    ];
    if !info.tied {
        required.push("output.weight".into());
    }
    for l in 0..info.layers {
        let mut names = vec![
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ];
        match info.family {
            Family::Qwen3 => names.extend(["attn_q_norm", "attn_k_norm"]),
            Family::BitNet158 => names.extend(["attn_sub_norm", "ffn_sub_norm"]),
            _ => {}
        }
        required.extend(names.iter().map(|n| format!("blk.{l}.{n}.weight")));
    }
    for r in required {
        if !have(&r) {
            return Err(ConvertError::tensor(
                &r,
                "is required by the architecture but missing from the checkpoint",
            ));
        }
    }
    Ok(())
}

/// Produces the GGUF bytes of one planned tensor.
pub fn encode(t: &TensorPlan, weights: &Weights) -> Result<Vec<u8>> {
    let stored = weights
        .get(&t.hf_name)
        .ok_or_else(|| ConvertError::tensor(&t.hf_name, "vanished from the checkpoint"))?;
    let mut values = match &t.packed_scale {
        Some(scale_name) => {
            let scale_t = weights
                .get(scale_name)
                .ok_or_else(|| ConvertError::tensor(scale_name, "missing"))?;
            let scale = weights.to_f32(scale_t)?;
            let &[scale] = scale.as_slice() else {
                return Err(ConvertError::tensor(
                    scale_name,
                    format!("must hold one value, holds {}", scale.len()),
                ));
            };
            unpack_bitnet_u8(
                weights.bytes(stored),
                stored.shape[0],
                stored.shape[1],
                scale,
            )
        }
        None => weights.to_f32(stored)?,
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ConvertError::tensor(
            &t.hf_name,
            "contains NaN or infinite values",
        ));
    }
    let row_len = t.dims[0] as usize;
    if let Some(heads) = t.permute_heads {
        if !(values.len() / row_len).is_multiple_of(heads * 2) {
            return Err(ConvertError::tensor(
                &t.hf_name,
                format!("rows are not divisible into {heads} heads of even size"),
            ));
        }
        values = permute_rope_rows(&values, heads, row_len);
    }
    if t.extra_rows > 0 {
        let cols = t.dims[0] as usize;
        let rows = values.len() / cols;
        let mut mean = vec![0f64; cols];
        for row in values.chunks_exact(cols) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64 / rows as f64;
            }
        }
        for _ in 0..t.extra_rows {
            values.extend(mean.iter().map(|m| *m as f32));
        }
    }
    if t.ternarize && !quant::is_ternary(&values) {
        quant::ternarize_absmean(&mut values);
    }
    Ok(quant::quantize(t.ty, &values, row_len)?)
}

/// Unpacks an offline-packed BitNet weight (HF `microsoft/bitnet-b1.58-2B-4T`): the U8 tensor
/// `[R, cols]` holds original rows `r, r+R, r+2R, r+3R` in bits 1:0, 3:2, 5:4, 7:6 as code−1 ternary
/// values; the result is `[4R, cols]` ternary values times `scale`.
pub fn unpack_bitnet_u8(packed: &[u8], rows: usize, cols: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * 4 * cols];
    for r in 0..rows {
        for c in 0..cols {
            let byte = packed[r * cols + c];
            for k in 0..4 {
                let code = (byte >> (2 * k)) & 3;
                let t = if code == 3 { 0.0 } else { code as f32 - 1.0 };
                out[(r + k * rows) * cols + c] = t * scale;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_four_rows_per_byte_row() {
        // One packed row, 2 columns → 4 rows. Column 0: codes (k=0..3) = 2,1,0,1 → +1,0,-1,0;
        // column 1: codes 0,2,2,0 → -1,+1,+1,-1.
        let b0: u8 = 0b01_00_01_10;
        let b1: u8 = 0b00_10_10_00;
        let out = unpack_bitnet_u8(&[b0, b1], 1, 2, 0.5);
        assert_eq!(out, vec![0.5, -0.5, 0.0, 0.5, -0.5, 0.5, 0.0, -0.5]);
    }

    #[test]
    fn outtype_names_round_trip() {
        for t in OutType::ALL {
            assert_eq!(OutType::parse(t.name()), Some(t));
        }
        assert_eq!(OutType::parse("I2_S"), Some(OutType::I2_S));
        assert_eq!(OutType::parse("q4_k"), None);
    }
}
