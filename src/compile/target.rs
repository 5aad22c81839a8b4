//! Compilation targets: one description (`targets/<name>/target.toml`) and
//! the runtime sources each needs, compiled into the binary so an artifact
//! can be written anywhere.

use anyhow::Context;
use serde::Deserialize;

/// A target description.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    /// Shader targets: the language the inference kernels are written in
    /// (`wgsl`, `spirv`, `msl`, `glsl`); no C is emitted for them and the
    /// C fields below stay empty.
    #[serde(default)]
    pub shader: Option<String>,
    /// C compiler command.
    #[serde(default)]
    pub cc: String,
    #[serde(default)]
    pub cflags: Vec<String>,
    #[serde(default)]
    pub ldflags: Vec<String>,
    /// Command prefix that runs a built program (empty: run natively).
    #[serde(default)]
    pub runner: Vec<String>,
    /// `hosted` (stdio harness) or `semihosting` (bare metal).
    #[serde(default)]
    pub harness: String,
    /// Debian packages that provide the compiler and runner.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Flash and RAM of the device, when it is small enough to matter.
    #[serde(default)]
    pub flash_bytes: Option<u64>,
    #[serde(default)]
    pub ram_bytes: Option<u64>,
    /// Extra runtime C files to compile and link (start-up code of bare
    /// metal targets), beyond the harness, model and kernels.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Programs needed besides `cc` and the runner's first word (the
    /// emulator a `sh -c` runner starts).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Plan the matrix layers' padded inputs into the activation arena
    /// (each live only during its layer) instead of two static scratch
    /// buffers: less RAM for microcontrollers, same arithmetic.
    #[serde(default)]
    pub scratch_in_arena: bool,
}

/// Shared runtime sources: `(file name, contents)`.
pub const COMMON: &[(&str, &str)] = &[
    (
        "cardc_kernels.h",
        include_str!("../../targets/common/cardc_kernels.h"),
    ),
    (
        "cardc_kernels.c",
        include_str!("../../targets/common/cardc_kernels.c"),
    ),
];

/// The stdio harness of hosted targets.
pub const MAIN_HOSTED: &str = include_str!("../../targets/common/main_hosted.c");

/// The semihosting harness of bare-metal targets.
pub const MAIN_SEMIHOST: &str = include_str!("../../targets/common/main_semihost.c");

/// The harness `main.c` for a target's `harness` kind.
pub fn harness_source(t: &Target) -> anyhow::Result<&'static str> {
    match t.harness.as_str() {
        "hosted" => Ok(MAIN_HOSTED),
        "semihosting" => Ok(MAIN_SEMIHOST),
        other => anyhow::bail!(
            "target {}: unknown harness '{other}' (hosted or semihosting)",
            t.name
        ),
    }
}

/// Runtime files shared by the Cortex-M targets: start-up code and the
/// section placement their linker scripts include.
const CORTEX_M_COMMON: [(&str, &str); 2] = [
    (
        "startup_cortexm.c",
        include_str!("../../targets/common/startup_cortexm.c"),
    ),
    (
        "cortexm_sections.ld",
        include_str!("../../targets/common/cortexm_sections.ld"),
    ),
];

/// Runtime files of a target: `(file name, contents)`.
pub type Files = &'static [(&'static str, &'static str)];

/// Built-in targets: `(name, description, extra runtime files)`.
const BUILTIN: &[(&str, &str, Files)] = &[
    ("host", include_str!("../../targets/host/target.toml"), &[]),
    ("arm", include_str!("../../targets/arm/target.toml"), &[]),
    (
        "cortex-m4",
        include_str!("../../targets/cortex-m4/target.toml"),
        &[
            CORTEX_M_COMMON[0],
            CORTEX_M_COMMON[1],
            (
                "cortex-m4.ld",
                include_str!("../../targets/cortex-m4/cortex-m4.ld"),
            ),
        ],
    ),
    (
        "cortex-m33",
        include_str!("../../targets/cortex-m33/target.toml"),
        &[
            CORTEX_M_COMMON[0],
            CORTEX_M_COMMON[1],
            (
                "cortex-m33.ld",
                include_str!("../../targets/cortex-m33/cortex-m33.ld"),
            ),
        ],
    ),
    (
        "spirv",
        include_str!("../../targets/spirv/target.toml"),
        &[],
    ),
    ("msl", include_str!("../../targets/msl/target.toml"), &[]),
    ("glsl", include_str!("../../targets/glsl/target.toml"), &[]),
    ("wgsl", include_str!("../../targets/wgsl/target.toml"), &[]),
];

/// Names `--target` accepts per the product contract, built or not.
pub const ALL_NAMES: &[&str] = &[
    "host",
    "arm",
    "cortex-m4",
    "cortex-m33",
    "spirv",
    "msl",
    "glsl",
    "wgsl",
];

/// The target called `name` and its extra runtime files.
pub fn find(name: &str) -> anyhow::Result<(Target, Files)> {
    if let Some((_, toml_text, files)) = BUILTIN.iter().find(|(n, _, _)| *n == name) {
        let t: Target = toml::from_str(toml_text)
            .with_context(|| format!("built-in target '{name}' description"))?;
        return Ok((t, files));
    }
    anyhow::bail!(
        "--target {name}: unknown target (one of {})",
        ALL_NAMES.join(", ")
    )
}

/// Whether a command is on the PATH (or is a path to a file).
pub fn have_tool(cmd: &str) -> bool {
    if cmd.contains('/') {
        return std::path::Path::new(cmd).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

impl Target {
    /// Whether this target gets inference shaders instead of C.
    pub fn is_shader(&self) -> bool {
        self.shader.is_some()
    }

    /// Whether `--format auto` packs binary layers on Sign inputs as
    /// `xnor`: everywhere but a `host` that is not aarch64. There the xnor
    /// kernels are the portable C ones, which ran 1.5x slower than the
    /// float add/subtract kernels on the same weights (a 90 % BiProp
    /// `resnet20-bnn`, BENCHMARKS.md), and RAM, xnor's other gain, is no
    /// constraint. `--format xnor` still forces it.
    pub fn auto_xnor(&self) -> bool {
        self.name != "host" || cfg!(target_arch = "aarch64")
    }

    /// Tools this target needs that are missing here.
    pub fn missing_tools(&self) -> Vec<String> {
        std::iter::once(&self.cc)
            .chain(self.runner.first())
            .chain(&self.tools)
            .filter(|c| !have_tool(c))
            .cloned()
            .collect()
    }
}
