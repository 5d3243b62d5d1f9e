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

/// Encodes `src` block by block with `encode` (`block` values → `block_bytes` bytes).
///
/// # Panics
/// If `src.len()` is not a multiple of `block`.
pub(crate) fn quantize_blocks(
    name: &str,
    src: &[core::primitive::f32],
    block: usize,
    block_bytes: usize,
    encode: fn(&[core::primitive::f32], &mut [u8]),
) -> Vec<u8> {
    assert_eq!(
        src.len() % block,
        0,
        "{name}: element count must be a multiple of {block}"
    );
    let mut out = vec![0u8; src.len() / block * block_bytes];
    for (x, b) in src
        .chunks_exact(block)
        .zip(out.chunks_exact_mut(block_bytes))
    {
        encode(x, b);
    }
    out
}

/// Decodes whole blocks of `bytes` into `out` with `decode`.
///
/// # Panics
/// If `out.len()` is not a multiple of `block` or `bytes` is not exactly its blocks.
pub(crate) fn dequantize_blocks(
    name: &str,
    bytes: &[u8],
    out: &mut [core::primitive::f32],
    block: usize,
    block_bytes: usize,
    decode: fn(&[u8], &mut [core::primitive::f32]),
) {
    assert_eq!(
        out.len() % block,
        0,
        "{name}: element count must be a multiple of {block}"
    );
    assert_eq!(
        bytes.len(),
        out.len() / block * block_bytes,
        "{name}: byte length does not match element count"
    );
    for (b, y) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(block))
    {
        decode(b, y);
    }
}

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
