//! Phonemes to model input ids, Piper's framing: `^ _ id _ id _ … $`.

use std::collections::BTreeMap;

pub const BOS: &str = "^";
pub const EOS: &str = "$";
pub const PAD: &str = "_";

/// Maps phonemes to ids with beginning/end markers and a pad after each phoneme.
/// Phonemes the voice does not know are skipped, as Piper does; their count is returned so
/// callers can report them.
pub fn phonemes_to_ids(
    phonemes: &[String],
    id_map: &BTreeMap<String, Vec<i64>>,
) -> (Vec<i64>, usize) {
    let empty = Vec::new();
    let pad = id_map.get(PAD).unwrap_or(&empty);
    let mut ids = Vec::with_capacity(phonemes.len() * 2 + 3);
    ids.extend(id_map.get(BOS).unwrap_or(&empty));
    ids.extend(pad);
    let mut unknown = 0;
    for phoneme in phonemes {
        match id_map.get(phoneme.as_str()) {
            Some(mapped) => {
                ids.extend(mapped);
                ids.extend(pad);
            }
            None => unknown += 1,
        }
    }
    ids.extend(id_map.get(EOS).unwrap_or(&empty));
    (ids, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_pads_every_phoneme() {
        let map: BTreeMap<String, Vec<i64>> = [("^", 1), ("$", 2), ("_", 0), ("a", 14), ("b", 15)]
            .iter()
            .map(|(k, v)| (k.to_string(), vec![*v]))
            .collect();
        let (ids, unknown) = phonemes_to_ids(&["a".into(), "?".into(), "b".into()], &map);
        assert_eq!(ids, vec![1, 0, 14, 0, 15, 0, 2]);
        assert_eq!(unknown, 1);
    }
}
