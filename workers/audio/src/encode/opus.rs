//! Ogg Opus through libopus: 48 kHz (resampled from the voice's rate), mono, 32 kbit/s,
//! with Vorbis-comment chapters in OpusTags.
//!
//! OpusTags must come before the audio and chapter times are known only at the end, so
//! encoded packets go to a scratch file and `finish` muxes headers and packets into pages.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rubato::{FftFixedInOut, Resampler};

use super::ogg::OggWriter;
use super::{scratch_dir, vorbis_chapter_comments, vorbis_comment_body, AudioEncoder, ChapterMark};
use crate::AudioError;

const OPUS_RATE: u32 = 48_000;
/// 20 ms frames: the usual choice for speech at this bit rate.
const FRAME: usize = 960;
const BITRATE: i32 = 32_000;
/// Pages are closed about once a second of audio.
const PACKETS_PER_PAGE: usize = 50;

fn failed(what: impl std::fmt::Display) -> AudioError {
    AudioError::Encode(format!("Opus: {what}"))
}

pub(super) struct OpusEncoder {
    opus: opus::Encoder,
    resampler: Option<Resampling>,
    /// 48 kHz samples waiting to fill a frame.
    pending: Vec<f32>,
    scratch: BufWriter<File>,
    out: PathBuf,
    input_rate: u32,
    pre_skip: u16,
    /// Samples received, at the voice's rate.
    input_samples: u64,
    packets: u64,
    packet: Vec<u8>,
}

struct Resampling {
    resampler: FftFixedInOut<f32>,
    input: Vec<f32>,
    /// Output samples still to drop: the resampler's delay.
    to_skip: usize,
}

impl Resampling {
    fn new(from: u32) -> Result<Self, AudioError> {
        let resampler = FftFixedInOut::<f32>::new(from as usize, OPUS_RATE as usize, 1024, 1)
            .map_err(failed)?;
        let to_skip = resampler.output_delay();
        Ok(Self {
            resampler,
            input: Vec::new(),
            to_skip,
        })
    }

    /// Resamples what full chunks `samples` completes into `out`.
    fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.input.extend_from_slice(samples);
        loop {
            let need = self.resampler.input_frames_next();
            if self.input.len() < need {
                return Ok(());
            }
            let chunk: Vec<f32> = self.input.drain(..need).collect();
            let resampled = self.resampler.process(&[chunk], None).map_err(failed)?;
            let produced = &resampled[0];
            let skip = self.to_skip.min(produced.len());
            self.to_skip -= skip;
            out.extend_from_slice(&produced[skip..]);
        }
    }

    /// Flushes the tail: zeros push the last real samples (and the delay) through.
    fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let padding = self.resampler.input_frames_next() * 2 + self.to_skip;
        self.push(&vec![0.0; padding], out)
    }
}

impl OpusEncoder {
    pub(super) fn new(path: &Path, sample_rate: u32) -> Result<Self, AudioError> {
        let mut opus =
            opus::Encoder::new(OPUS_RATE, opus::Channels::Mono, opus::Application::Audio)
                .map_err(failed)?;
        opus.set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(failed)?;
        let pre_skip = u16::try_from(opus.get_lookahead().map_err(failed)?).map_err(failed)?;
        let resampler = if sample_rate == OPUS_RATE {
            None
        } else {
            Some(Resampling::new(sample_rate)?)
        };
        Ok(Self {
            opus,
            resampler,
            pending: Vec::new(),
            scratch: BufWriter::new(tempfile::tempfile_in(scratch_dir(path))?),
            out: path.to_path_buf(),
            input_rate: sample_rate,
            pre_skip,
            input_samples: 0,
            packets: 0,
            packet: vec![0; 4000],
        })
    }

    /// Encodes every full frame waiting in `pending` (all of it, padded, when `last`).
    fn encode_pending(&mut self, last: bool) -> Result<(), AudioError> {
        if last {
            // The encoder's lookahead means its final samples appear one frame later.
            let padded = self.pending.len().div_ceil(FRAME) * FRAME + FRAME;
            self.pending.resize(padded, 0.0);
        }
        let frames = self.pending.len() / FRAME;
        for frame in self.pending.chunks_exact(FRAME).take(frames) {
            let size = self
                .opus
                .encode_float(frame, &mut self.packet)
                .map_err(failed)?;
            self.scratch.write_all(&(size as u16).to_le_bytes())?;
            self.scratch.write_all(&self.packet[..size])?;
            self.packets += 1;
        }
        self.pending.drain(..frames * FRAME);
        Ok(())
    }

    fn head(&self) -> Vec<u8> {
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&self.pre_skip.to_le_bytes());
        head.extend_from_slice(&self.input_rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family: mono/stereo
        head
    }
}

impl AudioEncoder for OpusEncoder {
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.input_samples += samples.len() as u64;
        match self.resampler.as_mut() {
            Some(resampling) => resampling.push(samples, &mut self.pending)?,
            None => self.pending.extend_from_slice(samples),
        }
        self.encode_pending(false)
    }

    fn finish(mut self: Box<Self>, chapters: &[ChapterMark]) -> Result<(), AudioError> {
        if let Some(mut resampling) = self.resampler.take() {
            resampling.flush(&mut self.pending)?;
        }
        // The true length at 48 kHz; the final granule position trims the padding after it.
        let real_48k =
            (self.input_samples * u64::from(OPUS_RATE)).div_ceil(u64::from(self.input_rate));
        self.encode_pending(true)?;
        let head = self.head();
        let scratch = self
            .scratch
            .into_inner()
            .map_err(|e| AudioError::Io(e.into_error()))?;

        let mut ogg = OggWriter::new(BufWriter::new(File::create(&self.out)?), 0x766F_7870);
        let pre_skip = u64::from(self.pre_skip);
        ogg.packet(&head, 0)?;
        ogg.end_page(false)?;
        let mut comments =
            vec![concat!("ENCODER=voxproof ", env!("CARGO_PKG_VERSION")).to_string()];
        comments.extend(vorbis_chapter_comments(chapters));
        let mut tags = b"OpusTags".to_vec();
        tags.extend(vorbis_comment_body(&comments));
        ogg.packet(&tags, 0)?;
        ogg.end_page(false)?;

        let end_granule = pre_skip + real_48k;
        let mut reader = BufReader::new(scratch);
        reader.rewind()?;
        let mut packet = Vec::new();
        for n in 1..=self.packets {
            let mut size = [0u8; 2];
            reader.read_exact(&mut size)?;
            packet.resize(u16::from_le_bytes(size) as usize, 0);
            reader.read_exact(&mut packet)?;
            // Granules count decoded samples, the pre-skip priming included (RFC 7845 §4).
            let granule = (n * FRAME as u64).min(end_granule);
            let last = n == self.packets;
            ogg.packet(&packet, if last { end_granule } else { granule })?;
            if last {
                ogg.end_page(true)?;
            } else if n.is_multiple_of(PACKETS_PER_PAGE as u64) || ogg.pending_segments() > 240 {
                ogg.end_page(false)?;
            }
        }
        ogg.into_inner().flush()?;
        Ok(())
    }
}
