//! SSML subset: `speak`, `p`, `s`, `break` (time or strength), `prosody rate`, `sub alias`,
//! `phoneme ph` (IPA), `say-as interpret-as="characters|cardinal|ordinal|date|telephone"`.
//! Other elements are read for their text (`emphasis`, `voice`, …). Document type
//! declarations are refused, so no entity can reach outside the document.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::document::{Chapter, Document, Inline, Paragraph};
use crate::numbers::{cardinal, digits, ordinal, year, MONTHS};
use crate::TextError;

/// Longest break honoured, in milliseconds.
const MAX_BREAK_MS: u32 = 10_000;

enum Open {
    Speak,
    Paragraph,
    Sentence,
    Prosody,
    Sub {
        alias: String,
    },
    Phoneme {
        ipa: String,
        text: String,
    },
    SayAs {
        interpret_as: String,
        format: Option<String>,
        text: String,
    },
    Other,
}

struct Parser<'a> {
    source: &'a str,
    document: Document,
    paragraph: Paragraph,
    rates: Vec<f32>,
    stack: Vec<Open>,
}

pub fn parse(source: &str) -> Result<Document, TextError> {
    let mut reader = Reader::from_str(source);
    reader.config_mut().check_end_names = true;
    let mut parser = Parser {
        source,
        document: Document {
            chapters: vec![Chapter::default()],
        },
        paragraph: Paragraph::default(),
        rates: vec![1.0],
        stack: Vec::new(),
    };
    let mut seen_root = false;
    loop {
        let position = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| parser.error(reader.error_position() as usize, &e.to_string()))?;
        match event {
            Event::Start(e) | Event::Empty(e) if !seen_root && e.name().as_ref() != b"speak" => {
                return Err(parser.error(position, "the root element must be <speak>"));
            }
            Event::Start(e) => {
                seen_root = true;
                let open = parser.open(&e, position)?;
                parser.stack.push(open);
            }
            Event::Empty(e) => {
                seen_root = true;
                let open = parser.open(&e, position)?;
                parser.close(open);
            }
            Event::End(_) => {
                if let Some(open) = parser.stack.pop() {
                    parser.close(open);
                }
            }
            Event::Text(t) => {
                let text = t
                    .unescape()
                    .map_err(|e| parser.error(position, &e.to_string()))?;
                parser.text(&text, position)?;
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t).into_owned();
                parser.text(&text, position)?;
            }
            Event::DocType(_) => {
                return Err(parser.error(position, "DOCTYPE declarations are not allowed"))
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !seen_root {
        return Err(parser.error(0, "no <speak> element"));
    }
    if !parser.stack.is_empty() {
        return Err(parser.error(source.len(), "unclosed element at end of document"));
    }
    parser.end_paragraph();
    Ok(parser.document.tidy())
}

impl Parser<'_> {
    fn error(&self, offset: usize, message: &str) -> TextError {
        let before = &self.source[..offset.min(self.source.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        TextError::Ssml {
            line,
            column,
            message: message.to_string(),
        }
    }

    fn rate(&self) -> f32 {
        self.rates.last().copied().unwrap_or(1.0)
    }

    fn end_paragraph(&mut self) {
        let paragraph = std::mem::take(&mut self.paragraph);
        if let Some(chapter) = self.document.chapters.last_mut() {
            chapter.paragraphs.push(paragraph);
        }
    }

    fn attribute(
        &self,
        e: &BytesStart<'_>,
        name: &str,
        offset: usize,
    ) -> Result<Option<String>, TextError> {
        for attribute in e.attributes() {
            let attribute = attribute.map_err(|err| self.error(offset, &err.to_string()))?;
            if attribute.key.as_ref() == name.as_bytes() {
                let value = attribute
                    .unescape_value()
                    .map_err(|err| self.error(offset, &err.to_string()))?;
                return Ok(Some(value.into_owned()));
            }
        }
        Ok(None)
    }

    fn required(
        &self,
        e: &BytesStart<'_>,
        element: &str,
        name: &str,
        offset: usize,
    ) -> Result<String, TextError> {
        self.attribute(e, name, offset)?
            .ok_or_else(|| self.error(offset, &format!("<{element}> needs a {name} attribute")))
    }

    fn open(&mut self, e: &BytesStart<'_>, offset: usize) -> Result<Open, TextError> {
        Ok(match e.name().as_ref() {
            b"speak" => Open::Speak,
            b"p" => {
                self.end_paragraph();
                Open::Paragraph
            }
            b"s" => Open::Sentence,
            b"break" => {
                let ms = match (
                    self.attribute(e, "time", offset)?,
                    self.attribute(e, "strength", offset)?,
                ) {
                    (Some(time), _) => parse_time(&time).ok_or_else(|| {
                        self.error(
                            offset,
                            &format!("break time {time:?} is not a duration like 500ms or 1.5s"),
                        )
                    })?,
                    (None, Some(strength)) => strength_ms(&strength).ok_or_else(|| {
                        self.error(offset, &format!("unknown break strength {strength:?}"))
                    })?,
                    (None, None) => 500,
                };
                self.paragraph.inlines.push(Inline::Break {
                    ms: ms.min(MAX_BREAK_MS),
                });
                Open::Other
            }
            b"prosody" => {
                let rate = match self.attribute(e, "rate", offset)? {
                    Some(rate) => parse_rate(&rate).ok_or_else(|| {
                        self.error(offset, &format!("prosody rate {rate:?} is not understood"))
                    })?,
                    None => 1.0,
                };
                self.rates.push((self.rate() * rate).clamp(0.25, 4.0));
                Open::Prosody
            }
            b"sub" => Open::Sub {
                alias: self.required(e, "sub", "alias", offset)?,
            },
            b"phoneme" => {
                if let Some(alphabet) = self.attribute(e, "alphabet", offset)? {
                    if alphabet != "ipa" {
                        return Err(self.error(
                            offset,
                            &format!("phoneme alphabet {alphabet:?} is not supported (use ipa)"),
                        ));
                    }
                }
                Open::Phoneme {
                    ipa: self.required(e, "phoneme", "ph", offset)?,
                    text: String::new(),
                }
            }
            b"say-as" => {
                let interpret_as = self.required(e, "say-as", "interpret-as", offset)?;
                if !matches!(
                    interpret_as.as_str(),
                    "characters"
                        | "spell-out"
                        | "cardinal"
                        | "number"
                        | "ordinal"
                        | "date"
                        | "telephone"
                ) {
                    return Err(self.error(
                        offset,
                        &format!("say-as interpret-as {interpret_as:?} is not supported"),
                    ));
                }
                Open::SayAs {
                    interpret_as,
                    format: self.attribute(e, "format", offset)?,
                    text: String::new(),
                }
            }
            _ => Open::Other,
        })
    }

    fn text(&mut self, text: &str, offset: usize) -> Result<(), TextError> {
        match self.stack.last_mut() {
            Some(Open::Sub { .. }) => {}
            Some(Open::Phoneme { text: t, .. } | Open::SayAs { text: t, .. }) => t.push_str(text),
            None if !text.trim().is_empty() => {
                return Err(self.error(offset, "text outside <speak>"))
            }
            _ => {
                let rate = self.rate();
                self.paragraph.inlines.push(Inline::Text {
                    text: text.to_string(),
                    rate,
                });
            }
        }
        Ok(())
    }

    fn close(&mut self, open: Open) {
        let rate = self.rate();
        match open {
            Open::Paragraph => self.end_paragraph(),
            Open::Sentence => self.paragraph.inlines.push(Inline::SentenceEnd),
            Open::Prosody => {
                self.rates.pop();
            }
            Open::Sub { alias } => self
                .paragraph
                .inlines
                .push(Inline::Text { text: alias, rate }),
            Open::Phoneme { ipa, text } => {
                self.paragraph.inlines.push(Inline::Phonemes { ipa, text })
            }
            Open::SayAs {
                interpret_as,
                format,
                text,
            } => {
                let spoken = say_as(&interpret_as, format.as_deref(), text.trim());
                self.paragraph
                    .inlines
                    .push(Inline::Verbatim { text: spoken, rate });
            }
            Open::Speak | Open::Other => {}
        }
    }
}

fn parse_time(s: &str) -> Option<u32> {
    let s = s.trim();
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(sec) = s.strip_suffix('s') {
        (sec, 1000.0)
    } else {
        return None;
    };
    let value: f64 = number.trim().parse().ok()?;
    (value >= 0.0 && value.is_finite())
        .then(|| (value * scale).round().min(f64::from(u32::MAX)) as u32)
}

fn strength_ms(s: &str) -> Option<u32> {
    Some(match s {
        "none" => 0,
        "x-weak" => 100,
        "weak" => 250,
        "medium" => 500,
        "strong" => 750,
        "x-strong" => 1200,
        _ => return None,
    })
}

fn parse_rate(s: &str) -> Option<f32> {
    let s = s.trim();
    let named = match s {
        "x-slow" => Some(0.5),
        "slow" => Some(0.75),
        "medium" | "default" => Some(1.0),
        "fast" => Some(1.25),
        "x-fast" => Some(1.5),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let rate = if let Some(percent) = s.strip_suffix('%') {
        let relative = percent.starts_with(['+', '-']);
        let value: f32 = percent.parse().ok()?;
        if relative {
            1.0 + value / 100.0
        } else {
            value / 100.0
        }
    } else {
        s.parse().ok()?
    };
    (rate > 0.0 && rate.is_finite()).then_some(rate)
}

fn say_as(interpret_as: &str, format: Option<&str>, text: &str) -> String {
    let digits_only: String = text.chars().filter(char::is_ascii_digit).collect();
    match interpret_as {
        "characters" | "spell-out" => text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(String::from)
            .collect::<Vec<_>>()
            .join(" "),
        "cardinal" | "number" if !digits_only.is_empty() && digits_only.len() <= 18 => {
            let negative = text.trim_start().starts_with('-');
            let words = cardinal(digits_only.parse().unwrap_or(0));
            if negative {
                format!("minus {words}")
            } else {
                words
            }
        }
        "ordinal" if !digits_only.is_empty() && digits_only.len() <= 18 => {
            ordinal(digits_only.parse().unwrap_or(0))
        }
        "telephone" => text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .map(digits)
            .collect::<Vec<_>>()
            .join(", "),
        "date" => date(text, format.unwrap_or("")).unwrap_or_else(|| text.to_string()),
        _ => text.to_string(),
    }
}

/// A date in the given SSML format (`mdy`, `dmy`, `ymd`; ISO `yyyy-mm-dd` when unspecified).
fn date(text: &str, format: &str) -> Option<String> {
    let parts: Vec<u64> = text
        .split(['-', '/', '.'])
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c] = parts[..] else { return None };
    let (y, m, d) = match format {
        "mdy" => (c, a, b),
        "dmy" => (c, b, a),
        "ymd" | "" => (a, b, c),
        _ => return None,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(format!(
        "{} {}, {}",
        MONTHS[m as usize - 1],
        ordinal(d),
        year(y)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{script, Item, Lexicon};

    fn spoken(ssml: &str) -> Vec<String> {
        let doc = parse(ssml).unwrap();
        script(&doc, &Lexicon::default())
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Sentence(s) => Some(format!("{}@{}", s.text, s.rate)),
                Item::Pause { ms } => Some(format!("<{ms}>")),
                Item::Chapter { .. } => None,
            })
            .collect()
    }

    #[test]
    fn the_subset() {
        let ssml = r#"<?xml version="1.0"?>
<speak>
  <p><s>Hello <sub alias="World Wide Web Consortium">W3C</sub></s><s>Second one</s></p>
  <p>Wait<break time="1.5s"/>now <prosody rate="slow">slowly</prosody>.</p>
  <p>Call <say-as interpret-as="telephone">555-0100</say-as> on <say-as interpret-as="date" format="mdy">3/15/2024</say-as>.</p>
  <p>It is <say-as interpret-as="characters">NASA</say-as>, the <say-as interpret-as="ordinal">3</say-as> time, <say-as interpret-as="cardinal">1,204</say-as> times <phoneme alphabet="ipa" ph="təmˈɑːtoʊ">tomato</phoneme>.</p>
</speak>"#;
        assert_eq!(
            spoken(ssml),
            [
                "Hello World Wide Web Consortium@1",
                "Second one@1",
                "Wait@1",
                "<1500>",
                "now@1",
                "slowly@0.75",
                "Call five five five, zero one zero zero on March fifteenth, twenty twenty-four.@1",
                "It is N A S A, the third time, one thousand two hundred four times tomato.@1",
            ]
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = parse("<speak>\n  <p>Hi <break time=\"soon\"/></p>\n</speak>").unwrap_err();
        assert_eq!(err.to_string(), "SSML error at line 2, column 9: break time \"soon\" is not a duration like 500ms or 1.5s");
        let err = parse("<speak>\n<p>unclosed\n</speak>").unwrap_err();
        assert!(matches!(err, TextError::Ssml { line: 3, .. }), "{err}");
        assert!(parse("<html>hi</html>")
            .unwrap_err()
            .to_string()
            .contains("root element must be <speak>"));
        let xxe = "<!DOCTYPE speak [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><speak>&x;</speak>";
        assert!(parse(xxe).unwrap_err().to_string().contains("DOCTYPE"));
        assert!(parse("<speak><prosody rate=\"zoom\">x</prosody></speak>").is_err());
        assert!(
            parse("<speak><phoneme alphabet=\"x-sampa\" ph=\"t@\">a</phoneme></speak>").is_err()
        );
    }
}
