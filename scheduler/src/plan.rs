//! Fan-out: a parsed document's items cut into segments of a few sentences, each with a
//! content address so identical work is rendered once.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use voxproof_text::{Item, Script};

/// Sentences per segment: small enough that a lost segment costs little to redo and that
/// several workers share a chapter, large enough that per-task overhead stays negligible.
pub const SENTENCES_PER_SEGMENT: usize = 6;

/// What decides a segment's audio besides its text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RenderSettings {
    pub model_sha256: String,
    pub speaker_id: Option<i64>,
    pub rate: f32,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
}

#[derive(Debug, Clone)]
pub struct PlannedSegment {
    pub index: i32,
    pub items: Vec<Item>,
    pub sentences: i32,
    pub content_key: String,
}

/// Cuts the script into segments in order; every item lands in exactly one segment.
pub fn segments(script: &Script, voice: &str, settings: &RenderSettings) -> Vec<PlannedSegment> {
    let mut out = Vec::new();
    let mut current: Vec<Item> = Vec::new();
    let mut sentences = 0usize;
    for item in &script.items {
        let is_sentence = matches!(item, Item::Sentence(_));
        current.push(item.clone());
        if is_sentence {
            sentences += 1;
            if sentences == SENTENCES_PER_SEGMENT {
                out.push(finish(
                    out.len(),
                    std::mem::take(&mut current),
                    voice,
                    settings,
                ));
                sentences = 0;
            }
        }
    }
    if !current.is_empty() {
        out.push(finish(out.len(), current, voice, settings));
    }
    out
}

fn finish(
    index: usize,
    items: Vec<Item>,
    voice: &str,
    settings: &RenderSettings,
) -> PlannedSegment {
    let sentences = items
        .iter()
        .filter(|i| matches!(i, Item::Sentence(_)))
        .count();
    PlannedSegment {
        index: index as i32,
        content_key: content_key(voice, settings, &items),
        sentences: sentences as i32,
        items,
    }
}

/// `segments/<voice>/<sha256>`: the hash covers the model digest, the settings and what is
/// spoken (not where it sits in the document), so a resubmitted or retried job reuses it.
pub fn content_key(voice: &str, settings: &RenderSettings, items: &[Item]) -> String {
    #[derive(Serialize)]
    struct Spoken<'a> {
        pieces: &'a [voxproof_text::Piece],
        rate: f32,
    }
    let spoken: Vec<Option<Spoken<'_>>> = items
        .iter()
        .map(|item| match item {
            Item::Sentence(s) => Some(Spoken {
                pieces: &s.pieces,
                rate: s.rate,
            }),
            _ => None,
        })
        .collect();
    let mut h = Sha256::new();
    // v2: segments are stored with their sample counts first (`voxproof-jobs` blob).
    h.update(b"voxproof-segment-v2\0");
    h.update(serde_json::to_vec(settings).unwrap_or_default());
    h.update([0]);
    h.update(serde_json::to_vec(&spoken).unwrap_or_default());
    format!("segments/{voice}/{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxproof_text::{parse, script, InputFormat, Lexicon};

    fn settings() -> RenderSettings {
        RenderSettings {
            model_sha256: "abc".into(),
            speaker_id: None,
            rate: 1.0,
            noise_scale: None,
            noise_w: None,
        }
    }

    fn plan(text: &str) -> Vec<PlannedSegment> {
        let doc = parse(text.as_bytes(), InputFormat::Markdown).unwrap();
        segments(&script(&doc, &Lexicon::default()), "v", &settings())
    }

    #[test]
    fn every_item_lands_once_in_order() {
        let text = (1..=20)
            .map(|i| format!("Sentence number {i} is here."))
            .collect::<Vec<_>>()
            .join(" ");
        let doc = parse(
            format!("# One\n\n{text}\n\n# Two\n\n{text}").as_bytes(),
            InputFormat::Markdown,
        )
        .unwrap();
        let script = script(&doc, &Lexicon::default());
        let planned = segments(&script, "v", &settings());
        let flat: Vec<Item> = planned.iter().flat_map(|s| s.items.clone()).collect();
        assert_eq!(flat, script.items);
        assert!(planned
            .iter()
            .all(|s| s.sentences as usize <= SENTENCES_PER_SEGMENT));
        assert_eq!(
            planned.iter().map(|s| s.sentences as usize).sum::<usize>(),
            script.sentences().count()
        );
        assert!(planned
            .iter()
            .enumerate()
            .all(|(i, s)| s.index as usize == i));
    }

    #[test]
    fn keys_follow_content_and_settings_not_position() {
        let a = plan("Hello there. How are you?");
        let b = plan("Hello there. How are you?");
        assert_eq!(a[0].content_key, b[0].content_key);
        let c = plan("Hello there. How are we?");
        assert_ne!(a[0].content_key, c[0].content_key);
        let mut faster = settings();
        faster.rate = 1.2;
        let items = &a[0].items;
        assert_ne!(
            content_key("v", &faster, items),
            content_key("v", &settings(), items)
        );
        assert_ne!(
            content_key("w", &settings(), items),
            content_key("v", &settings(), items)
        );
    }
}
