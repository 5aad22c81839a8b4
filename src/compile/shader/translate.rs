//! The inference kernels in each shader language, through naga: the WGSL
//! source is parsed and validated, then written as SPIR-V, MSL or GLSL.
//! SPIR-V and GLSL outputs are parsed back and validated again, so an
//! artifact never holds a shader its consumer would reject for a reason
//! naga can see.

use super::{ENTRY_POINTS, SOURCE, Schedule};
use anyhow::{Context, anyhow, bail};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// The shader file of `language` (glsl: a pattern, one file per entry).
pub fn shader_file(language: &str) -> String {
    match language {
        "spirv" => "model.spv",
        "msl" => "model.metal",
        "glsl" => "model.{entry}.comp",
        _ => super::WGSL_FILE,
    }
    .to_string()
}

/// The GLSL file of one entry point.
pub fn glsl_file(entry: &str) -> String {
    format!("model.{entry}.comp")
}

fn validate(module: &naga::Module, what: &str) -> anyhow::Result<naga::valid::ModuleInfo> {
    Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(module)
        .map_err(|e| anyhow!("{what}: {}", e.emit_to_string("")))
}

/// The WGSL kernels parsed and validated.
pub fn wgsl_module() -> anyhow::Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(SOURCE)
        .map_err(|e| anyhow!("infer.wgsl: {}", e.emit_to_string(SOURCE)))?;
    let info = validate(&module, "infer.wgsl")?;
    Ok((module, info))
}

/// Group 0, binding `b`.
fn binding(b: u32) -> naga::ResourceBinding {
    naga::ResourceBinding {
        group: 0,
        binding: b,
    }
}

/// SPIR-V words of every entry point (SPIR-V 1.0, Vulkan 1.0 and later).
pub fn spirv(module: &naga::Module, info: &naga::valid::ModuleInfo) -> anyhow::Result<Vec<u32>> {
    let options = naga::back::spv::Options {
        lang_version: (1, 0),
        ..Default::default()
    };
    let words = naga::back::spv::write_vec(module, info, &options, None)
        .map_err(|e| anyhow!("writing SPIR-V: {e}"))?;
    // Read back and validate what a Vulkan driver will be given.
    let back = naga::front::spv::parse_u8_slice(
        bytemuck::cast_slice(&words),
        &naga::front::spv::Options::default(),
    )
    .map_err(|e| anyhow!("the SPIR-V naga wrote does not parse: {e}"))?;
    validate(&back, "the SPIR-V naga wrote")?;
    Ok(words)
}

/// Metal Shading Language 2.1 with buffer slots 0..3 = bindings 0..3 and
/// the runtime-array sizes in buffer 4; returns the source and the
/// translated entry point names.
pub fn msl(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    use naga::back::msl;
    let resources: msl::BindingMap = (0..4u32)
        .map(|b| {
            (
                binding(b),
                msl::BindTarget {
                    buffer: Some(b as u8),
                    mutable: b == 1,
                    ..Default::default()
                },
            )
        })
        .collect();
    let per_entry = ENTRY_POINTS
        .iter()
        .map(|e| {
            (
                e.to_string(),
                msl::EntryPointResources {
                    resources: resources.clone(),
                    immediates_buffer: None,
                    sizes_buffer: Some(4),
                },
            )
        })
        .collect();
    let options = msl::Options {
        lang_version: (2, 1),
        per_entry_point_map: per_entry,
        fake_missing_bindings: false,
        ..Default::default()
    };
    let pipeline = msl::PipelineOptions::default();
    let (text, tinfo) = msl::write_string(module, info, &options, &pipeline)
        .map_err(|e| anyhow!("writing MSL: {e}"))?;
    let mut names = Vec::new();
    for (ep, name) in module.entry_points.iter().zip(&tinfo.entry_point_names) {
        let name = name
            .as_ref()
            .map_err(|e| anyhow!("MSL entry point {}: {e}", ep.name))?;
        names.push((ep.name.clone(), name.clone()));
    }
    Ok((text, names))
}

/// GLSL 4.50 compute shaders, one per entry point, `binding = N` as in
/// the layout (group 0).
pub fn glsl(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
) -> anyhow::Result<Vec<(String, String)>> {
    use naga::back::glsl;
    let options = glsl::Options {
        version: glsl::Version::Desktop(450),
        binding_map: (0..4u32).map(|b| (binding(b), b as u8)).collect(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for entry in ENTRY_POINTS {
        let pipeline = glsl::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: entry.to_string(),
            multiview: None,
        };
        let mut text = String::new();
        glsl::Writer::new(
            &mut text,
            module,
            info,
            &options,
            &pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write().map(|_| ()))
        .map_err(|e| anyhow!("writing GLSL for {entry}: {e}"))?;
        let back = parse_glsl(&text).with_context(|| format!("the GLSL naga wrote for {entry}"))?;
        validate(&back, &format!("the GLSL naga wrote for {entry}"))?;
        out.push((entry.to_string(), text));
    }
    Ok(out)
}

/// Parses a GLSL compute shader.
pub fn parse_glsl(text: &str) -> anyhow::Result<naga::Module> {
    naga::front::glsl::Frontend::default()
        .parse(
            &naga::front::glsl::Options::from(naga::ShaderStage::Compute),
            text,
        )
        .map_err(|e| anyhow!("does not parse: {}", e.emit_to_string(text)))
}

/// The files of `language` (`(name, contents)`, besides `model.wgsl`),
/// after validation; records translated entry point names in `schedule`.
pub fn translate(
    language: &str,
    schedule: &mut Schedule,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let (module, info) = wgsl_module()?;
    Ok(match language {
        "wgsl" => Vec::new(),
        "spirv" => vec![(
            shader_file("spirv"),
            spirv(&module, &info)?
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect(),
        )],
        "msl" => {
            let (text, names) = msl(&module, &info)?;
            schedule.entry_points = names.into_iter().collect();
            vec![(shader_file("msl"), text.into_bytes())]
        }
        "glsl" => {
            // Each file's entry point is `main`.
            schedule.entry_points = ENTRY_POINTS
                .iter()
                .map(|e| (e.to_string(), "main".to_string()))
                .collect();
            glsl(&module, &info)?
                .into_iter()
                .map(|(e, t)| (glsl_file(&e), t.into_bytes()))
                .collect()
        }
        other => bail!("unknown shader language '{other}' (wgsl, spirv, msl or glsl)"),
    })
}
