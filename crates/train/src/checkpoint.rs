//! Crash-safe checkpoint directories: `<run>/checkpoints/step-N/`.
//!
//! A checkpoint is written so that a `kill -9` or a power cut at any instant leaves either the
//! previous checkpoints untouched or the new one complete:
//!
//! 1. every file is written into `step-N.tmp/` and fsynced;
//! 2. `manifest.json` (written last, fsynced) lists each file's size and CRC-32;
//! 3. the directory is fsynced, renamed to `step-N/`, and `checkpoints/` is fsynced;
//! 4. older checkpoints beyond the newest [`KEEP`], and any newer than `N` (left from before a
//!    resume from an earlier one), are renamed to `step-K.del/` and removed.
//!
//! [`scan`] picks the newest `step-N/` whose manifest matches its files (so one whose rename
//! happened but whose data did not reach the disk — truncated or zero-filled — is skipped, with
//! the reason), and [`clean_leftovers`] removes the `*.tmp`/`*.del` directories a kill leaves.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The directory of checkpoints inside the run directory.
pub const DIR: &str = "checkpoints";
/// The completion marker: written last, it lists every file of the checkpoint.
pub const MANIFEST: &str = "manifest.json";
/// Complete checkpoints kept: the newest and the one before it (the fallback when the newest is
/// found damaged).
pub const KEEP: usize = 2;
/// Test-only: milliseconds to sleep after each file of a checkpoint is written, so that a test
/// can `kill -9` the process while a checkpoint is half-written without relying on timing luck.
/// Nothing else reads it; it changes no result.
pub const TEST_PAUSE_ENV: &str = "DLM_TRAIN_TEST_PAUSE_IN_CHECKPOINT_MS";

const FORMAT: u32 = 1;

/// `manifest.json`: what a complete checkpoint holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The manifest format (1).
    pub format: u32,
    /// Optimizer steps completed when the checkpoint was taken.
    pub step: u64,
    /// Every other file of the directory.
    pub files: Vec<FileEntry>,
}

/// One file of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// The file name inside the checkpoint directory.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of its contents, as 8 hex digits.
    pub crc32: String,
}

/// A `step-N` directory that is not a usable checkpoint.
#[derive(Clone, Debug)]
pub struct Damaged {
    /// Its step.
    pub step: u64,
    /// The directory.
    pub dir: PathBuf,
    /// What is wrong with it (a missing manifest, a file's size or checksum…).
    pub reason: String,
}

/// What [`scan`] found in a checkpoints directory.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// The newest complete checkpoint: its step and directory.
    pub found: Option<(u64, PathBuf)>,
    /// `step-N` directories newer than `found` that failed verification, newest first.
    pub damaged: Vec<Damaged>,
}

/// The directory of the checkpoint of `step` under `root`.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step}"))
}

/// The step of a `step-N` directory name (`None` for anything else, `step-N.tmp` included).
fn parse_step(name: &str) -> Option<u64> {
    let n = name.strip_prefix("step-")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The `step-N` directories under `root`, newest first (none when `root` does not exist).
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(root, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| TrainError::io(root, e))?;
        if let Some(step) = entry.file_name().to_str().and_then(parse_step) {
            if entry.path().is_dir() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.0));
    Ok(out)
}

/// Removes what interrupted writes and prunes leave under `root` (`step-N.tmp`, `step-N.del`),
/// returning the removed paths.
pub fn clean_leftovers(root: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(root, e)),
    };
    let mut removed = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| TrainError::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") && (name.ends_with(".tmp") || name.ends_with(".del")) {
            let p = entry.path();
            remove_any(&p)?;
            removed.push(p);
        }
    }
    removed.sort();
    Ok(removed)
}

fn remove_any(p: &Path) -> Result<()> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TrainError::io(p, e)),
    }
}

/// Removes the checkpoint directory `dir` without ever leaving a partly deleted `step-N`: it is
/// renamed to `step-N.del` first.
pub fn remove(dir: &Path) -> Result<()> {
    let del = crate::export::sibling(dir, "del");
    remove_any(&del)?;
    std::fs::rename(dir, &del).map_err(|e| TrainError::io(dir, e))?;
    remove_any(&del)
}

/// Size and CRC-32 of a file, read in 1 MiB chunks.
fn measure(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h.finalize()))
}

/// Flushes a file's data and metadata to the disk.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

/// Flushes a directory's entries (names created or renamed in it) to the disk. Only Unix can
/// open a directory for this; elsewhere it does nothing.
pub fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| TrainError::io(path, e))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

fn test_pause() {
    if let Some(ms) = std::env::var(TEST_PAUSE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// A file of a checkpoint and the function that writes it to the path it is given.
pub type FileWriter<'a> = (&'a str, &'a dyn Fn(&Path) -> Result<()>);

/// Writes the checkpoint of `step` under `root` as the module docs describe (temporary
/// directory, fsync, manifest, rename, fsync of `root`), replacing a `step-N` already there,
/// then removes all checkpoints but this one and the newest [`KEEP`]` − 1` before it. Returns
/// the checkpoint's directory.
pub fn write(root: &Path, step: u64, files: &[FileWriter]) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| TrainError::io(root, e))?;
    let dir = step_dir(root, step);
    let tmp = crate::export::sibling(&dir, "tmp");
    remove_any(&tmp)?;
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let mut entries = Vec::with_capacity(files.len());
    for (name, write) in files {
        let p = tmp.join(name);
        write(&p)?;
        sync_file(&p)?;
        let (bytes, crc) = measure(&p).map_err(|e| TrainError::io(&p, e))?;
        entries.push(FileEntry {
            name: name.to_string(),
            bytes,
            crc32: format!("{crc:08x}"),
        });
        test_pause();
    }
    let manifest = Manifest {
        format: FORMAT,
        step,
        files: entries,
    };
    let mp = tmp.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| TrainError::json(&mp, e.to_string()))?;
    std::fs::write(&mp, text + "\n").map_err(|e| TrainError::io(&mp, e))?;
    sync_file(&mp)?;
    sync_dir(&tmp)?;
    if dir.exists() {
        remove(&dir)?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| TrainError::io(&dir, e))?;
    sync_dir(root)?;
    // Older checkpoints beyond the newest KEEP go, and so does any newer one: after a resume
    // from an earlier checkpoint those are damaged or belong to the steps being redone.
    let mut kept = 1;
    for (s, old) in list(root)? {
        if s == step {
            continue;
        }
        if s < step && kept < KEEP {
            kept += 1;
            continue;
        }
        remove(&old)?;
    }
    sync_dir(root)?;
    Ok(dir)
}

/// Checks a checkpoint directory against its manifest: every listed file exists with the listed
/// size and CRC-32. The error says what is wrong.
pub fn verify(dir: &Path) -> std::result::Result<Manifest, String> {
    let mp = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&mp) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("no {MANIFEST}: its writing was interrupted"))
        }
        Err(e) => return Err(format!("{MANIFEST}: {e}")),
    };
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{MANIFEST} is unreadable: {e}"))?;
    if m.format != FORMAT {
        return Err(format!("{MANIFEST} has format {}, not {FORMAT}", m.format));
    }
    if m.files.is_empty() {
        return Err(format!("{MANIFEST} lists no file"));
    }
    for f in &m.files {
        let p = dir.join(&f.name);
        let (bytes, crc) = measure(&p).map_err(|e| format!("{}: {e}", f.name))?;
        if bytes != f.bytes {
            return Err(format!(
                "{} has {bytes} bytes, the manifest says {}",
                f.name, f.bytes
            ));
        }
        if format!("{crc:08x}") != f.crc32 {
            return Err(format!(
                "{} has CRC-32 {crc:08x}, the manifest says {}",
                f.name, f.crc32
            ));
        }
    }
    Ok(m)
}

/// The newest complete checkpoint under `root` and the damaged ones newer than it.
pub fn scan(root: &Path) -> Result<Scan> {
    let mut out = Scan::default();
    for (step, dir) in list(root)? {
        match verify(&dir) {
            Ok(m) if m.step == step => {
                out.found = Some((step, dir));
                break;
            }
            Ok(m) => out.damaged.push(Damaged {
                step,
                dir,
                reason: format!("its manifest is for step {}", m.step),
            }),
            Err(reason) => out.damaged.push(Damaged { step, dir, reason }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, step: u64, payload: &[u8]) -> PathBuf {
        let a = |p: &Path| std::fs::write(p, payload).map_err(|e| TrainError::io(p, e));
        let b = |p: &Path| std::fs::write(p, b"{}").map_err(|e| TrainError::io(p, e));
        write(root, step, &[("model.bin", &a), ("state.json", &b)]).unwrap()
    }

    #[test]
    fn the_newest_complete_checkpoint_is_found_and_old_ones_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(DIR);
        assert!(scan(&root).unwrap().found.is_none(), "no directory yet");
        for s in [3, 6, 9] {
            put(&root, s, &[s as u8; 1000]);
        }
        let steps: Vec<u64> = list(&root).unwrap().iter().map(|x| x.0).collect();
        assert_eq!(steps, vec![9, 6], "only the newest {KEEP} are kept");
        let sc = scan(&root).unwrap();
        assert_eq!(sc.found.unwrap().0, 9);
        assert!(sc.damaged.is_empty());
        // Rewriting an existing step replaces it.
        put(&root, 9, &[7; 10]);
        assert_eq!(
            std::fs::read(step_dir(&root, 9).join("model.bin")).unwrap(),
            vec![7; 10]
        );
        // After a resume from step 6, writing step 8 removes the newer step-9 (its steps are
        // being redone) and keeps step-6.
        put(&root, 8, &[8; 10]);
        let steps: Vec<u64> = list(&root).unwrap().iter().map(|x| x.0).collect();
        assert_eq!(steps, vec![8, 6]);
    }

    #[test]
    fn a_half_written_checkpoint_is_detected_and_the_previous_one_used() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(DIR);
        put(&root, 4, &[1; 5000]);
        let newest = put(&root, 8, &[2; 5000]);

        // Renamed into place, but the data did not reach the disk: truncated.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(newest.join("model.bin"))
            .unwrap();
        f.set_len(1234).unwrap();
        drop(f);
        let sc = scan(&root).unwrap();
        assert_eq!(sc.found.as_ref().unwrap().0, 4);
        assert_eq!(sc.damaged.len(), 1);
        assert_eq!(sc.damaged[0].step, 8);
        assert!(
            sc.damaged[0].reason.contains("1234 bytes"),
            "{}",
            sc.damaged[0].reason
        );

        // Same size, zero-filled (what some file systems show after a crash): the CRC catches it.
        std::fs::write(newest.join("model.bin"), [0u8; 5000]).unwrap();
        let sc = scan(&root).unwrap();
        assert_eq!(sc.found.unwrap().0, 4);
        assert!(sc.damaged[0].reason.contains("CRC-32"), "{:?}", sc.damaged);

        // No manifest: the write stopped before the completion marker.
        std::fs::remove_file(newest.join(MANIFEST)).unwrap();
        let sc = scan(&root).unwrap();
        assert_eq!(sc.found.unwrap().0, 4);
        assert!(sc.damaged[0].reason.contains("no manifest.json"));

        // A leftover temporary directory is not a checkpoint, and is cleaned up.
        let left = root.join("step-12.tmp");
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("model.bin"), [3; 10]).unwrap();
        std::fs::create_dir_all(root.join("step-2.del")).unwrap();
        assert_eq!(scan(&root).unwrap().found.unwrap().0, 4);
        let removed = clean_leftovers(&root).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!left.exists());
        let names: Vec<u64> = list(&root).unwrap().iter().map(|x| x.0).collect();
        assert_eq!(names, vec![8, 4]);
    }

    #[test]
    fn step_names_are_parsed_strictly() {
        assert_eq!(parse_step("step-12"), Some(12));
        assert_eq!(parse_step("step-12.tmp"), None);
        assert_eq!(parse_step("step-"), None);
        assert_eq!(parse_step("step--1"), None);
        assert_eq!(parse_step("checkpoint"), None);
    }
}
