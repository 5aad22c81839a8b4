fn main() {
    // Vulkan drivers load libwayland-client, which prints "error:
    // XDG_RUNTIME_DIR is invalid" on stderr when the variable is unset
    // (servers, CI, containers). Give it the temporary directory; no display
    // is found there, quietly. Set before any thread exists.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: single-threaded here, at the top of main.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    std::process::exit(cardc::cli::main());
}
