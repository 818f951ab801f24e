//! Rewrites text that espeak-ng reads badly into words it reads well: numbers with
//! separators, currency, ordinals, dates, times, abbreviations, URLs and e-mail addresses,
//! typographic quotes and ellipses.

use std::sync::LazyLock;

use regex::{Captures, Regex};

use crate::numbers::{cardinal, digits, ordinal, roman, year, MONTHS};

/// Abbreviations expanded wherever they appear (case-sensitive, with their dot).
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("Mr.", "Mister"),
    ("Mrs.", "Missus"),
    ("Ms.", "Miz"),
    ("Dr.", "Doctor"),
    ("Prof.", "Professor"),
    ("Sr.", "Senior"),
    ("Jr.", "Junior"),
    ("Capt.", "Captain"),
    ("Gen.", "General"),
    ("Lt.", "Lieutenant"),
    ("Sgt.", "Sergeant"),
    ("Rev.", "Reverend"),
    ("Hon.", "Honorable"),
    ("Ave.", "Avenue"),
    ("Blvd.", "Boulevard"),
    ("Rd.", "Road"),
    ("Mt.", "Mount"),
    ("Ft.", "Fort"),
    ("etc.", "et cetera"),
    ("e.g.", "for example"),
    ("i.e.", "that is"),
    ("vs.", "versus"),
    ("approx.", "approximately"),
    ("dept.", "department"),
    ("Dept.", "Department"),
    ("Inc.", "Incorporated"),
    ("Ltd.", "Limited"),
    ("Co.", "Company"),
    ("Corp.", "Corporation"),
    ("Jan.", "January"),
    ("Feb.", "February"),
    ("Mar.", "March"),
    ("Apr.", "April"),
    ("Aug.", "August"),
    ("Sept.", "September"),
    ("Sep.", "September"),
    ("Oct.", "October"),
    ("Nov.", "November"),
    ("Dec.", "December"),
];

macro_rules! regex {
    ($name:ident, $re:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| Regex::new($re).expect("valid regex"));
    };
}

regex!(
    EMAIL,
    r"\b([A-Za-z0-9._%+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\b"
);
regex!(
    URL,
    r"\b(?:https?://)?((?:www\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:com|org|net|edu|gov|io|dev|co|uk|de|fr|info|ai)\b(?:/[^\s)\]]*[^\s.,;:!?)\]])?)"
);
regex!(ISO_DATE, r"\b(\d{4})-(\d{2})-(\d{2})\b");
regex!(
    MONTH_DATE,
    r"\b(January|February|March|April|May|June|July|August|September|October|November|December) (\d{1,2})(?:st|nd|rd|th)?(?:, (\d{4}))?\b"
);
regex!(
    DAY_OF_MONTH,
    r"\b(?:the )?(\d{1,2})(?:st|nd|rd|th)? of (January|February|March|April|May|June|July|August|September|October|November|December)\b"
);
regex!(
    TIME,
    r"\b(\d{1,2}):(\d{2})(?:\s*([AaPp])\.?\s?[Mm]\.?)?(\W|$)"
);
regex!(
    CURRENCY,
    r"([$€£¥])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?:\s?(million|billion|trillion|thousand))?\b"
);
regex!(PERCENT, r"(\d+(?:\.\d+)?)\s?%");
regex!(ORDINAL, r"\b(\d+)(st|nd|rd|th)\b");
regex!(PHONE, r"\b(?:\(?(\d{3})\)?[ -])?(\d{3})-(\d{4})\b");
regex!(DECIMAL, r"\b(\d+)\.(\d+)\b");
regex!(GROUPED, r"\b\d{1,3}(?:,\d{3})+\b");
regex!(YEAR, r"\b(1[1-9]\d\d|20\d\d)(s?)\b");
regex!(INTEGER, r"\b\d+\b");
regex!(INITIALISM, r"\b((?:[A-Z]\.){2,})");
regex!(ELLIPSIS, r"\.{4,}|…");
regex!(SPACES, r"[ \t\u{00A0}\u{2000}-\u{200B}]+");

/// Normalizes one paragraph of text for speech.
pub fn normalize(text: &str) -> String {
    let mut s = text
        .replace(['\u{2018}', '\u{2019}', '\u{201B}', '\u{2032}'], "'")
        .replace(
            ['\u{201C}', '\u{201D}', '\u{201E}', '\u{2033}', '«', '»'],
            "\"",
        )
        .replace(['\u{2013}', '\u{2014}', '\u{2015}'], ", ")
        .replace('\u{00AD}', "");
    s = ELLIPSIS.replace_all(&s, "...").into_owned();
    s = EMAIL
        .replace_all(&s, |c: &Captures| {
            format!("{} at {}", spell_address(&c[1]), spell_address(&c[2]))
        })
        .into_owned();
    s = URL
        .replace_all(&s, |c: &Captures| spell_address(&c[1]))
        .into_owned();
    for (abbreviation, expansion) in ABBREVIATIONS {
        if s.contains(abbreviation) {
            s = replace_word(&s, abbreviation, expansion);
        }
    }
    s = saint_or_street(&s);
    s = INITIALISM
        .replace_all(&s, |c: &Captures| {
            c[1].replace('.', " ").trim_end().to_string() + " "
        })
        .into_owned();
    s = ISO_DATE
        .replace_all(&s, |c: &Captures| {
            let (y, m, d) = (num(&c[1]), num(&c[2]), num(&c[3]));
            if (1..=12).contains(&m) && (1..=31).contains(&d) {
                format!("{} {}, {}", MONTHS[m as usize - 1], ordinal(d), year(y))
            } else {
                c[0].to_string()
            }
        })
        .into_owned();
    s = MONTH_DATE
        .replace_all(&s, |c: &Captures| {
            let day = ordinal(num(&c[2]));
            match c.get(3) {
                Some(y) => format!("{} {day}, {}", &c[1], year(num(y.as_str()))),
                None => format!("{} {day}", &c[1]),
            }
        })
        .into_owned();
    s = DAY_OF_MONTH
        .replace_all(&s, |c: &Captures| {
            // "4th of July" and "the 4th of July" are both read with the article.
            format!("the {} of {}", ordinal(num(&c[1])), &c[2])
        })
        .into_owned();
    s = TIME
        .replace_all(&s, |c: &Captures| {
            let (h, m) = (num(&c[1]), num(&c[2]));
            if h > 23 || m > 59 {
                return c[0].to_string();
            }
            let minutes = match m {
                0 if c.get(3).is_some() => String::new(),
                0 => " o'clock".to_string(),
                1..=9 => format!(" oh {}", cardinal(m)),
                _ => format!(" {}", cardinal(m)),
            };
            let suffix = match c.get(3).map(|x| x.as_str().to_ascii_lowercase()) {
                Some(x) if x == "a" => " a m",
                Some(_) => " p m",
                None => "",
            };
            format!("{}{minutes}{suffix}{}", cardinal(h), &c[4])
        })
        .into_owned();
    s = CURRENCY
        .replace_all(&s, |c: &Captures| {
            let (unit, units, cent) = match &c[1] {
                "$" => ("dollar", "dollars", "cent"),
                "€" => ("euro", "euros", "cent"),
                "£" => ("pound", "pounds", "penny"),
                _ => ("yen", "yen", "sen"),
            };
            let whole = num(&c[2].replace(',', ""));
            if let Some(scale) = c.get(4) {
                let amount = match c.get(3) {
                    Some(fraction) => {
                        format!("{} point {}", cardinal(whole), digits(fraction.as_str()))
                    }
                    None => cardinal(whole),
                };
                return format!("{amount} {} {units}", scale.as_str());
            }
            let mut words = format!(
                "{} {}",
                cardinal(whole),
                if whole == 1 { unit } else { units }
            );
            if let Some(fraction) = c.get(3) {
                let mut cents = num(fraction.as_str());
                if fraction.as_str().len() == 1 {
                    cents *= 10;
                }
                if cents > 0 {
                    let cents_word = if cents == 1 {
                        cent.to_string()
                    } else if cent == "penny" {
                        "pence".to_string()
                    } else {
                        format!("{cent}s")
                    };
                    words = format!("{words} and {} {cents_word}", cardinal(cents));
                }
            }
            words
        })
        .into_owned();
    s = PERCENT.replace_all(&s, "$1 percent").into_owned();
    s = ORDINAL
        .replace_all(&s, |c: &Captures| ordinal(num(&c[1])))
        .into_owned();
    s = PHONE
        .replace_all(&s, |c: &Captures| {
            let area = c
                .get(1)
                .map(|a| format!("{}, ", digits(a.as_str())))
                .unwrap_or_default();
            format!("{area}{}, {}", digits(&c[2]), digits(&c[3]))
        })
        .into_owned();
    s = DECIMAL
        .replace_all(&s, |c: &Captures| {
            format!("{} point {}", cardinal_text(&c[1]), digits(&c[2]))
        })
        .into_owned();
    s = GROUPED
        .replace_all(&s, |c: &Captures| cardinal_text(&c[0].replace(',', "")))
        .into_owned();
    s = YEAR
        .replace_all(&s, |c: &Captures| {
            let spoken = year(num(&c[1]));
            if c[2].is_empty() {
                spoken
            } else if let Some(stem) = spoken.strip_suffix('y') {
                format!("{stem}ies")
            } else {
                format!("{spoken}s")
            }
        })
        .into_owned();
    s = INTEGER
        .replace_all(&s, |c: &Captures| cardinal_text(&c[0]))
        .into_owned();
    SPACES.replace_all(&s, " ").trim().to_string()
}

/// Reads a chapter heading, turning a Roman numeral after "Chapter", "Part" or "Book" (or
/// alone) into a number: "Chapter IV" → "Chapter four".
pub fn normalize_heading(heading: &str) -> String {
    regex!(
        HEADING_ROMAN,
        r"^(?i)(chapter|part|book|section|act|scene)?\s*([IVXLCDM]+)\b(.*)$"
    );
    let heading = heading.trim();
    if let Some(c) = HEADING_ROMAN.captures(heading) {
        if let Some(n) = roman(&c[2]) {
            let label = c
                .get(1)
                .map(|l| format!("{} ", l.as_str()))
                .unwrap_or_default();
            let rest = c[3].trim_start_matches(['.', ':']).trim();
            let rest = if rest.is_empty() {
                String::new()
            } else {
                format!(". {rest}")
            };
            return normalize(&format!("{label}{}{rest}", cardinal(n)));
        }
    }
    normalize(heading)
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or(0)
}

/// Integers too long to read as a quantity are read digit by digit.
fn cardinal_text(s: &str) -> String {
    if s.len() > 15 {
        digits(s)
    } else {
        cardinal(num(s))
    }
}

/// "example.com/path" → "example dot com slash path".
fn spell_address(address: &str) -> String {
    let mut out = String::new();
    for c in address.chars() {
        match c {
            '.' => out.push_str(" dot "),
            '/' => out.push_str(" slash "),
            '-' => out.push_str(" dash "),
            '_' => out.push_str(" underscore "),
            ':' => out.push_str(" colon "),
            '?' | '=' | '&' | '#' | '%' | '+' => out.push(' '),
            c => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Replaces `word` where it is not part of a longer word.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before_ok = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        out.push_str(&rest[..i]);
        if before_ok {
            out.push_str(with);
        } else {
            out.push_str(word);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// "St." is "Saint" before a name ("St. Louis") and "Street" after one ("Elm St.").
fn saint_or_street(text: &str) -> String {
    regex!(SAINT, r"\bSt\. ([A-Z])");
    regex!(STREET, r"\bSt\.");
    let s = SAINT.replace_all(text, "Saint $1");
    STREET.replace_all(&s, "Street").into_owned()
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn money_and_numbers() {
        assert_eq!(
            normalize("It costs $1,250.50."),
            "It costs one thousand two hundred fifty dollars and fifty cents."
        );
        assert_eq!(normalize("£5"), "five pounds");
        assert_eq!(normalize("$2.5 million"), "two point five million dollars");
        assert_eq!(normalize("3.14159"), "three point one four one five nine");
        assert_eq!(normalize("25,000 people"), "twenty-five thousand people");
        assert_eq!(normalize("grew 3.5%"), "grew three point five percent");
    }

    #[test]
    fn dates_times_ordinals() {
        assert_eq!(
            normalize("on 2024-03-15"),
            "on March fifteenth, twenty twenty-four"
        );
        assert_eq!(
            normalize("March 3, 2024"),
            "March third, twenty twenty-four"
        );
        assert_eq!(
            normalize("the 4th of July, 1887"),
            "the fourth of July, eighteen eighty-seven"
        );
        assert_eq!(
            normalize("At 3:30 pm we left"),
            "At three thirty p m we left"
        );
        assert_eq!(normalize("at 7:00"), "at seven o'clock");
        assert_eq!(normalize("the 1990s"), "the nineteen nineties");
        assert_eq!(normalize("21st"), "twenty-first");
    }

    #[test]
    fn abbreviations_addresses_and_typography() {
        assert_eq!(
            normalize("Dr. Watson met Mrs. Hudson"),
            "Doctor Watson met Missus Hudson"
        );
        assert_eq!(
            normalize("St. Louis and Elm St."),
            "Saint Louis and Elm Street"
        );
        assert_eq!(
            normalize("mail hello@example.com"),
            "mail hello at example dot com"
        );
        assert_eq!(
            normalize("see https://voxproof.dev/docs today"),
            "see voxproof dot dev slash docs today"
        );
        assert_eq!(
            normalize("\u{201C}Hi,\u{201D} she said\u{2026}"),
            "\"Hi,\" she said..."
        );
        assert_eq!(
            normalize("call 555-1234"),
            "call five five five, one two three four"
        );
        assert_eq!(normalize("the U.S. border"), "the U S border");
    }

    #[test]
    fn headings() {
        assert_eq!(super::normalize_heading("Chapter IV"), "Chapter four");
        assert_eq!(
            super::normalize_heading("XII. The Return"),
            "twelve. The Return"
        );
        assert_eq!(
            super::normalize_heading("Chapter 3: Home"),
            "Chapter three: Home"
        );
    }
}
