//! Piper voices: loading `NAME.onnx` + `NAME.onnx.json`, phonemizing with espeak-ng 1.52 the
//! way Piper does, and running the model on ONNX Runtime.

mod config;
pub mod espeak;
mod ids;
mod library;
pub mod paths;
mod runtime;

use std::path::{Path, PathBuf};

pub use config::{InferenceConfig, VoiceConfig};
pub use espeak::Espeak;
pub use ids::phonemes_to_ids;
pub use library::{
    install_voice, list_voices, local_voices, model_sha256, model_sha256_cached, VoiceSummary,
};
pub use runtime::{
    check_provider, environment, ExecutionProvider, ModelInputs, PoolOptions, VoiceModel,
};

#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error("unknown voice {name:?}; installed voices: {known}")]
    UnknownVoice { name: String, known: String },
    #[error("voice {path}: {message}")]
    BadVoice { path: PathBuf, message: String },
    #[error("voice {voice} has no speaker {speaker:?}; speakers: {known}")]
    UnknownSpeaker {
        voice: String,
        speaker: String,
        known: String,
    },
    #[error("espeak-ng: {0}")]
    Espeak(String),
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A piece of text to speak: plain words for espeak-ng, or phonemes given directly (IPA from
/// a lexicon or SSML `<phoneme>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spoken<'a> {
    Words(&'a str),
    Phonemes(&'a str),
}

/// A voice on disk: model path and parsed configuration.
#[derive(Debug, Clone)]
pub struct Voice {
    pub name: String,
    pub model_path: PathBuf,
    pub config: VoiceConfig,
}

impl Voice {
    /// Opens a voice by name (searching [`paths::voice_dirs`]) or by path to its `.onnx`.
    pub fn find(name_or_path: &str) -> Result<Voice, VoiceError> {
        let as_path = Path::new(name_or_path);
        if name_or_path.ends_with(".onnx") && as_path.is_file() {
            return Voice::open(as_path);
        }
        for dir in paths::voice_dirs() {
            let model = dir.join(format!("{name_or_path}.onnx"));
            if model.is_file() {
                return Voice::open(&model);
            }
        }
        let known: Vec<String> = list_voices().into_iter().map(|v| v.name).collect();
        Err(VoiceError::UnknownVoice {
            name: name_or_path.to_string(),
            known: if known.is_empty() {
                "none (run scripts/setup)".into()
            } else {
                known.join(", ")
            },
        })
    }

    /// Opens `NAME.onnx` with its `NAME.onnx.json` beside it.
    pub fn open(model_path: &Path) -> Result<Voice, VoiceError> {
        let config_path = PathBuf::from(format!("{}.json", model_path.display()));
        let bad = |message: String| VoiceError::BadVoice {
            path: model_path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| bad(format!("cannot read {}: {e}", config_path.display())))?;
        let config: VoiceConfig = serde_json::from_str(&text)
            .map_err(|e| bad(format!("invalid {}: {e}", config_path.display())))?;
        if config.phoneme_type != "espeak" {
            return Err(bad(format!(
                "phoneme_type {:?} is not supported (only espeak)",
                config.phoneme_type
            )));
        }
        if config.audio.sample_rate == 0 {
            return Err(bad("sample_rate is 0".into()));
        }
        for marker in [ids::BOS, ids::EOS, ids::PAD] {
            if !config.phoneme_id_map.contains_key(marker) {
                return Err(bad(format!("phoneme_id_map lacks {marker:?}")));
            }
        }
        let name = model_path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".onnx"))
            .ok_or_else(|| bad("file name must end in .onnx".into()))?
            .to_string();
        Ok(Voice {
            name,
            model_path: model_path.to_path_buf(),
            config,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.audio.sample_rate
    }

    /// Resolves a speaker given by name or number; `None` for single-speaker voices.
    pub fn speaker_id(&self, speaker: Option<&str>) -> Result<Option<i64>, VoiceError> {
        let speakers = self.config.num_speakers;
        let Some(speaker) = speaker else {
            return Ok((speakers > 1).then_some(0));
        };
        let unknown = || VoiceError::UnknownSpeaker {
            voice: self.name.clone(),
            speaker: speaker.to_string(),
            known: if speakers <= 1 {
                "none (single-speaker voice)".into()
            } else {
                let names: Vec<&str> = self
                    .config
                    .speaker_id_map
                    .keys()
                    .map(String::as_str)
                    .collect();
                format!("0..{} {}", speakers - 1, names.join(", "))
            },
        };
        if speakers <= 1 {
            return Err(unknown());
        }
        if let Some(id) = self.config.speaker_id_map.get(speaker) {
            return Ok(Some(*id));
        }
        match speaker.parse::<i64>() {
            Ok(id) if (0..i64::from(speakers)).contains(&id) => Ok(Some(id)),
            _ => Err(unknown()),
        }
    }

    /// Phonemizes pieces into Piper's per-sentence phoneme lists. Direct phonemes join the
    /// sentence they stand in, separated by spaces like words.
    pub fn phonemize(
        &self,
        espeak: &Espeak,
        pieces: &[Spoken<'_>],
    ) -> Result<Vec<Vec<String>>, VoiceError> {
        let mut sentences: Vec<Vec<String>> = Vec::new();
        let mut open = false; // whether the last sentence may still take phonemes
        for piece in pieces {
            match piece {
                Spoken::Words(text) => {
                    if text.trim().is_empty() {
                        continue;
                    }
                    let clauses = espeak.clauses(&self.config.espeak.voice, text)?;
                    let ends_open = clauses.last().is_some_and(|c| !c.ends_sentence);
                    let mut new =
                        espeak::sentences_from_clauses(&clauses, &self.config.vowel_clusters);
                    if open && !new.is_empty() {
                        let first = new.remove(0);
                        if let Some(last) = sentences.last_mut() {
                            last.push(" ".into());
                            last.extend(first);
                        }
                    }
                    sentences.extend(new);
                    open = ends_open;
                }
                Spoken::Phonemes(ipa) => {
                    use unicode_normalization::UnicodeNormalization;
                    let phonemes: Vec<String> = ipa.trim().nfd().map(String::from).collect();
                    if phonemes.is_empty() {
                        continue;
                    }
                    match sentences.last_mut() {
                        Some(last) if open => {
                            last.push(" ".into());
                            last.extend(phonemes);
                        }
                        _ => sentences.push(phonemes),
                    }
                    open = true;
                }
            }
        }
        sentences.retain(|s| !s.is_empty());
        Ok(sentences)
    }

    /// Model input ids for one sentence of phonemes, and how many phonemes were unknown.
    pub fn ids(&self, phonemes: &[String]) -> (Vec<i64>, usize) {
        phonemes_to_ids(phonemes, &self.config.phoneme_id_map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(config: serde_json::Value) -> Voice {
        Voice {
            name: "test".into(),
            model_path: "test.onnx".into(),
            config: serde_json::from_value(config).unwrap(),
        }
    }

    fn config(speakers: u32, names: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "audio": {"sample_rate": 22050},
            "espeak": {"voice": "en-us"},
            "phoneme_id_map": {"^": [1], "$": [2], "_": [0]},
            "num_speakers": speakers,
            "speaker_id_map": names,
        })
    }

    #[test]
    fn multi_speaker_voices_take_a_name_or_number() {
        let v = voice(config(3, serde_json::json!({"alice": 0, "bob": 2})));
        assert_eq!(v.speaker_id(None).unwrap(), Some(0));
        assert_eq!(v.speaker_id(Some("bob")).unwrap(), Some(2));
        assert_eq!(v.speaker_id(Some("1")).unwrap(), Some(1));
        let err = v.speaker_id(Some("3")).unwrap_err().to_string();
        assert_eq!(
            err,
            "voice test has no speaker \"3\"; speakers: 0..2 alice, bob"
        );
        assert!(v.speaker_id(Some("carol")).is_err());
    }

    #[test]
    fn single_speaker_voices_take_none() {
        let v = voice(config(1, serde_json::json!({})));
        assert_eq!(v.speaker_id(None).unwrap(), None);
        assert!(v
            .speaker_id(Some("0"))
            .unwrap_err()
            .to_string()
            .contains("single-speaker"));
    }
}
