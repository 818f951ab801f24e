//! A Piper voice's `NAME.onnx.json`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The parts of a Piper voice configuration the engine uses.
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    pub audio: AudioConfig,
    pub espeak: EspeakConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    #[serde(default = "default_phoneme_type")]
    pub phoneme_type: String,
    pub phoneme_id_map: BTreeMap<String, Vec<i64>>,
    #[serde(default)]
    pub num_speakers: u32,
    #[serde(default)]
    pub speaker_id_map: BTreeMap<String, i64>,
    #[serde(default)]
    pub vowel_clusters: Vec<Vec<String>>,
    #[serde(default)]
    pub language: Option<LanguageInfo>,
    #[serde(default)]
    pub dataset: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AudioConfig {
    pub sample_rate: u32,
    #[serde(default)]
    pub quality: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EspeakConfig {
    pub voice: String,
}

/// Default scales the voice was trained to sound best with.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InferenceConfig {
    #[serde(default = "default_noise_scale")]
    pub noise_scale: f32,
    #[serde(default = "default_length_scale")]
    pub length_scale: f32,
    #[serde(default = "default_noise_w")]
    pub noise_w: f32,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            noise_scale: default_noise_scale(),
            length_scale: default_length_scale(),
            noise_w: default_noise_w(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LanguageInfo {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name_english: Option<String>,
}

fn default_phoneme_type() -> String {
    "espeak".into()
}
fn default_noise_scale() -> f32 {
    0.667
}
fn default_length_scale() -> f32 {
    1.0
}
fn default_noise_w() -> f32 {
    0.8
}
