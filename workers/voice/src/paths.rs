//! Where voxproof finds its runtime files: the cache directory that `scripts/setup` fills,
//! overridable by environment variables.

use std::path::PathBuf;

/// ONNX Runtime version whose library `scripts/setup` installs.
pub const ORT_VERSION: &str = "1.32.0";

/// `$VOXPROOF_CACHE`, else `$XDG_CACHE_HOME/voxproof`, else `~/.cache/voxproof`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("VOXPROOF_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty_env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("voxproof");
    }
    let home = non_empty_env("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("voxproof")
}

/// `$VOXPROOF_ORT_LIB`, else the library unpacked into the cache.
pub fn ort_library() -> PathBuf {
    non_empty_env("VOXPROOF_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir()
                .join("onnxruntime")
                .join(format!("libonnxruntime.so.{ORT_VERSION}"))
        })
}

/// `$VOXPROOF_ESPEAK_DATA`, else the espeak-ng 1.52 data built into the cache.
pub fn espeak_data() -> PathBuf {
    non_empty_env("VOXPROOF_ESPEAK_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("espeak-ng-data"))
}

/// Folders searched for voices: `$VOXPROOF_VOICES` (colon-separated) first, then the
/// cache's `voices/`, where `voxproof voices install` puts them.
pub fn voice_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = non_empty_env("VOXPROOF_VOICES")
        .map(|v| {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    dirs.push(installed_voices_dir());
    dirs
}

pub fn installed_voices_dir() -> PathBuf {
    cache_dir().join("voices")
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
