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
    let mut found: Vec<VoiceSummary> = Vec::new();
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
                    found.push(VoiceSummary::of(&voice));
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

/// Copies a voice (`NAME.onnx` with `NAME.onnx.json` beside it) into the installed-voices
/// folder after checking its configuration. Files are written under temporary names and
/// renamed, so an interrupted install leaves no half voice.
pub fn install_voice(model: &Path) -> Result<Voice, VoiceError> {
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
