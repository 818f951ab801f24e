//! FLAC through libFLAC (Debian's library), 16-bit, with Vorbis-comment chapters.
//!
//! libFLAC writes the stream (STREAMINFO first, rewritten at the end) to a scratch file;
//! `finish` then copies it behind a VORBIS_COMMENT block carrying the chapters, which are
//! only known once the whole program is rendered.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libflac_sys as ffi;

use super::{
    scratch_dir, to_i16, vorbis_chapter_comments, vorbis_comment_body, AudioEncoder, ChapterMark,
};
use crate::AudioError;

const BLOCK_VORBIS_COMMENT: u8 = 4;

pub(super) struct FlacEncoder {
    encoder: *mut ffi::FLAC__StreamEncoder,
    scratch: tempfile::TempPath,
    out: PathBuf,
    samples: Vec<i32>,
}

// SAFETY: the encoder is owned by this value alone and used from one thread at a time.
unsafe impl Send for FlacEncoder {}

fn failed(what: &str) -> AudioError {
    AudioError::Encode(format!("FLAC: {what}"))
}

impl FlacEncoder {
    pub(super) fn new(path: &Path, sample_rate: u32) -> Result<Self, AudioError> {
        let scratch = tempfile::NamedTempFile::new_in(scratch_dir(path))?.into_temp_path();
        let c_path =
            CString::new(scratch.as_os_str().as_bytes()).map_err(|_| failed("bad scratch path"))?;
        // SAFETY: plain libFLAC calls on an encoder we own; the path outlives init_file.
        unsafe {
            let encoder = ffi::FLAC__stream_encoder_new();
            if encoder.is_null() {
                return Err(failed("cannot create an encoder"));
            }
            let this = Self {
                encoder,
                scratch,
                out: path.to_path_buf(),
                samples: Vec::new(),
            };
            let configured = ffi::FLAC__stream_encoder_set_channels(encoder, 1) != 0
                && ffi::FLAC__stream_encoder_set_bits_per_sample(encoder, 16) != 0
                && ffi::FLAC__stream_encoder_set_sample_rate(encoder, sample_rate) != 0
                && ffi::FLAC__stream_encoder_set_compression_level(encoder, 5) != 0;
            if !configured {
                return Err(failed("cannot configure the encoder"));
            }
            let status = ffi::FLAC__stream_encoder_init_file(
                encoder,
                c_path.as_ptr(),
                None,
                std::ptr::null_mut(),
            );
            if status != ffi::FLAC__STREAM_ENCODER_INIT_STATUS_OK {
                return Err(failed(&format!(
                    "cannot start the encoder (status {status})"
                )));
            }
            Ok(this)
        }
    }
}

impl Drop for FlacEncoder {
    fn drop(&mut self) {
        // SAFETY: created by FLAC__stream_encoder_new and deleted exactly once.
        unsafe { ffi::FLAC__stream_encoder_delete(self.encoder) };
    }
}

impl AudioEncoder for FlacEncoder {
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.samples.clear();
        self.samples
            .extend(samples.iter().map(|&s| i32::from(to_i16(s))));
        // SAFETY: the buffer holds `len` interleaved (mono) samples.
        let ok = unsafe {
            ffi::FLAC__stream_encoder_process_interleaved(
                self.encoder,
                self.samples.as_ptr(),
                self.samples.len() as u32,
            )
        };
        if ok == 0 {
            return Err(failed("encoding failed"));
        }
        Ok(())
    }

    fn finish(self: Box<Self>, chapters: &[ChapterMark]) -> Result<(), AudioError> {
        // SAFETY: finishing flushes the last frames and rewrites STREAMINFO in the scratch file.
        if unsafe { ffi::FLAC__stream_encoder_finish(self.encoder) } == 0 {
            return Err(failed("could not finish the stream"));
        }
        let mut comments =
            vec![concat!("ENCODER=voxproof ", env!("CARGO_PKG_VERSION")).to_string()];
        comments.extend(vorbis_chapter_comments(chapters));
        insert_vorbis_comment(&self.scratch, &self.out, &vorbis_comment_body(&comments))
    }
}

/// Copies the FLAC stream at `from` to `to` with a VORBIS_COMMENT block as the last
/// metadata block.
fn insert_vorbis_comment(from: &Path, to: &Path, body: &[u8]) -> Result<(), AudioError> {
    let mut input = BufReader::new(File::open(from)?);
    let mut output = BufWriter::new(File::create(to)?);
    let mut magic = [0u8; 4];
    input.read_exact(&mut magic)?;
    if &magic != b"fLaC" {
        return Err(failed("the encoder wrote no FLAC stream"));
    }
    output.write_all(&magic)?;
    loop {
        let mut header = [0u8; 4];
        input.read_exact(&mut header)?;
        let last = header[0] & 0x80 != 0;
        let kind = header[0] & 0x7F;
        let length = u32::from_be_bytes([0, header[1], header[2], header[3]]) as u64;
        if kind == BLOCK_VORBIS_COMMENT {
            // libFLAC's own (vendor-only) comment block is replaced by ours.
            std::io::copy(&mut (&mut input).take(length), &mut std::io::sink())?;
        } else {
            output.write_all(&[kind, header[1], header[2], header[3]])?;
            std::io::copy(&mut (&mut input).take(length), &mut output)?;
        }
        if last {
            break;
        }
    }
    let length = u32::try_from(body.len())
        .ok()
        .filter(|&l| l < 1 << 24)
        .ok_or_else(|| failed("too many chapters"))?;
    output.write_all(&[0x80 | BLOCK_VORBIS_COMMENT])?;
    output.write_all(&length.to_be_bytes()[1..])?;
    output.write_all(body)?;
    std::io::copy(&mut input, &mut output)?;
    output.flush()?;
    Ok(())
}
