//! The engine a GGUF is written for (`dlm convert --target`): the architecture name and keys it
//! expects, the combinations it cannot run, and the ones it runs but computes wrongly.
//!
//! Only BitNet b1.58 differs between the targets. Upstream llama.cpp names the architecture
//! `bitnet` (`src/llama-arch.cpp`) and has the TQ1_0/TQ2_0 types but no I2_S; bitnet.cpp's fork of
//! llama.cpp names it `bitnet-b1.58` (`LLM_ARCH_BITNET_B158` in its `src/llama.cpp`) and adds I2_S.
//! Both use the same tensor names. What each engine was checked against, and how, is in
//! docs/convert.md ("Other engines").

use crate::arch::{ArchInfo, Family};
use crate::error::{ConvertError, Result};
use crate::plan::{HeadTypes, OutType};

/// The metadata key recording the FFN activation, `<arch>.hidden_activation` (gguf-py's
/// `Keys.LLM.HIDDEN_ACT`, llama.cpp's `LLM_KV_HIDDEN_ACT`). Neither engine's BitNet graph reads it
/// today (see docs/convert.md); dlm does.
pub const HIDDEN_ACTIVATION: &str = "hidden_activation";

/// The inference engine a file is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Upstream llama.cpp (ggml-org): TQ1_0/TQ2_0, BitNet as `bitnet`.
    LlamaCpp,
    /// Microsoft's bitnet.cpp (its llama.cpp fork): I2_S, BitNet b1.58 as `bitnet-b1.58`.
    BitnetCpp,
}

impl Target {
    /// Every target, in `--help` order.
    pub const ALL: [Target; 2] = [Target::LlamaCpp, Target::BitnetCpp];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Target::LlamaCpp => "llama.cpp",
            Target::BitnetCpp => "bitnet.cpp",
        }
    }

    /// Parses a command-line name (case-insensitive; `llamacpp`/`bitnetcpp` also accepted).
    pub fn parse(s: &str) -> std::result::Result<Target, String> {
        let norm = s.to_ascii_lowercase().replace(['.', '_', '-'], "");
        match norm.as_str() {
            "llamacpp" => Ok(Target::LlamaCpp),
            "bitnetcpp" => Ok(Target::BitnetCpp),
            _ => Err(format!(
                "unknown target `{s}`; choose llama.cpp or bitnet.cpp"
            )),
        }
    }

    /// The target used when none is given: the engine that owns the output type. I2_S exists
    /// only in bitnet.cpp and TQ1_0/TQ2_0 are llama.cpp's types; the float and Q8_0 types run in
    /// both, and go to bitnet.cpp, the engine that computes BitNet b1.58 correctly (squared ReLU).
    pub fn default_for(outtype: OutType) -> Target {
        match outtype {
            OutType::TQ1_0 | OutType::TQ2_0 => Target::LlamaCpp,
            _ => Target::BitnetCpp,
        }
    }

    /// The `general.architecture` written for `family`.
    pub fn gguf_arch(self, family: Family) -> &'static str {
        match (family, self) {
            (Family::BitNet158, Target::BitnetCpp) => "bitnet-b1.58",
            (Family::BitNet158, Target::LlamaCpp) => "bitnet",
            (family, _) => family.gguf_arch(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The FFN activation a family computes, as recorded under [`HIDDEN_ACTIVATION`]; `None` for
/// the families whose architecture name already fixes it (llama, qwen2, qwen3: SiLU).
pub fn hidden_activation(family: Family) -> Option<&'static str> {
    match family {
        Family::BitNet158 => Some("relu2"),
        Family::BitNetLlama => Some("silu"),
        _ => None,
    }
}

/// Refuses a combination the target engine cannot load and that has a way out (another type or
/// target), naming the engine and the way out.
pub fn check(
    target: Target,
    info: &ArchInfo,
    outtype: OutType,
    head_types: HeadTypes,
) -> Result<()> {
    let refuse = |problem: String| Err(ConvertError::Target { target, problem });
    if target == Target::LlamaCpp && outtype == OutType::I2_S {
        return refuse(
            "llama.cpp has no I2_S type (it is bitnet.cpp's); use --outtype tq2_0 or tq1_0 for \
             llama.cpp, or --target bitnet.cpp"
                .into(),
        );
    }
    if info.family == Family::BitNet158 {
        let separate_head = !info.tied || head_types.output.is_some();
        if target == Target::LlamaCpp && separate_head {
            return refuse(
                "its `bitnet` architecture has no separate LM head (output.weight): it runs only \
                 models with tied embeddings (and no --output-type); use --target bitnet.cpp"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Warnings for a file the target is known to compute wrongly, or not to load although dlm runs
/// it (so the conversion still happens).
pub fn warnings(target: Target, info: &ArchInfo) -> Vec<String> {
    let mut out = Vec::new();
    let qd = info.heads * info.head_dim;
    if info.family == Family::BitNet158 && qd != info.hidden {
        out.push(format!(
            "{target} will not load this file: its BitNet b1.58 graph sizes the attention by the \
             width, and here heads × head_dim = {} × {} ≠ hidden size {} (dlm runs it)",
            info.heads, info.head_dim, info.hidden
        ));
    }
    out.extend(llama_cpp_activation(target, info.family));
    out
}

/// Upstream llama.cpp's `bitnet` graph computes SiLU, not BitNet b1.58's squared ReLU.
fn llama_cpp_activation(target: Target, family: Family) -> Vec<String> {
    match (target, family) {
        (Target::LlamaCpp, Family::BitNet158) => vec![
            "llama.cpp (upstream, checked at 0c1e57098) builds the `bitnet` FFN with SiLU \
             (src/models/bitnet.cpp: LLM_FFN_SILU) instead of this model's squared ReLU and does \
             not read bitnet.hidden_activation, so it loads this file but computes the model \
             wrongly; `--outtype i2_s` (bitnet.cpp, which uses squared ReLU for `bitnet-b1.58`) \
             or dlm itself run it correctly"
                .to_string(),
        ],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_defaults_follow_the_type() {
        for t in Target::ALL {
            assert_eq!(Target::parse(t.name()), Ok(t));
        }
        assert_eq!(Target::parse("LLAMA_CPP"), Ok(Target::LlamaCpp));
        assert!(Target::parse("vllm")
            .unwrap_err()
            .contains("llama.cpp or bitnet.cpp"));
        assert_eq!(Target::default_for(OutType::TQ2_0), Target::LlamaCpp);
        assert_eq!(Target::default_for(OutType::TQ1_0), Target::LlamaCpp);
        assert_eq!(Target::default_for(OutType::I2_S), Target::BitnetCpp);
        assert_eq!(Target::default_for(OutType::F16), Target::BitnetCpp);
        assert_eq!(Target::LlamaCpp.gguf_arch(Family::BitNet158), "bitnet");
        assert_eq!(
            Target::BitnetCpp.gguf_arch(Family::BitNet158),
            "bitnet-b1.58"
        );
        assert_eq!(Target::LlamaCpp.gguf_arch(Family::Qwen3), "qwen3");
        assert_eq!(Target::BitnetCpp.gguf_arch(Family::BitNetLlama), "bitnet");
    }

    fn bitnet(head_dim: u64, tied: bool) -> ArchInfo {
        ArchInfo {
            family: Family::BitNet158,
            hf_class: "BitNetForCausalLM".into(),
            vocab_size: 384,
            hidden: 256,
            ffn: 512,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim,
            tied,
            bd_size: None,
            quantization_bitnet: false,
        }
    }

    #[test]
    fn engines_limits_are_refusals_or_warnings() {
        let ok = bitnet(64, true);
        assert!(check(Target::LlamaCpp, &ok, OutType::TQ2_0, HeadTypes::default()).is_ok());
        let err = check(Target::LlamaCpp, &ok, OutType::I2_S, HeadTypes::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no I2_S"), "{err}");
        let untied = bitnet(64, false);
        assert!(check(
            Target::LlamaCpp,
            &untied,
            OutType::TQ2_0,
            HeadTypes::default()
        )
        .is_err());
        assert!(check(
            Target::BitnetCpp,
            &untied,
            OutType::TQ2_0,
            HeadTypes::default()
        )
        .is_ok());
        // Only the SiLU warning for llama.cpp, nothing for bitnet.cpp.
        assert_eq!(warnings(Target::LlamaCpp, &ok).len(), 1);
        assert!(warnings(Target::LlamaCpp, &ok)[0].contains("SiLU"));
        assert!(warnings(Target::BitnetCpp, &ok).is_empty());
        // A head width other than the model width: converted (dlm runs it), with a warning.
        let narrow = bitnet(32, true);
        assert!(check(
            Target::BitnetCpp,
            &narrow,
            OutType::I2_S,
            HeadTypes::default()
        )
        .is_ok());
        let w = warnings(Target::BitnetCpp, &narrow);
        assert!(
            w.len() == 1 && w[0].contains("4 × 32 ≠ hidden size 256"),
            "{w:?}"
        );
    }
}
