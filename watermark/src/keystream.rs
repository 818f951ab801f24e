//! Keyed pseudo-random streams: HMAC-SHA256 of the secret key over a context label and a
//! block counter.
//!
//! Everything secret about the mark (which cells carry which bit, and each cell's sign) is
//! drawn from these streams, so without the key the pattern is indistinguishable from coin
//! flips, and a detector holding a different key correlates against independent signs.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `key` over `parts`, each part length-prefixed so that different splits of
/// the same bytes never collide.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// An endless stream of pseudo-random bytes: HMAC-SHA256(key, label ‖ counter) blocks.
pub(crate) struct Keystream {
    key: Vec<u8>,
    label: Vec<u8>,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl Keystream {
    pub(crate) fn new(key: &[u8], label: &str) -> Self {
        Self {
            key: key.to_vec(),
            label: label.as_bytes().to_vec(),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn next_byte(&mut self) -> u8 {
        if self.used == self.block.len() {
            self.block = hmac_sha256(&self.key, &[&self.label, &self.counter.to_be_bytes()]);
            self.counter += 1;
            self.used = 0;
        }
        let byte = self.block[self.used];
        self.used += 1;
        byte
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        u32::from_be_bytes([
            self.next_byte(),
            self.next_byte(),
            self.next_byte(),
            self.next_byte(),
        ])
    }

    /// A uniform integer in `0..bound` (rejection sampling, so no modulo bias).
    pub(crate) fn below(&mut self, bound: u32) -> u32 {
        assert!(bound > 0);
        let zone = u32::MAX - (u32::MAX % bound);
        loop {
            let value = self.next_u32();
            if value < zone {
                return value % bound;
            }
        }
    }

    /// `len` independent fair signs (+1 or −1).
    pub(crate) fn signs(&mut self, len: usize) -> Vec<i8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let byte = self.next_byte();
            for bit in 0..8 {
                if out.len() == len {
                    break;
                }
                out.push(if byte >> bit & 1 == 1 { 1 } else { -1 });
            }
        }
        out
    }

    /// A uniformly random permutation of `0..len` (Fisher–Yates).
    pub(crate) fn permutation(&mut self, len: usize) -> Vec<usize> {
        let mut items: Vec<usize> = (0..len).collect();
        for i in (1..len).rev() {
            let j = self.below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_key_and_label() {
        let a = Keystream::new(b"key one", "chips").signs(256);
        let b = Keystream::new(b"key one", "chips").signs(256);
        let c = Keystream::new(b"key two", "chips").signs(256);
        let d = Keystream::new(b"key one", "order").signs(256);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        let ones = a.iter().filter(|&&s| s == 1).count();
        assert!((96..=160).contains(&ones), "{ones} of 256 signs are +1");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut perm = Keystream::new(b"k", "p").permutation(1000);
        assert_ne!(perm, (0..1000).collect::<Vec<_>>());
        perm.sort_unstable();
        assert_eq!(perm, (0..1000).collect::<Vec<_>>());
    }
}
