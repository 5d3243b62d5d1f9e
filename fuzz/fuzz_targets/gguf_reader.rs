//! Fuzzes `GgufFile::from_bytes`: any input must give `Ok` or `Err`, never a panic, an abort or
//! a huge allocation (libFuzzer's -rss_limit_mb / -malloc_limit_mb catch those). An accepted
//! file must also hold its invariants, and — when our writer accepts its contents — survive a
//! write → read → write cycle byte for byte.
#![no_main]

use gguf::{GgufFile, GgufWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else { return };
    assert_eq!(f.data_offset() % f.alignment, 0);
    for t in &f.tensors {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(t.offset % f.alignment, 0);
    }
    // The typed accessors never panic, whatever the value.
    let md = &f.metadata;
    for (k, v) in md.iter() {
        let _ = (v.to_string(), md.get_u32(k), md.get_i64(k), md.get_f32(k), md.get_str(k));
        let _ = (md.get_str_array(k), md.get_u32_array(k), md.get_i32_array(k), md.get_f32_array(k));
    }
    let _ = f.architecture();

    if let Some(first) = rewrite(&f) {
        let again = GgufFile::from_bytes(first.clone()).expect("our own output must parse");
        let second = rewrite(&again).expect("our own output must be writable");
        assert!(first == second, "write → read → write is not stable");
    }
});

/// The file rewritten by our writer with zeroed tensor data, or `None` where the writer refuses
/// something the reader accepts (long names, alignment under 8, scalars, ...).
fn rewrite(f: &GgufFile) -> Option<Vec<u8>> {
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata.iter() {
        w.add(k, v.clone()).ok()?;
    }
    for t in &f.tensors {
        w.add_tensor(&t.name, &t.dims, t.ggml_type).ok()?;
    }
    let mut out = Vec::new();
    w.write(&mut out, |_, t, o| o.write_all(&vec![0u8; t.n_bytes as usize])).ok()?;
    Some(out)
}
