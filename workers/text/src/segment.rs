//! Sentence segmentation, and splitting of sentences too long for one model call.

use std::ops::Range;

/// Longest sentence (in bytes of normalized text) sent to the voice model in one call. VITS
/// voices trained on sentence-length clips lose prosody and may skip words beyond this.
pub const MAX_SENTENCE_BYTES: usize = 300;

/// Splits text into sentence ranges. A sentence ends at `.`, `!`, `?` (with any closing
/// quotes or brackets) followed by white space and then something that can start a sentence.
/// Single-letter initials ("J. R. R. Tolkien") and decimals do not end sentences.
pub fn sentences(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        if matches!(c, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len()
                && matches!(
                    chars[j].1,
                    '.' | '!' | '?' | '"' | '\'' | ')' | ']' | '”' | '’'
                )
            {
                j += 1;
            }
            let followed_by_space = j < chars.len() && chars[j].1.is_whitespace();
            let mut k = j;
            while k < chars.len() && chars[k].1.is_whitespace() {
                k += 1;
            }
            let next_starts = k < chars.len() && starts_sentence(chars[k].1);
            let is_initial = c == '.'
                && i >= 1
                && chars[i - 1].1.is_uppercase()
                && (i < 2 || !chars[i - 2].1.is_alphanumeric());
            if followed_by_space && next_starts && !is_initial {
                let end = chars.get(j).map_or(text.len(), |&(p, _)| p);
                push_trimmed(text, start..end, &mut ranges);
                start = chars[k].0;
                i = k;
                continue;
            }
        }
        i += 1;
    }
    push_trimmed(text, start..text.len(), &mut ranges);
    ranges
}

fn starts_sentence(c: char) -> bool {
    c.is_uppercase()
        || c.is_numeric()
        || matches!(c, '"' | '\'' | '(' | '[' | '“' | '‘' | '¿' | '¡')
        || !c.is_alphabetic() && !c.is_ascii_punctuation()
}

fn push_trimmed(text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let slice = &text[range.clone()];
    let lead = slice.len() - slice.trim_start().len();
    let trail = slice.len() - slice.trim_end().len();
    if lead + trail < slice.len() {
        out.push(range.start + lead..range.end - trail);
    }
}

/// Splits an over-long sentence into parts of at most `max` bytes, preferring clause
/// boundaries (`;` `:` `,` and dashes) near the middle, then spaces.
pub fn split_long(text: &str, range: Range<usize>, max: usize) -> Vec<Range<usize>> {
    if range.len() <= max {
        return vec![range];
    }
    let slice = &text[range.clone()];
    let cut = best_cut(slice, max);
    let (left, right) = (range.start..range.start + cut, range.start + cut..range.end);
    let mut parts = Vec::new();
    for part in [left, right] {
        let mut trimmed = Vec::new();
        push_trimmed(text, part, &mut trimmed);
        for t in trimmed {
            parts.extend(split_long(text, t, max));
        }
    }
    parts
}

/// Byte index just after the best place to cut `s` so that both sides shrink.
fn best_cut(s: &str, max: usize) -> usize {
    // Clause punctuation wins over a plain space unless it is much farther from the middle;
    // recursion in split_long handles a side that is still too long.
    let middle = s.len() / 2;
    let mut best: Option<(u32, usize)> = None; // (score, index); lower score is better
    for (i, c) in s.char_indices() {
        let after = i + c.len_utf8();
        if after >= s.len() || after == 0 {
            continue;
        }
        let rank = match c {
            ';' | ':' => 0,
            ',' => 1,
            ' ' if s[after..].starts_with(['—', '–', '-']) => 1,
            ' ' => 3,
            _ => continue,
        };
        let distance = after.abs_diff(middle) as u32;
        let score = rank * 1000 + distance * 3000 / s.len().max(1) as u32;
        if best.is_none_or(|(b, _)| score < b) {
            best = Some((score, after));
        }
    }
    best.map_or_else(
        || floor_char_boundary(s, max.min(s.len() - 1).max(1)),
        |(_, i)| i,
    )
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, ranges: &[Range<usize>]) -> Vec<&'a str> {
        ranges.iter().map(|r| &text[r.clone()]).collect()
    }

    #[test]
    fn splits_sentences_keeping_initials_and_quotes() {
        let text = "J. R. R. Tolkien wrote it. \"Stop!\" he said. Was it 3 p m? Yes... it was.";
        assert_eq!(
            texts(text, &sentences(text)),
            [
                "J. R. R. Tolkien wrote it.",
                "\"Stop!\" he said.",
                "Was it 3 p m?",
                "Yes... it was."
            ]
        );
    }

    #[test]
    fn lowercase_continuation_does_not_split() {
        let text = "He said wait... and then left. Done.";
        assert_eq!(
            texts(text, &sentences(text)),
            ["He said wait... and then left.", "Done."]
        );
    }

    #[test]
    fn long_sentences_split_at_clauses_within_the_limit() {
        let text = "The first part of this long sentence goes on for a while, and the second part continues it further; the third part closes it with some more words at the end.";
        let parts = split_long(text, 0..text.len(), 80);
        assert!(parts.len() >= 2);
        for p in &parts {
            assert!(p.len() <= 80, "{:?}", &text[p.clone()]);
        }
        assert!(text[parts[0].clone()].ends_with([',', ';']));
        let rejoined: String = texts(text, &parts).join(" ");
        assert_eq!(rejoined, text);
    }
}
