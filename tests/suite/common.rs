//! Helpers shared by the suite's command-line tests: run the real binary,
//! read its JSON, and check its one-line errors.

use std::process::{Command, Output};

/// Runs the `cardc` binary built for this test run.
pub fn cardc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardc"))
        .args(args)
        .output()
        .expect("runs cardc")
}

/// The command's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A successful command's JSON output (`--json`).
pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "stderr: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

/// Runs `cardc args` and returns its JSON output; fails the test (naming the
/// arguments) if the command fails.
pub fn cardc_json(args: &[&str]) -> serde_json::Value {
    let o = cardc(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

/// A failed command: exit code 1, one `cardc: error:` line naming `needle`,
/// no panic.
pub fn assert_clean_error(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {e}");
    assert!(lines[0].starts_with("cardc: error: "), "{e}");
    assert!(e.contains(needle), "expected '{needle}' in: {e}");
    assert!(!e.contains("panicked"), "{e}");
}
