//! The parsed form of any input, and its flattening into chapters, sentences and pauses.

use std::ops::Range;

use crate::lexicon::{Lexicon, Piece};
use crate::normalize::{normalize, normalize_heading};
use crate::segment::{self, MAX_SENTENCE_BYTES};

/// A long document: chapters of paragraphs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    pub chapters: Vec<Chapter>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chapter {
    pub title: Option<String>,
    pub paragraphs: Vec<Paragraph>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paragraph {
    pub inlines: Vec<Inline>,
}

/// Content of a paragraph.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    /// Text to normalize and speak, at a speaking rate (1.0 = the voice's own).
    Text { text: String, rate: f32 },
    /// Text spoken exactly as written: no number or abbreviation rewriting (SSML `say-as`
    /// and `sub` results, which are already words).
    Verbatim { text: String, rate: f32 },
    /// IPA phonemes spoken as given; `text` is what subtitles show.
    Phonemes { ipa: String, text: String },
    /// Silence of a given length.
    Break { ms: u32 },
    /// The end of a sentence where punctuation may not show it (SSML `</s>`).
    SentenceEnd,
}

impl Paragraph {
    pub fn text(text: impl Into<String>) -> Self {
        Paragraph {
            inlines: vec![Inline::Text {
                text: text.into(),
                rate: 1.0,
            }],
        }
    }

    fn is_blank(&self) -> bool {
        self.inlines.iter().all(|i| match i {
            Inline::Text { text, .. } | Inline::Verbatim { text, .. } => text.trim().is_empty(),
            Inline::Phonemes { ipa, .. } => ipa.trim().is_empty(),
            Inline::Break { .. } => false,
            Inline::SentenceEnd => true,
        })
    }
}

impl Document {
    /// Drops empty paragraphs and chapters without content or title.
    pub fn tidy(mut self) -> Self {
        for chapter in &mut self.chapters {
            chapter.paragraphs.retain(|p| !p.is_blank());
            if chapter
                .title
                .as_deref()
                .is_some_and(|t| t.trim().is_empty())
            {
                chapter.title = None;
            }
        }
        self.chapters
            .retain(|c| c.title.is_some() || !c.paragraphs.is_empty());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.chapters
            .iter()
            .all(|c| c.paragraphs.is_empty() && c.title.is_none())
    }
}

/// One unit of the spoken stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A chapter begins; its title (if any) follows as a sentence.
    Chapter {
        index: usize,
        title: Option<String>,
    },
    Sentence(Sentence),
    /// Explicit silence (SSML `break`).
    Pause {
        ms: u32,
    },
}

/// A sentence (or a clause-bounded part of a long one) for one model call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sentence {
    /// Normalized text, as subtitles show it.
    pub text: String,
    /// Byte range of `text` in the normalized document text.
    pub span: Range<usize>,
    /// What to speak, after the lexicon.
    pub pieces: Vec<Piece>,
    /// Speaking rate relative to the voice's own.
    pub rate: f32,
    /// The last sentence of a paragraph (or a heading): a paragraph pause follows.
    pub ends_paragraph: bool,
}

/// A document as a stream of items, with the normalized text that sentence spans index.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub items: Vec<Item>,
    pub normalized_text: String,
}

impl Script {
    pub fn sentences(&self) -> impl Iterator<Item = &Sentence> {
        self.items.iter().filter_map(|i| match i {
            Item::Sentence(s) => Some(s),
            _ => None,
        })
    }

    pub fn chapter_count(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, Item::Chapter { .. }))
            .count()
    }
}

/// A paragraph's text with the positions of what is not plain words.
#[derive(Default)]
struct Flat {
    text: String,
    /// Byte ranges spoken as the given IPA.
    phonemes: Vec<(Range<usize>, String)>,
    /// Byte offsets where a break of `ms` stands.
    breaks: Vec<(usize, u32)>,
    /// Byte offsets where a rate takes effect.
    rates: Vec<(usize, f32)>,
    /// Byte offsets where a sentence must end.
    sentence_ends: Vec<usize>,
}

impl Flat {
    fn of(paragraph: &Paragraph) -> Flat {
        let mut flat = Flat::default();
        let mut rate = 1.0;
        for inline in &paragraph.inlines {
            match inline {
                Inline::Text { text, rate: r } | Inline::Verbatim { text, rate: r } => {
                    if *r != rate {
                        rate = *r;
                        flat.rates.push((flat.text.len(), rate));
                    }
                    let spoken = match inline {
                        Inline::Text { .. } => normalize(text),
                        _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
                    };
                    flat.push_spaced(&spoken);
                }
                Inline::Phonemes { ipa, text } => {
                    let shown = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    let shown = if shown.is_empty() {
                        "·".to_string()
                    } else {
                        shown
                    };
                    flat.push_spaced(&shown);
                    let start = flat.text.len() - shown.len();
                    flat.phonemes.push((start..flat.text.len(), ipa.clone()));
                }
                Inline::Break { ms } => flat.breaks.push((flat.text.len(), *ms)),
                Inline::SentenceEnd => flat.sentence_ends.push(flat.text.len()),
            }
        }
        flat
    }

    /// Appends with one space between runs, none before punctuation.
    fn push_spaced(&mut self, s: &str) {
        let needs_space = !self.text.is_empty()
            && !self.text.ends_with(char::is_whitespace)
            && !s.starts_with(|c: char| {
                c.is_whitespace() || matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | ')')
            });
        if needs_space && !s.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(s);
    }

    fn rate_at(&self, offset: usize) -> f32 {
        self.rates
            .iter()
            .take_while(|(at, _)| *at <= offset)
            .last()
            .map_or(1.0, |(_, r)| *r)
    }

    /// Sentence ranges, cut also at breaks and rate changes, long ones split at clauses;
    /// never inside a phoneme run.
    fn sentence_ranges(&self) -> Vec<Range<usize>> {
        let mut cuts: Vec<usize> = self
            .breaks
            .iter()
            .map(|(at, _)| *at)
            .chain(self.rates.iter().map(|(at, _)| *at))
            .chain(self.sentence_ends.iter().copied())
            .collect();
        cuts.sort_unstable();
        let mut ranges = Vec::new();
        for sentence in segment::sentences(&self.text) {
            let mut start = sentence.start;
            for &cut in cuts
                .iter()
                .filter(|&&c| c > sentence.start && c < sentence.end)
            {
                ranges.push(start..cut);
                start = cut;
            }
            ranges.push(start..sentence.end);
        }
        ranges
            .into_iter()
            .map(|r| trim_range(&self.text, r))
            .filter(|r| !r.is_empty())
            .flat_map(|r| segment::split_long(&self.text, r, MAX_SENTENCE_BYTES))
            .map(|r| self.widen_to_phoneme_runs(r))
            .fold(Vec::new(), |mut acc: Vec<Range<usize>>, r| {
                // Widening can make neighbours overlap: merge them.
                match acc.last_mut() {
                    Some(last) if r.start < last.end => last.end = last.end.max(r.end),
                    _ => acc.push(r),
                }
                acc
            })
    }

    fn widen_to_phoneme_runs(&self, mut r: Range<usize>) -> Range<usize> {
        for (run, _) in &self.phonemes {
            if run.start < r.end && run.end > r.start {
                r.start = r.start.min(run.start);
                r.end = r.end.max(run.end);
            }
        }
        r
    }

    fn pieces(&self, range: Range<usize>, lexicon: &Lexicon) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut at = range.start;
        let mut runs: Vec<&(Range<usize>, String)> = self
            .phonemes
            .iter()
            .filter(|(r, _)| r.start >= range.start && r.end <= range.end)
            .collect();
        runs.sort_by_key(|(r, _)| r.start);
        for (run, ipa) in runs {
            if run.start > at {
                pieces.extend(lexicon.apply(&self.text[at..run.start]));
            }
            pieces.push(Piece::Phonemes(ipa.clone()));
            at = run.end;
        }
        if at < range.end {
            pieces.extend(lexicon.apply(&self.text[at..range.end]));
        }
        pieces.retain(|p| match p {
            Piece::Words(w) => w.chars().any(char::is_alphanumeric),
            Piece::Phonemes(p) => !p.trim().is_empty(),
        });
        pieces
    }
}

fn trim_range(text: &str, r: Range<usize>) -> Range<usize> {
    let s = &text[r.clone()];
    let lead = s.len() - s.trim_start().len();
    let trimmed = s.trim();
    r.start + lead..r.start + lead + trimmed.len()
}

/// Flattens a document into the spoken stream. Spans index `Script::normalized_text`, in
/// which headings and paragraphs are separated by blank lines and sentences by spaces.
pub fn script(document: &Document, lexicon: &Lexicon) -> Script {
    let mut script = Script::default();
    for (index, chapter) in document.chapters.iter().enumerate() {
        script.items.push(Item::Chapter {
            index,
            title: chapter.title.clone(),
        });
        let title_paragraph = chapter.title.as_ref().map(|t| Paragraph {
            inlines: vec![Inline::Verbatim {
                text: ensure_terminal(&normalize_heading(t)),
                rate: 1.0,
            }],
        });
        for paragraph in title_paragraph.iter().chain(&chapter.paragraphs) {
            push_paragraph(&mut script, paragraph, lexicon);
        }
    }
    script
}

fn push_paragraph(script: &mut Script, paragraph: &Paragraph, lexicon: &Lexicon) {
    let flat = Flat::of(paragraph);
    if !script.normalized_text.is_empty() {
        script.normalized_text.push_str("\n\n");
    }
    let base = script.normalized_text.len();
    script.normalized_text.push_str(&flat.text);
    let ranges = flat.sentence_ranges();
    let mut breaks = flat.breaks.iter().peekable();
    let last = ranges.len().saturating_sub(1);
    for (i, range) in ranges.into_iter().enumerate() {
        while let Some((_, ms)) = breaks.next_if(|(at, _)| *at <= range.start) {
            script.items.push(Item::Pause { ms: *ms });
        }
        let pieces = flat.pieces(range.clone(), lexicon);
        if pieces.is_empty() {
            continue;
        }
        script.items.push(Item::Sentence(Sentence {
            text: flat.text[range.clone()].to_string(),
            span: base + range.start..base + range.end,
            pieces,
            rate: flat.rate_at(range.start),
            ends_paragraph: i == last,
        }));
    }
    for (_, ms) in breaks {
        script.items.push(Item::Pause { ms: *ms });
    }
}

/// Headings often lack a full stop; one makes espeak end the sentence with a falling tone.
fn ensure_terminal(s: &str) -> String {
    if s.ends_with(['.', '!', '?']) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_index_the_normalized_text() {
        let doc = Document {
            chapters: vec![Chapter {
                title: Some("Chapter IV".into()),
                paragraphs: vec![
                    Paragraph::text("It cost $5. Then Dr. Who left."),
                    Paragraph::text("End."),
                ],
            }],
        };
        let script = script(&doc, &Lexicon::default());
        let sentences: Vec<&Sentence> = script.sentences().collect();
        let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Chapter four.",
                "It cost five dollars.",
                "Then Doctor Who left.",
                "End."
            ]
        );
        for s in &sentences {
            assert_eq!(&script.normalized_text[s.span.clone()], s.text);
        }
        assert!(
            sentences[0].ends_paragraph
                && !sentences[1].ends_paragraph
                && sentences[2].ends_paragraph
        );
    }

    #[test]
    fn breaks_and_phonemes_stay_in_place() {
        let paragraph = Paragraph {
            inlines: vec![
                Inline::Text {
                    text: "Say".into(),
                    rate: 1.0,
                },
                Inline::Phonemes {
                    ipa: "təmˈɑːtoʊ".into(),
                    text: "tomato".into(),
                },
                Inline::Break { ms: 500 },
                Inline::Text {
                    text: "slowly now.".into(),
                    rate: 0.8,
                },
            ],
        };
        let doc = Document {
            chapters: vec![Chapter {
                title: None,
                paragraphs: vec![paragraph],
            }],
        };
        let script = script(&doc, &Lexicon::default());
        let kinds: Vec<String> = script
            .items
            .iter()
            .map(|i| match i {
                Item::Chapter { .. } => "chapter".to_string(),
                Item::Pause { ms } => format!("pause {ms}"),
                Item::Sentence(s) => format!("{} @{}", s.text, s.rate),
            })
            .collect();
        assert_eq!(
            kinds,
            ["chapter", "Say tomato @1", "pause 500", "slowly now. @0.8"]
        );
        let Item::Sentence(first) = &script.items[1] else {
            panic!()
        };
        assert_eq!(
            first.pieces,
            [
                Piece::Words("Say ".into()),
                Piece::Phonemes("təmˈɑːtoʊ".into())
            ]
        );
    }
}
