//! Mutation test: thousands of deterministic corruptions of real files (the third-party fixture
//! and a file from our writer) — bit flips, truncations, deleted and inserted bytes, and length,
//! count and type fields overwritten with hostile values. Every one must parse to `Ok` or `Err`:
//! a panic fails the test with the mutation's id, and so does a parse that allocates more than
//! a small multiple of the input's size (measured by a counting allocator).
//!
//! Reproduce one mutation: `MUTATION=<target>:<id> cargo test -p gguf --test mutations`.
//! `MUTATION_VERBOSE=1` prints each id before parsing (to find one that aborts the process).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::*;
use gguf::{GgufError, GgufFile};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---- allocation accounting (per thread, so parallel tests do not disturb each other) ----

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get() + size;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn on_dealloc(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

// ---- the structure of a valid file: where its length, count and type fields are ----

#[derive(Clone, Copy, Debug)]
enum Field {
    U64(usize),
    U32(usize),
}

/// Walks a valid GGUF (independently of the crate's reader) and lists its integer fields.
/// Returns the fields and the end of the tensor directory.
fn fields(b: &[u8]) -> (Vec<Field>, usize) {
    let r64 = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
    let r32 = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    fn value(b: &[u8], mut p: usize, t: u32, out: &mut Vec<Field>) -> usize {
        let r64 = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
        match t {
            0 | 1 | 7 => p + 1,
            2 | 3 => p + 2,
            4..=6 => p + 4,
            10..=12 => p + 8,
            8 => {
                out.push(Field::U64(p));
                p + 8 + r64(p)
            }
            9 => {
                let et = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
                out.push(Field::U32(p));
                out.push(Field::U64(p + 4));
                let n = r64(p + 4);
                p += 12;
                for _ in 0..n {
                    p = value(b, p, et, out);
                }
                p
            }
            _ => panic!("not a valid file"),
        }
    }
    let mut out = vec![Field::U32(4), Field::U64(8), Field::U64(16)];
    let (n_tensors, n_kv) = (r64(8), r64(16));
    let mut p = 24;
    for _ in 0..n_kv {
        out.push(Field::U64(p));
        p += 8 + r64(p);
        out.push(Field::U32(p));
        let t = r32(p);
        p = value(b, p + 4, t, &mut out);
    }
    for _ in 0..n_tensors {
        out.push(Field::U64(p));
        p += 8 + r64(p);
        out.push(Field::U32(p));
        let n_dims = r32(p) as usize;
        p += 4;
        for _ in 0..n_dims {
            out.push(Field::U64(p));
            p += 8;
        }
        out.push(Field::U32(p));
        out.push(Field::U64(p + 4));
        p += 12;
    }
    (out, p)
}

// ---- mutations ----

struct Target {
    name: &'static str,
    bytes: Vec<u8>,
    fields: Vec<Field>,
    header_end: usize,
}

impl Target {
    fn new(name: &'static str, bytes: Vec<u8>) -> Target {
        let (fields, header_end) = fields(&bytes);
        Target {
            name,
            bytes,
            fields,
            header_end,
        }
    }

    /// Mutation `id`: deterministic from the id alone.
    fn mutate(&self, id: u64) -> (Vec<u8>, String) {
        let mut rng =
            ChaCha8Rng::seed_from_u64(0x6767_7566 ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut b = self.bytes.clone();
        let len = b.len();
        let kind = rng.random_range(0..100u32);
        let desc = if kind < 30 {
            // Bit flips, mostly in the header (where the structure is).
            let n = rng.random_range(1..=8);
            let end = if rng.random_bool(0.9) {
                self.header_end
            } else {
                len
            };
            let mut at = Vec::new();
            for _ in 0..n {
                let pos = rng.random_range(0..end);
                b[pos] ^= 1 << rng.random_range(0..8);
                at.push(pos);
            }
            format!("bit flips at {at:?}")
        } else if kind < 42 {
            let end = if rng.random_bool(0.8) {
                self.header_end + 64
            } else {
                len
            };
            let cut = rng.random_range(0..end.min(len));
            b.truncate(cut);
            format!("truncated to {cut}")
        } else if kind < 72 {
            let Field::U64(pos) = self.pick(&mut rng, true) else {
                unreachable!()
            };
            let old = u64::from_le_bytes(b[pos..pos + 8].try_into().unwrap());
            let v = match rng.random_range(0..12) {
                0 => u64::MAX,
                1 => u64::MAX - rng.random_range(0..64),
                2 => 1 << 63,
                3 => 1 << 32,
                4 => (1 << 32) - 1,
                5 => len as u64,
                6 => (len - pos) as u64,
                7 => old.wrapping_add(1),
                8 => old.wrapping_sub(1),
                9 => old.wrapping_mul(2),
                10 => 0,
                _ => rng.random(),
            };
            b[pos..pos + 8].copy_from_slice(&v.to_le_bytes());
            format!("u64 at {pos}: {old} -> {v}")
        } else if kind < 87 {
            let Field::U32(pos) = self.pick(&mut rng, false) else {
                unreachable!()
            };
            let old = u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap());
            let v = match rng.random_range(0..8) {
                0 => u32::MAX,
                1 => rng.random_range(0..16),
                2 => 9,
                3 => rng.random_range(36..42),
                4 => 5,
                5 => old ^ 1,
                6 => 0x0300_0000,
                _ => rng.random(),
            };
            b[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
            format!("u32 at {pos}: {old} -> {v}")
        } else if kind < 94 {
            let start = rng.random_range(0..self.header_end);
            let n = rng.random_range(1..=16).min(len - start);
            b.drain(start..start + n);
            format!("deleted {n} bytes at {start}")
        } else {
            let start = rng.random_range(0..self.header_end);
            let n = rng.random_range(1..=16);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            b.splice(start..start, junk);
            format!("inserted {n} bytes at {start}")
        };
        (b, desc)
    }

    /// A random field of the wanted width.
    fn pick(&self, rng: &mut ChaCha8Rng, u64_field: bool) -> Field {
        loop {
            let f = self.fields[rng.random_range(0..self.fields.len())];
            if matches!(f, Field::U64(_)) == u64_field {
                return f;
            }
        }
    }
}

/// Parses every mutation of `target`; panics listing the failures.
fn run(target: &Target, count: u64) {
    let only: Option<u64> = std::env::var("MUTATION").ok().and_then(|m| {
        m.strip_prefix(&format!("{}:", target.name))
            .map(|id| id.parse().expect("MUTATION=<target>:<id>"))
    });
    let verbose = std::env::var_os("MUTATION_VERBOSE").is_some();
    let mut failures = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for id in 0..count {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let (bytes, desc) = target.mutate(id);
        if verbose || only.is_some() {
            eprintln!("{}:{id}: {desc}", target.name);
        }
        let input_len = bytes.len();
        let (result, peak) = peak_during(|| catch_unwind(AssertUnwindSafe(|| check(bytes))));
        // The input Vec itself is not counted (allocated before); allow a generous multiple.
        let limit = 48 * input_len + (1 << 20);
        match result {
            Err(_) => failures.push(format!("{}:{id} ({desc}): panicked", target.name)),
            Ok(outcome) => *outcomes.entry(outcome).or_default() += 1,
        }
        if peak > limit {
            failures.push(format!(
                "{}:{id} ({desc}): allocated {peak} bytes for a {input_len}-byte input",
                target.name
            ));
        }
    }
    eprintln!("{}: {count} mutations: {outcomes:?}", target.name);
    assert!(
        failures.is_empty(),
        "{} failures, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    if only.is_none() {
        // The mutations reach both outcomes and many different errors.
        assert!(outcomes.get("Ok").copied().unwrap_or(0) > 0, "{outcomes:?}");
        assert!(
            outcomes.len() >= 8,
            "too few distinct outcomes: {outcomes:?}"
        );
    }
}

/// Parses, checks the invariants of an accepted file, and names the outcome.
fn check(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => {
            assert_eq!(f.data_offset() % f.alignment, 0);
            for t in &f.tensors {
                assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes, "{}", t.name);
                assert_eq!(t.offset % f.alignment, 0);
                assert!(t.dims.len() <= 4);
            }
            "Ok".into()
        }
        Err(e) => {
            // Every message renders.
            assert!(!e.to_string().is_empty());
            variant(&e).into()
        }
    }
}

fn variant(e: &GgufError) -> &'static str {
    use GgufError::*;
    match e {
        Io { .. } | Write(_) => "Io",
        BadMagic { .. } => "BadMagic",
        BigEndian { .. } => "BigEndian",
        UnsupportedVersion(_) => "UnsupportedVersion",
        Truncated { .. } => "Truncated",
        TooLarge { .. } => "TooLarge",
        MissingKey(_) | WrongType { .. } | OutOfRange { .. } => "Type",
        UnknownValueType { .. } => "UnknownValueType",
        InvalidBool { .. } => "InvalidBool",
        UnknownTensorType { .. } => "UnknownTensorType",
        Tl2NotSupported { .. } => "Tl2NotSupported",
        InvalidUtf8 { .. } => "InvalidUtf8",
        DimsOverflow { .. } => "DimsOverflow",
        TooManyDims { .. } => "TooManyDims",
        BadRowLength { .. } => "BadRowLength",
        TensorOutOfBounds { .. } => "TensorOutOfBounds",
        MisalignedOffset { .. } => "MisalignedOffset",
        DuplicateKey(_) | DuplicateTensor(_) => "Duplicate",
        BadAlignment { .. } => "BadAlignment",
        NestedArray { .. } => "NestedArray",
        _ => "other",
    }
}

#[test]
fn mutations_of_a_file_from_our_writer() {
    let mut w = sample_writer();
    w.set_alignment(64).unwrap();
    run(&Target::new("ours", write_to_vec(&w)), 5000);
}

#[test]
fn mutations_of_the_third_party_fixture() {
    let Some(bytes) = fixture_bytes() else { return };
    run(&Target::new("fixture", bytes), 2500);
}
