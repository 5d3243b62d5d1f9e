//! One module per weight format, each a scalar reference codec.
//!
//! Every module has `quantize(src) -> Vec<u8>` and `dequantize(bytes, out)` working on a whole
//! (flattened, row-major) tensor. They check nothing but their own preconditions, which they
//! document and assert: the slice lengths must fit the format. The crate-level [`crate::quantize`]
//! and [`crate::dequantize`] validate shapes and sizes first and return [`crate::QuantError`]
//! instead, so use those on data from files or users.
//!
//! Block formats are row-agnostic: a row length that is a multiple of the block size means blocks
//! never straddle rows, so encoding the flattened tensor equals encoding each row. I2_S stores one
//! scale per tensor, so it too works on the whole flattened tensor.
//!
//! The byte layouts, rounding rules and the reference each module follows are in
//! `docs/formats.md`; each module's doc comment repeats the essentials.
//!
//! (No code in this file uses the primitive type `f32` by name: the `f32` module below shadows it.)

pub mod bf16;
pub mod f16;
pub mod f32;
pub mod i2_s;
pub mod q4_0;
pub mod q4_1;
pub mod q5_0;
pub mod q5_1;
pub mod q6_k;
pub mod q8_0;
pub mod tq1_0;
pub mod tq2_0;
