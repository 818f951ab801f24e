//! M4B (AAC in MP4, the audiobook container) through ffmpeg, with MP4 chapters.
//!
//! PCM streams into an ffmpeg child encoding AAC into a scratch `.m4a`; `finish` remuxes it
//! (no re-encoding) with an ffmetadata chapter list into the output.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use super::{scratch_dir, to_i16, AudioEncoder, ChapterMark};
use crate::AudioError;

const BITRATE: &str = "64k";

/// The ffmpeg to run: `$VOXPROOF_FFMPEG`, else `ffmpeg` on the PATH.
pub(super) fn ffmpeg() -> Result<PathBuf, AudioError> {
    let chosen = match std::env::var_os("VOXPROOF_FFMPEG").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("ffmpeg"))
            .find(|candidate| candidate.is_file()),
    };
    chosen.ok_or_else(|| {
            AudioError::Unsupported(
                "M4B output needs ffmpeg, which is not installed (apt-get install ffmpeg, or set VOXPROOF_FFMPEG)"
                    .into(),
            )
        })
}

fn failed(what: impl std::fmt::Display) -> AudioError {
    AudioError::Encode(format!("M4B: {what}"))
}

pub(super) struct M4bEncoder {
    ffmpeg: PathBuf,
    /// The encoding ffmpeg, until `finish` waits for it.
    child: Option<Child>,
    stdin: Option<BufWriter<ChildStdin>>,
    scratch: tempfile::TempPath,
    out: PathBuf,
    pcm: Vec<u8>,
}

impl M4bEncoder {
    pub(super) fn new(path: &Path, sample_rate: u32) -> Result<Self, AudioError> {
        let ffmpeg = ffmpeg()?;
        let scratch = tempfile::Builder::new()
            .suffix(".m4a")
            .tempfile_in(scratch_dir(path))?
            .into_temp_path();
        let rate = sample_rate.to_string();
        let mut child = Command::new(&ffmpeg)
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "s16le", "-ar", &rate, "-ac", "1", "-i", "pipe:0"])
            .args(["-c:a", "aac", "-b:a", BITRATE, "-f", "mp4"])
            .arg(&*scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot start {}: {e}", ffmpeg.display())))?;
        let stdin = child.stdin.take().map(BufWriter::new);
        Ok(Self {
            ffmpeg,
            child: Some(child),
            stdin,
            scratch,
            out: path.to_path_buf(),
            pcm: Vec::new(),
        })
    }
}

impl Drop for M4bEncoder {
    fn drop(&mut self) {
        // An abandoned encoder must not leave ffmpeg running.
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl AudioEncoder for M4bEncoder {
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.pcm.clear();
        self.pcm
            .extend(samples.iter().flat_map(|&s| to_i16(s).to_le_bytes()));
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| failed("ffmpeg input already closed"))?;
        stdin
            .write_all(&self.pcm)
            .map_err(|e| failed(format!("ffmpeg stopped reading: {e}")))
    }

    fn finish(mut self: Box<Self>, chapters: &[ChapterMark]) -> Result<(), AudioError> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.flush()?;
        }
        let child = self
            .child
            .take()
            .ok_or_else(|| failed("ffmpeg already finished"))?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            return Err(failed(format!(
                "ffmpeg failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let mut metadata = tempfile::Builder::new().suffix(".ffmeta").tempfile()?;
        metadata.write_all(ffmetadata(chapters).as_bytes())?;
        metadata.flush()?;
        let output = Command::new(&self.ffmpeg)
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(&*self.scratch)
            .args(["-f", "ffmetadata", "-i"])
            .arg(metadata.path())
            .args([
                "-map",
                "0:a",
                "-map_metadata",
                "1",
                "-map_chapters",
                "1",
                "-c",
                "copy",
            ])
            .args(["-movflags", "+faststart", "-f", "ipod"])
            .arg(&self.out)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(format!("cannot start {}: {e}", self.ffmpeg.display())))?;
        if !output.status.success() {
            return Err(failed(format!(
                "ffmpeg could not add chapters: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// ffmpeg's metadata file format with one `[CHAPTER]` per chapter.
fn ffmetadata(chapters: &[ChapterMark]) -> String {
    let escape = |s: &str| {
        s.chars().fold(String::new(), |mut out, c| {
            if matches!(c, '=' | ';' | '#' | '\\' | '\n') {
                out.push('\\');
            }
            out.push(c);
            out
        })
    };
    let mut text = format!(
        ";FFMETADATA1\nencoder=voxproof {}\n",
        env!("CARGO_PKG_VERSION")
    );
    for chapter in chapters {
        text.push_str(&format!(
            "[CHAPTER]\nTIMEBASE=1/1000\nSTART={}\nEND={}\ntitle={}\n",
            chapter.start_ms,
            chapter.end_ms.max(chapter.start_ms + 1),
            escape(&chapter.title)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chapter_titles_are_escaped() {
        let text = ffmetadata(&[ChapterMark {
            title: "A=B; #1".into(),
            start_ms: 0,
            end_ms: 500,
        }]);
        assert!(
            text.ends_with("[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=A\\=B\\; \\#1\n"),
            "{text}"
        );
    }
}
