//! Interrupted work (RELIABILITY.md): Ctrl-C (SIGINT) mid-epoch writes a
//! checkpoint of the exact state and exits 130 with one line; SIGKILL
//! mid-epoch leaves the last atomic checkpoint; `--resume` after either
//! finishes with a card byte-identical to an uninterrupted run's (creation
//! time pinned with `SOURCE_DATE_EPOCH`), and two identical runs write
//! identical bytes.

use cardc::card::{Kind, read};
use cardc::train::trainer::Checkpoint;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A small run: a tiny conv net on 1,600 synthetic images, 2 epochs of 50
/// steps (a few seconds), so that a signal lands mid-epoch.
struct Run {
    dir: tempfile::TempDir,
    desc: PathBuf,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let desc = dir.path().join("tiny.toml");
        std::fs::write(
            &desc,
            "name = \"tiny\"\nfamily = \"plain\"\nlayers = [\"c4\", \"M\", \"c8\", \"M\"]\n",
        )
        .unwrap();
        Run { dir, desc }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, out: &Path, resume: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cardc"));
        c.args([
            "train",
            "--arch",
            self.desc.to_str().unwrap(),
            "--data",
            "synthetic:1600",
            "--epochs",
            "2",
            "--batch",
            "32",
            "--seed",
            "11",
            "--backend",
            "cpu",
            "--threads",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        if resume {
            c.arg("--resume");
        }
        c.env("SOURCE_DATE_EPOCH", "1700000000");
        c
    }

    fn finish(&self, out: &Path, resume: bool) -> Output {
        let o = self.command(out, resume).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    }

    /// Starts a run whose stderr is read line by line on a thread; returns
    /// the child and a receiver of its lines.
    fn spawn(&self, out: &Path, resume: bool) -> (Child, std::sync::mpsc::Receiver<String>) {
        let mut child = self
            .command(out, resume)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                // Progress bars redraw with \r: keep each piece.
                for piece in line.split('\r') {
                    let _ = tx.send(piece.to_string());
                }
            }
        });
        (child, rx)
    }
}

/// Waits (at most 2 minutes) for a stderr line containing `needle`.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let t = Instant::now();
    let mut seen = Vec::new();
    while t.elapsed() < Duration::from_secs(120) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    panic!("no stderr line with '{needle}' in: {seen:?}");
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

#[test]
fn ctrl_c_mid_epoch_checkpoints_and_resume_gives_the_same_bytes() {
    let r = Run::new();
    let a = r.path("a.card");
    r.finish(&a, false);
    // Same seed, same backend, same machine: identical bytes.
    let a2 = r.path("a2.card");
    r.finish(&a2, false);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&a2).unwrap(),
        "two identical runs wrote different cards"
    );

    // Ctrl-C once training has started (the handler is installed before
    // the data loads, and the "training ..." line comes after).
    let b = r.path("b.card");
    let (mut child, rx) = r.spawn(&b, false);
    wait_for(&rx, "params) on synthetic");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    let lines: Vec<String> = rx
        .iter()
        .filter(|l| !l.trim().is_empty() && l.contains("cardc:"))
        .collect();
    assert_eq!(status.code(), Some(130), "{lines:?}");
    let ckpt = r.path("b.card.ckpt");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0],
        format!(
            "cardc: interrupted: checkpoint written to {}; continue with --resume",
            ckpt.display()
        )
    );
    assert!(!b.exists(), "an interrupted run wrote its card");
    let ck: Checkpoint<()> = read(&ckpt, Kind::Checkpoint).unwrap();
    let partial = ck
        .state
        .partial
        .as_ref()
        .expect("the checkpoint is mid-epoch");
    assert!(partial.steps >= 1 && partial.steps < 50, "{partial:?}");

    r.finish(&b, true);
    assert!(!ckpt.exists(), "checkpoint left after the card was written");
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "the resumed card differs from the uninterrupted one"
    );
}

#[test]
fn sigkill_mid_epoch_then_resume_gives_the_same_bytes() {
    let r = Run::new();
    let a = r.path("a.card");
    r.finish(&a, false);

    // Killed in epoch 2, after epoch 1's checkpoint.
    let b = r.path("b.card");
    let ckpt = r.path("b.card.ckpt");
    let (mut child, rx) = r.spawn(&b, false);
    wait_for(&rx, "train epoch 1/2:");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-KILL");
    let _ = child.wait();
    assert!(!b.exists(), "run finished before the kill; make it longer");
    let ck: Checkpoint<()> = read(&ckpt, Kind::Checkpoint).unwrap();
    assert_eq!(ck.state.epochs_done, 1);
    r.finish(&b, true);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "the resumed card differs from the uninterrupted one"
    );
}
