//! Helpers shared by the suite's command-line tests: run the real binary,
//! read its JSON, and check its one-line errors.

use cardc::ir::{BatchNorm, Conv2d, Linear, Node, Op, Pool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `cardc` binary built for this test run, its artifact builds
/// sharing the suite's [`object_cache`].
pub fn cardc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardc"))
        .args(args)
        .env(cardc::compile::object_cache::ENV, object_cache())
        .output()
        .expect("runs cardc")
}

/// The suite's cache of compiled kernel objects
/// (`cardc::compile::object_cache`): each test artifact compiles only its
/// own model, the kernels once per compiler and flag set. It lives in
/// Cargo's scratch directory for integration tests, so later runs reuse
/// what still matches.
pub fn object_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("objects")
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

// Hand-built graphs for the backend tests (cpu_gradcheck, gpu).

pub fn node(name: &str, op: Op, inputs: &[usize]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.to_vec(),
    }
}

pub fn input(c: usize, h: usize, w: usize) -> Node {
    node(
        "input",
        Op::Input {
            channels: c,
            height: h,
            width: w,
        },
        &[],
    )
}

pub fn conv(
    cin: usize,
    cout: usize,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    groups: usize,
    bias: bool,
) -> Op {
    Op::Conv2d(Conv2d {
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride: s,
        padding: p,
        groups,
        bias,
    })
}

pub fn bn(c: usize, affine: bool) -> Op {
    Op::BatchNorm(BatchNorm {
        channels: c,
        affine,
        eps: 1e-5,
        momentum: 0.1,
    })
}

pub fn linear(i: usize, o: usize, bias: bool) -> Op {
    Op::Linear(Linear {
        in_features: i,
        out_features: o,
        bias,
    })
}

pub fn pool(k: usize, s: usize, p: usize) -> Pool {
    Pool {
        kernel: (k, k),
        stride: (s, s),
        padding: (p, p),
    }
}
