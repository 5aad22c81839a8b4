//! Compiled objects of an artifact's model-independent C sources (the
//! kernels, a deck's gate), kept in a directory between builds.
//!
//! `cardc_kernels.c` is the same text in every artifact and by far its
//! slowest file to compile (about 10 s under the sanitizers), while the
//! model's own sources take a second. Whoever builds many artifacts with
//! one compiler and one set of flags (the test suite, a script that runs
//! `cardc run` over many cards) can name a cache directory, in
//! [`ENV`] or through [`super::artifact::build_with`], and each shared
//! source is compiled once per distinct (compiler, flags, source text,
//! header text) and linked from there. An object is found by a hash of
//! that key and only used when the command stored beside it is the same;
//! a cache directory belongs to one machine (flags like `-march=native`
//! mean different code elsewhere).

use anyhow::{Context, bail};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Environment variable naming the object cache directory of
/// [`super::artifact::build`].
pub const ENV: &str = "CARDC_OBJECT_CACHE";

/// The sources whose object depends only on their own text, the headers
/// listed with them and the compile command.
const SHARED: &[(&str, &[&str])] = &[
    ("cardc_kernels.c", &["cardc_kernels.h"]),
    ("cardc_gate.c", &["cardc_gate.h"]),
];

/// The cache directory named in [`ENV`], if any.
pub fn dir_from_env() -> Option<PathBuf> {
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// One lock per cache key, so that threads of one process building
/// artifacts with the same flags compile each object once. Other
/// processes may compile the same object at the same time: each writes
/// its own temporary file and renames it into place.
fn key_lock(key: &str) -> Arc<Mutex<()>> {
    static LOCKS: Mutex<Option<HashMap<String, Arc<Mutex<()>>>>> = Mutex::new(None);
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    locks
        .get_or_insert_with(HashMap::new)
        .entry(key.to_string())
        .or_default()
        .clone()
}

/// `sources` (the artifact's C files, names relative to `artifact`) with
/// each shared source replaced by the path of its object in `cache`,
/// compiled there with `cc cflags -c` first when it is not there yet.
pub fn substitute(
    cache: &Path,
    artifact: &Path,
    cc: &str,
    cflags: &[String],
    sources: &[String],
) -> anyhow::Result<Vec<String>> {
    // Absolute: the compiler runs in the artifact's directory.
    let cache =
        std::path::absolute(cache).with_context(|| format!("object cache {}", cache.display()))?;
    let mut out = Vec::with_capacity(sources.len());
    for s in sources {
        match SHARED.iter().find(|(name, _)| *name == s) {
            Some((name, headers)) => {
                let obj = object(&cache, artifact, cc, cflags, name, headers)?;
                out.push(obj.to_string_lossy().into_owned());
            }
            None => out.push(s.clone()),
        }
    }
    Ok(out)
}

/// The object of `artifact/source` in `cache`, compiled if missing.
fn object(
    cache: &Path,
    artifact: &Path,
    cc: &str,
    cflags: &[String],
    source: &str,
    headers: &[&str],
) -> anyhow::Result<PathBuf> {
    let read = |f: &str| {
        let p = artifact.join(f);
        std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let mut command: Vec<String> = vec![cc.to_string()];
    command.extend(cflags.iter().cloned());
    command.extend(["-c".to_string(), source.to_string()]);
    let line = command.join(" ");
    let mut h = std::hash::DefaultHasher::new();
    line.hash(&mut h);
    read(source)?.hash(&mut h);
    for header in headers {
        header.hash(&mut h);
        read(header)?.hash(&mut h);
    }
    let key = format!("{}-{:016x}", source.trim_end_matches(".c"), h.finish());
    let obj = cache.join(format!("{key}.o"));
    let stamp = cache.join(format!("{key}.cmd"));

    let lock = key_lock(&key);
    let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
    if obj.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == line) {
        return Ok(obj);
    }
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot create the object cache {}", cache.display()))?;
    // Unique per process and call: concurrent builders never share a file.
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = cache.join(format!("{key}.{}.{n}.tmp", std::process::id()));
    let result = Command::new(cc)
        .args(cflags)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&tmp)
        .current_dir(artifact)
        .output()
        .with_context(|| format!("cannot run {cc}"))?;
    if !result.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let err = String::from_utf8_lossy(&result.stderr);
        let first: Vec<&str> = err.lines().take(5).collect();
        bail!(
            "compiling {} of {} failed ({line}): {}",
            source,
            artifact.display(),
            first.join(" | ")
        );
    }
    let stamp_tmp = tmp.with_extension("cmd.tmp");
    std::fs::write(&stamp_tmp, &line)
        .and_then(|()| std::fs::rename(&stamp_tmp, &stamp))
        .and_then(|()| std::fs::rename(&tmp, &obj))
        .with_context(|| format!("cannot store {} in {}", source, cache.display()))?;
    Ok(obj)
}
