//! Voices as job requests need them: the configuration and the model's digest, read from
//! disk at most once every few seconds per name. Reading and parsing a voice's JSON on every
//! request was a large share of the cost of accepting a job; a voice installed or replaced
//! on disk is seen within `ttl`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voxproof_voice::Voice;

use crate::ApiError;

/// Names kept at most; only voices that exist are cached, so this bounds nothing a client
/// controls, but a deployment with very many voices starts over rather than growing.
const MAX_ENTRIES: usize = 256;

/// A voice and the SHA-256 of its model.
#[derive(Debug)]
pub struct CachedVoice {
    pub voice: Voice,
    pub model_sha256: String,
}

#[derive(Debug)]
pub struct VoiceCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<CachedVoice>)>>,
}

impl VoiceCache {
    pub fn new(ttl: Duration) -> Self {
        VoiceCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The voice called `name`. Blocking (it may read files): call it off the async threads.
    pub fn get(&self, name: &str) -> Result<Arc<CachedVoice>, ApiError> {
        if let Some((checked, cached)) = self.entries.lock().expect("voice cache").get(name) {
            if checked.elapsed() < self.ttl {
                return Ok(cached.clone());
            }
        }
        let voice = Voice::find(name)
            .map_err(|e| ApiError::unprocessable("unknown_voice", e.to_string()))?;
        let model_sha256 = voxproof_voice::model_sha256_cached(&voice.model_path)
            .map_err(|e| anyhow::anyhow!("voice model digest: {e}"))?;
        let cached = Arc::new(CachedVoice {
            voice,
            model_sha256,
        });
        let mut entries = self.entries.lock().expect("voice cache");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(name.to_string(), (Instant::now(), cached.clone()));
        Ok(cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_voice_is_refused_and_not_cached() {
        let cache = VoiceCache::new(Duration::from_secs(60));
        let error = cache.get("no-such-voice-anywhere").unwrap_err();
        assert_eq!(error.code, "unknown_voice");
        assert!(cache.entries.lock().unwrap().is_empty());
    }
}
