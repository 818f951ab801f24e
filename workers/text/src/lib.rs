//! Long-form text for speech: parsing plain text, Markdown, SSML and EPUB into chapters and
//! paragraphs, normalizing what espeak-ng reads badly, applying a pronunciation lexicon, and
//! cutting the result into sentences for the voice model. Pure computation: no I/O.

pub mod document;
pub mod epub;
pub mod lexicon;
pub mod markdown;
pub mod normalize;
pub mod numbers;
pub mod plain;
pub mod segment;
pub mod ssml;

use std::str::FromStr;

pub use document::{script, Chapter, Document, Inline, Item, Paragraph, Script, Sentence};
pub use lexicon::{Lexicon, Piece};

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("the input is empty: nothing to speak")]
    Empty,
    #[error("the input is not valid UTF-8 (first invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("SSML error at line {line}, column {column}: {message}")]
    Ssml {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("EPUB error in {path}: {message}")]
    Epub { path: String, message: String },
    #[error("lexicon line {line}: {message}")]
    Lexicon { line: usize, message: String },
}

/// Kinds of input document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Text,
    Markdown,
    Ssml,
    Epub,
}

impl InputFormat {
    /// Guesses from a file name's extension.
    pub fn from_extension(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(Self::Text),
            "md" | "markdown" => Some(Self::Markdown),
            "ssml" | "xml" => Some(Self::Ssml),
            "epub" => Some(Self::Epub),
            _ => None,
        }
    }
}

impl FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "txt" | "plain" => Ok(Self::Text),
            "markdown" | "md" => Ok(Self::Markdown),
            "ssml" => Ok(Self::Ssml),
            "epub" => Ok(Self::Epub),
            other => Err(format!(
                "unknown input format {other:?} (text, markdown, ssml, epub)"
            )),
        }
    }
}

/// Parses a document from its bytes.
pub fn parse(bytes: &[u8], format: InputFormat) -> Result<Document, TextError> {
    let document = match format {
        InputFormat::Epub => epub::parse(bytes)?,
        _ => {
            let text = std::str::from_utf8(bytes).map_err(|e| TextError::NotUtf8 {
                offset: e.valid_up_to(),
            })?;
            let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
            match format {
                InputFormat::Text => plain::parse(text),
                InputFormat::Markdown => markdown::parse(text),
                InputFormat::Ssml => ssml::parse(text)?,
                InputFormat::Epub => unreachable!("handled above"),
            }
        }
    };
    if document.is_empty() {
        return Err(TextError::Empty);
    }
    Ok(document)
}
