//! WAV: 16-bit PCM. (RIFF has no chapter convention that players read.)

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use super::{to_i16, AudioEncoder, ChapterMark};
use crate::AudioError;

pub(super) struct WavEncoder {
    writer: hound::WavWriter<BufWriter<File>>,
}

impl WavEncoder {
    pub(super) fn new(path: &Path, sample_rate: u32) -> Result<Self, AudioError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::new(BufWriter::new(File::create(path)?), spec)
            .map_err(|e| AudioError::Encode(e.to_string()))?;
        Ok(Self { writer })
    }
}

impl AudioEncoder for WavEncoder {
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        let mut writer = self.writer.get_i16_writer(samples.len() as u32);
        for &s in samples {
            writer.write_sample(to_i16(s));
        }
        writer
            .flush()
            .map_err(|e| AudioError::Encode(e.to_string()))
    }

    fn finish(self: Box<Self>, _chapters: &[ChapterMark]) -> Result<(), AudioError> {
        self.writer
            .finalize()
            .map_err(|e| AudioError::Encode(e.to_string()))
    }
}
