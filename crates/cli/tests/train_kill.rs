//! Hard kills of `dlm train`: a run on stories260K is `kill -9`ed at three moments drawn from a
//! seeded generator — before its first checkpoint, while a checkpoint is being written, and at a
//! random point later — and re-run each time with the same command line plus `--resume`. Its
//! export must equal an uninterrupted run's byte for byte. Then its newest checkpoint is
//! truncated and `--resume` must name it and fall back to the previous one.
//!
//! The kill inside a checkpoint does not rely on timing luck: the interrupted run sets the
//! test-only `DLM_TRAIN_TEST_PAUSE_IN_CHECKPOINT_MS`, which sleeps after each file of a
//! checkpoint, and the test kills as soon as `checkpoints/step-N.tmp/model.safetensors` exists.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const TOTAL_STEPS: u64 = 24;
const EVERY: u64 = 4;
const PAUSE_ENV: &str = "DLM_TRAIN_TEST_PAUSE_IN_CHECKPOINT_MS";

/// splitmix64: the test's seeded source of kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

struct Setup {
    src: PathBuf,
    data: PathBuf,
    logs: PathBuf,
}

impl Setup {
    /// `dlm train` on `out`, its stderr into `logs/<log>.txt`.
    fn start(&self, out: &Path, resume: bool, pause_ms: Option<u64>, log: &str) -> Child {
        let arg = |k: &str, p: &Path| format!("{k}={}", p.display());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dlm"));
        cmd.args([
            "--threads",
            "2",
            "train",
            "model=stories260k",
            &arg("source.path", &self.src),
            &arg("data.path", &self.data),
            &arg("output.path", out),
            "seed=7",
            "training.seq_len=64",
            "conversion.bd_size=16",
            "training.batch_size=2",
            "training.grad_accum=2",
            "data.holdout_fraction=0",
            "training.log_every=1",
            "training.warmup_ratio=0.1",
            // TOTAL_STEPS steps of 4 windows of 64 tokens, a checkpoint every EVERY steps.
            &format!("conversion.total_tokens={}", TOTAL_STEPS * 256),
            &format!("training.checkpoint_every={EVERY}"),
        ]);
        if resume {
            cmd.arg("--resume");
        }
        cmd.env("CANDLE_NUM_THREADS", "1").env_remove(PAUSE_ENV);
        if let Some(ms) = pause_ms {
            cmd.env(PAUSE_ENV, ms.to_string());
        }
        let err = std::fs::File::create(self.logs.join(format!("{log}.txt"))).unwrap();
        cmd.stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap()
    }

    fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{log}.txt"))).unwrap()
    }
}

/// The highest step in `metrics.jsonl` (0 when none).
fn metrics_step(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m["step"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The complete (renamed into place) checkpoint steps, newest first.
fn checkpoint_steps(run: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("step-")?.parse().ok()
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|x| std::cmp::Reverse(*x));
    v
}

/// Polls until `cond` holds; fails the test if the child exits first or after two minutes.
fn wait_for(child: &mut Child, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dlm train exited ({status}) before {what}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILL (`Child::kill` is `kill -9` on Unix) and reap.
fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The step `dlm train` said it resumed at (`None`: it started from step 0).
fn resumed_at(log: &str) -> Option<u64> {
    let rest = log.split("resumed at step ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn kill_9_three_times_then_resume_ends_byte_identical() {
    let t_start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let src = common::shared_fixtures().join("stories260K");
    let sample = std::fs::read_to_string(src.join("tinystories_sample.txt")).unwrap();
    let cut = sample[..12_000].rfind("\n\n").unwrap();
    let data = tmp.path().join("stories.txt");
    std::fs::write(&data, &sample[..cut]).unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let s = Setup { src, data, logs };

    // The uninterrupted reference.
    let whole = tmp.path().join("whole");
    let t0 = Instant::now();
    let status = s.start(&whole, false, None, "whole").wait().unwrap();
    assert!(status.success(), "{}", s.log("whole"));
    let t_whole = t0.elapsed().as_secs_f64();

    // The kill moments, from a seeded generator.
    let mut rng = Rng(0x5eed_0013);
    let k1 = rng.range(1, EVERY - 2); // a step before the first checkpoint
    let k2 = EVERY * rng.range(2, 4); // the checkpoint being written
    let k3 = rng.range(k2 + 1, TOTAL_STEPS - 2); // a step after it…
    let k3_delay_ms = rng.range(0, 300); // …plus up to about one step
    eprintln!(
        "kill moments: after step {k1}; while checkpoint step-{k2} is written; {k3_delay_ms} ms after step {k3}"
    );

    let parts = tmp.path().join("parts");
    let run = PathBuf::from(format!("{}.run", parts.display()));
    let pause = Some(150);
    let mut report = Vec::new();

    // 1. Before any checkpoint exists: `--resume` must start from step 0, saying so.
    let mut child = s.start(&parts, false, pause, "run0");
    wait_for(&mut child, &format!("step {k1}"), || {
        metrics_step(&run) >= k1
    });
    kill9(&mut child);
    let at = metrics_step(&run);
    assert!(
        checkpoint_steps(&run).is_empty(),
        "the first kill came after a checkpoint"
    );
    report.push(format!("kill 1 after step {at} (no checkpoint yet)"));

    // 2. While checkpoint step-k2 is half-written.
    let mut child = s.start(&parts, true, pause, "run1");
    let tmp_ckpt = run.join(format!("checkpoints/step-{k2}.tmp"));
    wait_for(&mut child, &format!("step-{k2}.tmp"), || {
        tmp_ckpt.join("model.safetensors").is_file()
    });
    kill9(&mut child);
    let log = s.log("run1");
    assert!(
        log.contains("yet: starting from step 0"),
        "--resume before the first checkpoint: {log}"
    );
    assert_eq!(resumed_at(&log), None, "{log}");
    assert!(tmp_ckpt.is_dir(), "the kill did not leave step-{k2}.tmp");
    assert!(
        !checkpoint_steps(&run).contains(&k2),
        "step-{k2} was renamed into place before the kill"
    );
    let newest = checkpoint_steps(&run)[0];
    report.push(format!(
        "run 2 started from step 0; kill 2 inside checkpoint step-{k2} (step-{k2}.tmp left, newest complete step-{newest})"
    ));

    // 3. At a random moment after step k3.
    let mut child = s.start(&parts, true, pause, "run2");
    wait_for(&mut child, &format!("step {k3}"), || {
        metrics_step(&run) >= k3
    });
    std::thread::sleep(Duration::from_millis(k3_delay_ms));
    kill9(&mut child);
    let log = s.log("run2");
    assert_eq!(resumed_at(&log), Some(newest), "{log}");
    assert!(
        log.contains(&format!(
            "step-{k2}.tmp: a checkpoint whose writing was interrupted"
        )),
        "the leftover was not reported: {log}"
    );
    let at = metrics_step(&run);
    let newest3 = checkpoint_steps(&run)[0];
    report.push(format!(
        "run 3 resumed at step {newest}; kill 3 at step {at} ({k3_delay_ms} ms after step {k3}; newest complete step-{newest3})"
    ));

    // 4. The last resume finishes and exports.
    let status = s.start(&parts, true, pause, "run3").wait().unwrap();
    let log = s.log("run3");
    assert!(status.success(), "{log}");
    assert_eq!(resumed_at(&log), Some(newest3), "{log}");
    report.push(format!("run 4 resumed at step {newest3} and finished"));
    assert!(
        !run.join(format!("checkpoints/step-{k2}.tmp")).exists(),
        "leftover not cleaned"
    );

    let a = files_of(&whole);
    let b = files_of(&parts);
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs from the uninterrupted run's");
    }

    // A finished run whose newest checkpoint is then found truncated (renamed into place, data
    // lost): `--resume` names it, falls back to the one before, and exports the same files.
    let last = run.join(format!("checkpoints/step-{TOTAL_STEPS}/model.safetensors"));
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(1000).unwrap();
    drop(f);
    let status = s.start(&parts, true, None, "run4").wait().unwrap();
    let log = s.log("run4");
    assert!(status.success(), "{log}");
    let expect = format!(
        "checkpoint step-{TOTAL_STEPS} is incomplete (model.safetensors has 1000 bytes, the manifest says"
    );
    assert!(log.contains(&expect), "{log}");
    assert!(
        log.contains(&format!("using step-{}", TOTAL_STEPS - EVERY)),
        "{log}"
    );
    assert_eq!(resumed_at(&log), Some(TOTAL_STEPS - EVERY), "{log}");
    let said = log
        .lines()
        .find(|l| l.contains(&expect))
        .unwrap_or_default();
    report.push(format!(
        "run 5 (step-{TOTAL_STEPS} truncated): resumed at step {}, saying: {said}",
        TOTAL_STEPS - EVERY
    ));
    assert!(files_of(&parts) == a, "the re-export differs");

    let weights = a.iter().find(|x| x.0 == "model.safetensors").unwrap();
    report.push(format!(
        "exports byte-identical ({} files, model.safetensors {} bytes); reference run {t_whole:.1} s, whole test {:.1} s",
        a.len(),
        weights.1.len(),
        t_start.elapsed().as_secs_f64()
    ));
    for line in &report {
        eprintln!("{line}");
    }
    // The Python suite, which runs after this one, prints these in its closing "figures" section.
    let figures = Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures");
    std::fs::create_dir_all(&figures).unwrap();
    let file = figures.join("train_kill.txt");
    let tmp_file = figures.join("train_kill.txt.tmp");
    std::fs::write(&tmp_file, report.join("\n") + "\n").unwrap();
    std::fs::rename(&tmp_file, &file).unwrap();
}
