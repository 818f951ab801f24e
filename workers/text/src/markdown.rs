//! Markdown: `#` and `##` headings start chapters (deeper headings are read as paragraphs);
//! code blocks, HTML and images are not read aloud.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::document::{Chapter, Document, Paragraph};

pub fn parse(text: &str) -> Document {
    let mut document = Document {
        chapters: vec![Chapter::default()],
    };
    let mut current = String::new();
    let mut skip_depth = 0usize;
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_FOOTNOTES | Options::ENABLE_STRIKETHROUGH;
    for event in Parser::new_ext(text, options) {
        match event {
            Event::Start(
                Tag::CodeBlock(_) | Tag::Image { .. } | Tag::HtmlBlock | Tag::FootnoteDefinition(_),
            ) => {
                skip_depth += 1;
            }
            Event::End(
                TagEnd::CodeBlock | TagEnd::Image | TagEnd::HtmlBlock | TagEnd::FootnoteDefinition,
            ) => {
                skip_depth = skip_depth.saturating_sub(1);
            }
            _ if skip_depth > 0 => {}
            Event::Start(Tag::Heading { .. }) => {
                flush(&mut current, &mut document);
            }
            Event::End(TagEnd::Heading(level)) => {
                let title = std::mem::take(&mut current).trim().to_string();
                if matches!(level, HeadingLevel::H1 | HeadingLevel::H2) {
                    document.chapters.push(Chapter {
                        title: Some(title),
                        paragraphs: Vec::new(),
                    });
                } else if !title.is_empty() {
                    let title = if title.ends_with(['.', '!', '?', ':']) {
                        title
                    } else {
                        format!("{title}.")
                    };
                    push(&mut document, title);
                }
            }
            Event::End(
                TagEnd::Paragraph | TagEnd::Item | TagEnd::TableRow | TagEnd::BlockQuote(_),
            ) => {
                flush(&mut current, &mut document);
            }
            Event::Text(t) | Event::Code(t) => current.push_str(&t),
            Event::SoftBreak | Event::HardBreak => current.push(' '),
            Event::End(TagEnd::TableCell) => current.push_str(", "),
            _ => {}
        }
    }
    flush(&mut current, &mut document);
    document.tidy()
}

fn flush(current: &mut String, document: &mut Document) {
    let text = std::mem::take(current);
    if !text.trim().is_empty() {
        push(document, text.trim().to_string());
    }
}

fn push(document: &mut Document, text: String) {
    if let Some(chapter) = document.chapters.last_mut() {
        chapter.paragraphs.push(Paragraph::text(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_are_chapters() {
        let doc = parse("Intro text.\n\n# One\n\nFirst *para*.\n\n```\ncode\n```\n\n### Aside\n\n- item a\n- item b\n\n## Two\nSecond.\n");
        let titles: Vec<Option<&str>> = doc.chapters.iter().map(|c| c.title.as_deref()).collect();
        assert_eq!(titles, [None, Some("One"), Some("Two")]);
        assert_eq!(
            doc.chapters[1].paragraphs,
            [
                Paragraph::text("First para."),
                Paragraph::text("Aside."),
                Paragraph::text("item a"),
                Paragraph::text("item b")
            ]
        );
    }
}
