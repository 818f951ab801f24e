//! Installed voices: listing, describing and installing.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{paths, Voice, VoiceError};

/// What `voices list` shows about a voice.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VoiceSummary {
    pub name: String,
    pub language: Option<String>,
    pub quality: Option<String>,
    pub sample_rate: u32,
    pub speakers: u32,
    pub espeak_voice: String,
    pub model_path: PathBuf,
    pub model_bytes: u64,
}

impl VoiceSummary {
    pub fn of(voice: &Voice) -> Self {
        Self {
            name: voice.name.clone(),
            language: voice.config.language.as_ref().and_then(|l| l.code.clone()),
            quality: voice.config.audio.quality.clone(),
            sample_rate: voice.config.audio.sample_rate,
            speakers: voice.config.num_speakers.max(1),
            espeak_voice: voice.config.espeak.voice.clone(),
            model_path: voice.model_path.clone(),
            model_bytes: std::fs::metadata(&voice.model_path)
                .map(|m| m.len())
                .unwrap_or(0),
        }
    }
}

/// Every loadable voice in the search folders, sorted by name; a name found twice is listed
/// once (the first folder wins, as in [`Voice::find`]).
pub fn list_voices() -> Vec<VoiceSummary> {
    local_voices().iter().map(VoiceSummary::of).collect()
}

/// Every loadable voice in the search folders, opened, in the order of [`list_voices`].
pub fn local_voices() -> Vec<Voice> {
    let mut found: Vec<Voice> = Vec::new();
    for dir in paths::voice_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut models: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
            .collect();
        models.sort();
        for model in models {
            if let Ok(voice) = Voice::open(&model) {
                if !found.iter().any(|v| v.name == voice.name) {
                    found.push(voice);
                }
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// SHA-256 of a voice model file, hex-encoded.
pub fn model_sha256(path: &Path) -> Result<String, VoiceError> {
    let io = |source| VoiceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// [`model_sha256`], remembered per file while its size and modification time stay the
/// same: servers ask for it on every job, and a model is tens of megabytes.
pub fn model_sha256_cached(path: &Path) -> Result<String, VoiceError> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::SystemTime;
    /// Size and modification time of the file when its digest was taken, and the digest.
    type Stamped = (u64, SystemTime, String);
    static CACHE: Mutex<Option<HashMap<PathBuf, Stamped>>> = Mutex::new(None);
    let meta = std::fs::metadata(path).map_err(|source| VoiceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let stamp = (
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    );
    if let Some((len, modified, digest)) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(path)
    {
        if (*len, *modified) == stamp {
            return Ok(digest.clone());
        }
    }
    let digest = model_sha256(path)?;
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(path.to_path_buf(), (stamp.0, stamp.1, digest.clone()));
    Ok(digest)
}

/// Largest voice model accepted from an archive.
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Installs a voice given as `NAME.onnx` (with `NAME.onnx.json` beside it), as its `.json`,
/// as a folder holding exactly one voice, or as a wheel/zip packaging exactly one voice.
pub fn install_voice(path: &Path) -> Result<Voice, VoiceError> {
    let bad = |message: String| VoiceError::BadVoice {
        path: path.to_path_buf(),
        message,
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if path.is_dir() {
        let models: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| VoiceError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
            .collect();
        return match models.as_slice() {
            [one] => install_model(one),
            [] => Err(bad("no .onnx voice in this folder".into())),
            _ => Err(bad(
                "several voices in this folder; name the .onnx file".into()
            )),
        };
    }
    if !path.is_file() {
        return Err(bad("does not exist".into()));
    }
    match extension.as_str() {
        "whl" | "zip" => install_from_archive(path),
        "json" => install_model(Path::new(path.to_string_lossy().trim_end_matches(".json"))),
        _ => install_model(path),
    }
}

/// Unpacks the one `NAME.onnx` + `NAME.onnx.json` pair of an archive beside the installed
/// voices, then installs it.
fn install_from_archive(archive: &Path) -> Result<Voice, VoiceError> {
    let bad = |message: String| VoiceError::BadVoice {
        path: archive.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(archive).map_err(|source| VoiceError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a wheel or zip: {e}")))?;
    let models: Vec<String> = zip
        .file_names()
        .filter(|n| n.ends_with(".onnx"))
        .map(String::from)
        .collect();
    let model = match models.as_slice() {
        [one] => one.clone(),
        [] => return Err(bad("no .onnx voice inside".into())),
        _ => {
            return Err(bad(format!(
                "{} voices inside; unpack it and install one",
                models.len()
            )))
        }
    };
    let dir = paths::installed_voices_dir();
    std::fs::create_dir_all(&dir).map_err(|source| VoiceError::Io {
        path: dir.clone(),
        source,
    })?;
    let staging = tempfile::tempdir_in(&dir).map_err(|source| VoiceError::Io {
        path: dir.clone(),
        source,
    })?;
    let name = Path::new(&model)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (inner, outer) in [
        (format!("{model}.json"), format!("{name}.json")),
        (model.clone(), name.clone()),
    ] {
        let mut entry = zip
            .by_name(&inner)
            .map_err(|e| bad(format!("{inner}: {e}")))?;
        let target = staging.path().join(&outer);
        let mut out = std::fs::File::create(&target).map_err(|source| VoiceError::Io {
            path: target.clone(),
            source,
        })?;
        let copied = std::io::copy(&mut (&mut entry).take(MAX_MODEL_BYTES + 1), &mut out).map_err(
            |source| VoiceError::Io {
                path: target.clone(),
                source,
            },
        )?;
        if copied > MAX_MODEL_BYTES {
            return Err(bad(format!(
                "{inner} is larger than {} GiB",
                MAX_MODEL_BYTES >> 30
            )));
        }
    }
    install_model(&staging.path().join(name))
}

/// Copies a voice (`NAME.onnx` with `NAME.onnx.json` beside it) into the installed-voices
/// folder after checking its configuration. Files are written under temporary names and
/// renamed, so an interrupted install leaves no half voice.
fn install_model(model: &Path) -> Result<Voice, VoiceError> {
    let source = Voice::open(model)?;
    let dir = paths::installed_voices_dir();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VoiceError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let target_model = dir.join(format!("{}.onnx", source.name));
    let target_config = dir.join(format!("{}.onnx.json", source.name));
    let source_config = PathBuf::from(format!("{}.json", model.display()));
    for (from, to) in [
        (&source_config, &target_config),
        (&source.model_path, &target_model),
    ] {
        let partial = to.with_extension("partial");
        std::fs::copy(from, &partial).map_err(io(from))?;
        std::fs::rename(&partial, to).map_err(io(to))?;
    }
    Voice::open(&target_model)
}
