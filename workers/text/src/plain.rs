//! Plain text: paragraphs separated by blank lines; lines such as "Chapter 4", "CHAPTER IV.
//! The Return" or "Part One" start chapters.

use std::sync::LazyLock;

use regex::Regex;

use crate::document::{Chapter, Document, Paragraph};

static HEADING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(chapter|part|book|prologue|epilogue|introduction|preface|afterword)\b(\s+([0-9]+|[ivxlcdm]+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|[a-z]+teen|twenty[a-z -]*|thirty[a-z -]*))?\s*([.:—–-].*)?$",
    )
    .expect("valid regex")
});

pub fn parse(text: &str) -> Document {
    let mut document = Document {
        chapters: vec![Chapter::default()],
    };
    let mut paragraph = String::new();
    let flush = |paragraph: &mut String, document: &mut Document| {
        if !paragraph.trim().is_empty() {
            if let Some(chapter) = document.chapters.last_mut() {
                chapter.paragraphs.push(Paragraph::text(paragraph.trim()));
            }
        }
        paragraph.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            flush(&mut paragraph, &mut document);
            continue;
        }
        if paragraph.is_empty() && trimmed.len() <= 80 && HEADING.is_match(trimmed) {
            document.chapters.push(Chapter {
                title: Some(trimmed.to_string()),
                paragraphs: Vec::new(),
            });
            continue;
        }
        if !paragraph.is_empty() {
            paragraph.push(' ');
        }
        paragraph.push_str(trimmed);
    }
    flush(&mut paragraph, &mut document);
    document.tidy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chapters_and_paragraphs() {
        let doc = parse("Preamble line\nstill preamble.\n\nCHAPTER I. Loomings\n\nCall me Ishmael.\n\nChapter 2\nThe Carpet-Bag.\n");
        assert_eq!(doc.chapters.len(), 3);
        assert_eq!(doc.chapters[0].title, None);
        assert_eq!(
            doc.chapters[0].paragraphs,
            [Paragraph::text("Preamble line still preamble.")]
        );
        assert_eq!(
            doc.chapters[1].title.as_deref(),
            Some("CHAPTER I. Loomings")
        );
        assert_eq!(doc.chapters[2].title.as_deref(), Some("Chapter 2"));
        assert_eq!(
            doc.chapters[2].paragraphs,
            [Paragraph::text("The Carpet-Bag.")]
        );
    }

    #[test]
    fn a_sentence_starting_with_chapter_is_not_a_heading() {
        let doc = parse(
            "Chapter and verse were quoted at length by everyone present in the hall that night.",
        );
        assert_eq!(doc.chapters.len(), 1);
        assert_eq!(doc.chapters[0].title, None);
    }
}
