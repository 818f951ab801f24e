//! Sentence and chapter timestamps: WebVTT, SRT and the JSON marks file.

use std::fmt::Write;

/// A timed sentence or chapter start.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mark {
    pub time_ms: u64,
    #[serde(rename = "type")]
    pub kind: MarkKind,
    /// Byte offsets of `value` in the normalized input.
    pub start: usize,
    pub end: usize,
    pub value: String,
    /// When the sentence's audio ends (not part of the marks file).
    #[serde(skip)]
    pub end_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkKind {
    Sentence,
    Chapter,
}

/// Subtitle file flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubtitleFormat {
    WebVtt,
    Srt,
}

impl SubtitleFormat {
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "vtt" => Some(Self::WebVtt),
            "srt" => Some(Self::Srt),
            _ => None,
        }
    }
}

fn timestamp(ms: u64, decimal: char) -> String {
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{decimal}{ms:03}")
}

/// Subtitles with one cue per sentence.
pub fn subtitles(marks: &[Mark], format: SubtitleFormat) -> String {
    let mut out = String::new();
    if format == SubtitleFormat::WebVtt {
        out.push_str("WEBVTT\n\n");
    }
    let decimal = if format == SubtitleFormat::WebVtt {
        '.'
    } else {
        ','
    };
    for (n, mark) in marks
        .iter()
        .filter(|m| m.kind == MarkKind::Sentence)
        .enumerate()
    {
        if format == SubtitleFormat::Srt {
            let _ = writeln!(out, "{}", n + 1);
        }
        let text = mark.value.replace("-->", "->");
        let text = if format == SubtitleFormat::WebVtt {
            text.replace('&', "&amp;").replace('<', "&lt;")
        } else {
            text
        };
        let _ = writeln!(
            out,
            "{} --> {}\n{}\n",
            timestamp(mark.time_ms, decimal),
            timestamp(mark.end_ms, decimal),
            text
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(t: u64, end: u64, value: &str) -> Mark {
        Mark {
            time_ms: t,
            kind: MarkKind::Sentence,
            start: 0,
            end: value.len(),
            value: value.into(),
            end_ms: end,
        }
    }

    #[test]
    fn vtt_and_srt() {
        let marks = [
            mark(0, 1500, "Hello <world>."),
            mark(3_723_004, 3_724_000, "Later."),
        ];
        assert_eq!(
            subtitles(&marks, SubtitleFormat::WebVtt),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello &lt;world>.\n\n01:02:03.004 --> 01:02:04.000\nLater.\n\n"
        );
        assert!(subtitles(&marks, SubtitleFormat::Srt)
            .starts_with("1\n00:00:00,000 --> 00:00:01,500\nHello <world>.\n\n2\n"));
    }
}
