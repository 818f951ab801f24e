//! The 64-bit payload, and the provenance-record payload built from it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keystream::hmac_sha256;
use crate::subkey;

/// The 64 bits a mark carries. Serialized as 16 lowercase hex digits (JSON numbers cannot
/// hold 64 bits exactly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Payload(pub u64);

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0.to_be_bytes()))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 8];
        hex::decode_to_slice(&text, &mut bytes).map_err(serde::de::Error::custom)?;
        Ok(Self(u64::from_be_bytes(bytes)))
    }
}

impl Payload {
    /// The payload for provenance record `record_id`: the id in the high 32 bits, and in the
    /// low 32 bits a tag, the first four bytes of HMAC-SHA256 under a subkey of `key`. Only
    /// the key holder can make a tag that checks, and a random 64-bit value passes
    /// [`Payload::record_id`] with probability 2⁻³².
    pub fn for_record(key: &[u8], record_id: u32) -> Self {
        Self(((record_id as u64) << 32) | record_tag(&record_key(key), record_id) as u64)
    }

    /// The record id, if the tag is the one `key` gives it.
    pub fn record_id(&self, key: &[u8]) -> Option<u32> {
        self.record_id_under(&record_key(key))
    }

    /// [`Payload::record_id`] with the record subkey already derived.
    pub(crate) fn record_id_under(&self, record_key: &[u8; 32]) -> Option<u32> {
        let id = (self.0 >> 32) as u32;
        (record_tag(record_key, id) == self.0 as u32).then_some(id)
    }
}

/// The subkey record tags are made with.
pub(crate) fn record_key(key: &[u8]) -> [u8; 32] {
    subkey(key, "record tag")
}

fn record_tag(record_key: &[u8; 32], record_id: u32) -> u32 {
    let mac = hmac_sha256(record_key, &[&record_id.to_be_bytes()]);
    u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_payloads_check_only_under_their_key() {
        let p = Payload::for_record(b"deployment key", 123_456);
        assert_eq!(p.0 >> 32, 123_456);
        assert_eq!(p.record_id(b"deployment key"), Some(123_456));
        assert_eq!(p.record_id(b"another key"), None);
        assert_eq!(Payload(p.0 ^ 1).record_id(b"deployment key"), None);
    }

    #[test]
    fn serializes_as_hex() {
        let p = Payload(0x0123_4567_89ab_cdef);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"0123456789abcdef\"");
        assert_eq!(serde_json::from_str::<Payload>(&json).unwrap(), p);
        assert_eq!(p.to_string(), "0123456789abcdef");
    }
}
