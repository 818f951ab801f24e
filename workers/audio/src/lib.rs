//! Audio for audiobooks: mastering (consistent loudness, peak ceiling, room tone) and
//! encoders that stream PCM into WAV and MP3 files with chapter metadata.

pub mod encode;
pub mod master;

pub use encode::{encoder, AudioEncoder, AudioFormat, ChapterMark};
pub use master::{Loudness, LoudnessMeter, Master, MasteringSettings};

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{0}")]
    Unsupported(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
