//! Encoders from mono f32 PCM to files, with chapter metadata where the format has it.

mod flac;
mod m4b;
mod mp3;
mod ogg;
mod opus;
mod wav;

use std::path::Path;

use crate::AudioError;

/// Output container/codec, chosen from the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Wav,
    Mp3,
    Flac,
    Opus,
    M4b,
}

impl AudioFormat {
    pub fn from_path(path: &Path) -> Result<Self, AudioError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "wav" => Ok(Self::Wav),
            "mp3" => Ok(Self::Mp3),
            "flac" => Ok(Self::Flac),
            "opus" | "ogg" => Ok(Self::Opus),
            "m4b" | "m4a" => Ok(Self::M4b),
            _ => Err(AudioError::Unsupported(format!(
                "cannot tell the audio format from {:?}; use a .wav, .mp3, .flac, .opus or .m4b file name",
                path.display().to_string()
            ))),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Mp3 => "mp3",
            Self::Flac => "flac",
            Self::Opus => "opus",
            Self::M4b => "m4b",
        }
    }
}

/// A chapter of the finished program.
#[derive(Debug, Clone, PartialEq)]
pub struct ChapterMark {
    pub title: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Streams PCM into a file. `finish` completes the file; dropping an unfinished encoder
/// leaves its (temporary) file incomplete, for the caller to discard.
pub trait AudioEncoder: Send {
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError>;
    fn finish(self: Box<Self>, chapters: &[ChapterMark]) -> Result<(), AudioError>;
}

/// Opens an encoder writing `format` to the file at `path` (created or truncated).
pub fn encoder(
    format: AudioFormat,
    path: &Path,
    sample_rate: u32,
) -> Result<Box<dyn AudioEncoder>, AudioError> {
    Ok(match format {
        AudioFormat::Wav => Box::new(wav::WavEncoder::new(path, sample_rate)?),
        AudioFormat::Mp3 => Box::new(mp3::Mp3Encoder::new(path, sample_rate)?),
        AudioFormat::Flac => Box::new(flac::FlacEncoder::new(path, sample_rate)?),
        AudioFormat::Opus => Box::new(opus::OpusEncoder::new(path, sample_rate)?),
        AudioFormat::M4b => Box::new(m4b::M4bEncoder::new(path, sample_rate)?),
    })
}

/// Checks that what `format` needs outside this process is there (ffmpeg for M4B).
pub fn check_available(format: AudioFormat) -> Result<(), AudioError> {
    match format {
        AudioFormat::M4b => m4b::ffmpeg().map(|_| ()),
        _ => Ok(()),
    }
}

/// The folder for an encoder's scratch files: beside the output, on a disk that has room
/// for it, never in a `/tmp` that may be memory.
fn scratch_dir(output: &Path) -> &Path {
    output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `H:MM:SS.mmm`-style stamp with two-digit hours.
fn clock(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Vorbis-comment chapters (the Xiph chapter extension, read by ffmpeg and most players):
/// `CHAPTER001=00:00:00.000` and `CHAPTER001NAME=Title`.
fn vorbis_chapter_comments(chapters: &[ChapterMark]) -> Vec<String> {
    let mut comments = Vec::with_capacity(chapters.len() * 2);
    for (i, chapter) in chapters.iter().enumerate() {
        comments.push(format!("CHAPTER{:03}={}", i + 1, clock(chapter.start_ms)));
        comments.push(format!("CHAPTER{:03}NAME={}", i + 1, chapter.title));
    }
    comments
}

/// The body of a Vorbis comment block (FLAC's VORBIS_COMMENT, Opus's OpusTags after its
/// magic): vendor string, then `KEY=value` comments, all length-prefixed little-endian.
fn vorbis_comment_body(comments: &[String]) -> Vec<u8> {
    let vendor = concat!("voxproof ", env!("CARGO_PKG_VERSION"));
    let mut body = Vec::new();
    body.extend((vendor.len() as u32).to_le_bytes());
    body.extend(vendor.as_bytes());
    body.extend((comments.len() as u32).to_le_bytes());
    for comment in comments {
        body.extend((comment.len() as u32).to_le_bytes());
        body.extend(comment.as_bytes());
    }
    body
}

fn to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32767.0).round() as i16
}
