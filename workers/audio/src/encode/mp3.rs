//! MP3 through LAME, with ID3v2.4 chapters (CTOC + CHAP frames).

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::mem::MaybeUninit;
use std::path::Path;

use super::{scratch_dir, to_i16, AudioEncoder, ChapterMark};
use crate::AudioError;

/// MP3 through LAME (mono, 64 kbit/s CBR: the usual audiobook setting). The ID3v2 tag with
/// CHAP/CTOC frames must precede the audio, and chapter times are known only at the end, so
/// frames go to a scratch file first and are copied behind the tag in `finish`.
pub(super) struct Mp3Encoder {
    lame: mp3lame_encoder::Encoder,
    scratch: BufWriter<File>,
    out: File,
    pcm: Vec<i16>,
    mp3: Vec<u8>,
}

impl Mp3Encoder {
    pub(super) fn new(path: &Path, sample_rate: u32) -> Result<Self, AudioError> {
        let out = File::create(path)?;
        use mp3lame_encoder::{Bitrate, Builder, Quality};
        let err = |e: mp3lame_encoder::BuildError| AudioError::Encode(format!("LAME: {e:?}"));
        let mut builder =
            Builder::new().ok_or_else(|| AudioError::Encode("LAME could not start".into()))?;
        builder.set_num_channels(1).map_err(err)?;
        builder.set_sample_rate(sample_rate).map_err(err)?;
        builder.set_brate(Bitrate::Kbps64).map_err(err)?;
        builder.set_quality(Quality::Good).map_err(err)?;
        let lame = builder.build().map_err(err)?;
        let scratch = BufWriter::new(tempfile::tempfile_in(scratch_dir(path))?);
        Ok(Self {
            lame,
            scratch,
            out,
            pcm: Vec::new(),
            mp3: Vec::new(),
        })
    }
}

impl AudioEncoder for Mp3Encoder {
    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.pcm.clear();
        self.pcm.extend(samples.iter().map(|&s| to_i16(s)));
        self.mp3.clear();
        self.mp3
            .reserve(mp3lame_encoder::max_required_buffer_size(self.pcm.len()));
        let written = self
            .lame
            .encode(
                mp3lame_encoder::MonoPcm(&self.pcm),
                self.mp3.spare_capacity_mut(),
            )
            .map_err(|e| AudioError::Encode(format!("LAME: {e:?}")))?;
        // SAFETY: LAME initialized `written` bytes of the spare capacity.
        unsafe { self.mp3.set_len(written) };
        self.scratch.write_all(&self.mp3).map_err(AudioError::Io)
    }

    fn finish(mut self: Box<Self>, chapters: &[ChapterMark]) -> Result<(), AudioError> {
        self.mp3.clear();
        self.mp3.reserve(7200);
        let tail: &mut [MaybeUninit<u8>] = self.mp3.spare_capacity_mut();
        let written = self
            .lame
            .flush::<mp3lame_encoder::FlushNoGap>(tail)
            .map_err(|e| AudioError::Encode(format!("LAME: {e:?}")))?;
        // SAFETY: LAME initialized `written` bytes of the spare capacity.
        unsafe { self.mp3.set_len(written) };
        self.scratch.write_all(&self.mp3).map_err(AudioError::Io)?;
        let mut scratch = self
            .scratch
            .into_inner()
            .map_err(|e| AudioError::Io(e.into_error()))?;
        scratch.rewind().map_err(AudioError::Io)?;

        let mut out = BufWriter::new(self.out);
        id3_tag(chapters)
            .write_to(&mut out, id3::Version::Id3v24)
            .map_err(|e| AudioError::Encode(format!("ID3: {e}")))?;
        std::io::copy(&mut scratch, &mut out).map_err(AudioError::Io)?;
        out.flush().map_err(AudioError::Io)
    }
}

/// An ID3v2.4 tag with a table of contents (CTOC) and one CHAP frame per chapter.
fn id3_tag(chapters: &[ChapterMark]) -> id3::Tag {
    use id3::frame::{Chapter, TableOfContents};
    use id3::TagLike;
    let mut tag = id3::Tag::new();
    tag.set_text("TSSE", concat!("voxproof ", env!("CARGO_PKG_VERSION")));
    if chapters.is_empty() {
        return tag;
    }
    let ids: Vec<String> = (0..chapters.len()).map(|i| format!("chp{i}")).collect();
    tag.add_frame(TableOfContents {
        element_id: "toc".into(),
        top_level: true,
        ordered: true,
        elements: ids.clone(),
        frames: Vec::new(),
    });
    for (chapter, id) in chapters.iter().zip(ids) {
        let title = id3::Frame::text("TIT2", chapter.title.clone());
        tag.add_frame(Chapter {
            element_id: id,
            start_time: u32::try_from(chapter.start_ms).unwrap_or(u32::MAX),
            end_time: u32::try_from(chapter.end_ms).unwrap_or(u32::MAX),
            start_offset: u32::MAX,
            end_offset: u32::MAX,
            frames: vec![title],
        });
    }
    tag
}
