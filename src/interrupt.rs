//! Clean stops of long runs on Ctrl-C (SIGINT) or SIGTERM.
//!
//! `cardc train` and `cardc prune` call [`install`]; the training loop then
//! polls [`requested`] after every optimizer step and, when it is set,
//! writes a checkpoint of the exact state (mid-epoch included) and returns
//! [`Interrupted`]. The CLI prints its one line and exits with
//! [`EXIT_CODE`]; `--resume` continues to the same card an uninterrupted
//! run writes. A second signal while the first is being handled ends the
//! process at once (the checkpoint of the last epoch is still on disk,
//! since checkpoints are written atomically).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit status of an interrupted command (128 + SIGINT, the shell's code).
pub const EXIT_CODE: i32 = 130;

/// Set by the signal handler; shared with `signal-hook`, which only
/// stores to it (async-signal-safe).
fn flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Routes SIGINT and SIGTERM to the stop flag (once per process; later
/// calls do nothing). Until this is called the signals keep their default
/// action, so commands without checkpoints still stop immediately.
pub fn install() -> std::io::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag as sig;
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this
        // signal: set means a second signal, which exits with status 1.
        sig::register_conditional_shutdown(signal, 1, Arc::clone(flag()))?;
        sig::register(signal, Arc::clone(flag()))?;
    }
    let _ = INSTALLED.set(());
    Ok(())
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    flag().load(Ordering::Relaxed)
}

/// A run stopped on request after writing its checkpoint.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted: checkpoint written to {}; continue with --resume",
    checkpoint.display()
)]
pub struct Interrupted {
    /// The checkpoint that holds the state at the stop.
    pub checkpoint: PathBuf,
}

/// The [`Interrupted`] in `error`'s chain, if the command stopped on request.
pub fn find(error: &anyhow::Error) -> Option<&Interrupted> {
    error.chain().find_map(|e| e.downcast_ref::<Interrupted>())
}
