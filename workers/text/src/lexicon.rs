//! Pronunciation lexicon: words spoken as a respelling or as given IPA.
//!
//! File format (UTF-8), one entry per line, `#` starts a comment:
//! ```text
//! voxproof    vox proof        # respelling: read as these words
//! Nguyen      /ŋwˈɪn/          # IPA between slashes: used as phonemes directly
//! ```
//! Words match case-insensitively and whole (letters, digits, apostrophes and hyphens).

use std::collections::HashMap;

use crate::TextError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pronunciation {
    Respelling(String),
    Ipa(String),
}

#[derive(Debug, Clone, Default)]
pub struct Lexicon {
    entries: HashMap<String, Pronunciation>,
}

/// A run of text after lexicon lookup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "text", rename_all = "snake_case")]
pub enum Piece {
    /// Words for espeak-ng.
    Words(String),
    /// IPA phonemes spoken as given.
    Phonemes(String),
}

impl Lexicon {
    pub fn parse(text: &str) -> Result<Self, TextError> {
        let mut lexicon = Lexicon::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            let bad = |message: &str| TextError::Lexicon {
                line: n + 1,
                message: message.to_string(),
            };
            let (word, replacement) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected: WORD REPLACEMENT"))?;
            lexicon
                .insert(word, replacement.trim())
                .map_err(|m| bad(&m))?;
        }
        Ok(lexicon)
    }

    /// Adds an entry; a replacement between slashes is IPA, anything else a respelling.
    pub fn insert(&mut self, word: &str, replacement: &str) -> Result<(), String> {
        if word.is_empty() || !word.chars().all(is_word_char) {
            return Err(format!("{word:?} is not a single word"));
        }
        let pronunciation = match replacement
            .strip_prefix('/')
            .and_then(|r| r.strip_suffix('/'))
        {
            Some(ipa) if !ipa.trim().is_empty() => Pronunciation::Ipa(ipa.trim().to_string()),
            Some(_) => return Err("empty IPA".into()),
            None if replacement.is_empty() => return Err("missing replacement".into()),
            None => Pronunciation::Respelling(replacement.to_string()),
        };
        self.entries.insert(word.to_lowercase(), pronunciation);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies the lexicon to `text`, giving runs of words and phonemes.
    pub fn apply(&self, text: &str) -> Vec<Piece> {
        if self.entries.is_empty() {
            return vec![Piece::Words(text.to_string())];
        }
        let mut pieces = Vec::new();
        let mut words = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            let word_len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
            if word_len == 0 {
                let c = rest.chars().next().map_or(1, char::len_utf8);
                words.push_str(&rest[..c]);
                rest = &rest[c..];
                continue;
            }
            let word = &rest[..word_len];
            match self.entries.get(&word.to_lowercase()) {
                Some(Pronunciation::Respelling(r)) => words.push_str(r),
                Some(Pronunciation::Ipa(ipa)) => {
                    if !words.trim().is_empty() {
                        pieces.push(Piece::Words(std::mem::take(&mut words)));
                    }
                    words.clear();
                    pieces.push(Piece::Phonemes(ipa.clone()));
                }
                None => words.push_str(word),
            }
            rest = &rest[word_len..];
        }
        if !words.trim().is_empty() {
            pieces.push(Piece::Words(words));
        }
        pieces
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\'' || c == '-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respellings_and_ipa() {
        let lexicon = Lexicon::parse("# names\nvoxproof vox proof\nNguyen /ŋwˈɪn/\n").unwrap();
        assert_eq!(lexicon.len(), 2);
        assert_eq!(
            lexicon.apply("Ask nguyen about Voxproof."),
            [
                Piece::Words("Ask ".into()),
                Piece::Phonemes("ŋwˈɪn".into()),
                Piece::Words(" about vox proof.".into())
            ]
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        let err = Lexicon::parse("ok fine\nlonely\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "lexicon line 2: expected: WORD REPLACEMENT"
        );
        assert!(Lexicon::parse("two words here").is_ok());
        assert!(Lexicon::parse("x //").is_err());
    }
}
