//! The stored form of a rendered segment: its items' PCM, in order.
//!
//! `VXPCM2\0\0`, sample rate (u32 LE), item count (u32 LE), each item's sample count (u32 LE),
//! then each item's samples as f32 LE. The model's raw output is kept (mastering happens at
//! assembly, across the whole book), so f32 rather than 16-bit. The counts come first so
//! that a segment can be checked for reuse from its first bytes and its size, without
//! fetching its samples.

const MAGIC: &[u8; 8] = b"VXPCM2\0\0";

pub fn encode(sample_rate: u32, items: &[Vec<f32>]) -> Vec<u8> {
    let samples: usize = items.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(16 + 4 * items.len() + 4 * samples);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for pcm in items {
        out.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    }
    for pcm in items {
        for s in pcm {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("segment audio is damaged: {0}")]
pub struct BlobError(&'static str);

/// What a segment's first bytes say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sample_rate: u32,
    /// Samples of each item.
    pub lengths: Vec<u32>,
}

/// Bytes before the first sample of a segment of `items` items.
pub fn header_bytes(items: usize) -> usize {
    16 + 4 * items
}

impl Header {
    fn len(&self) -> usize {
        header_bytes(self.lengths.len())
    }

    pub fn samples(&self) -> u64 {
        self.lengths.iter().map(|&n| u64::from(n)).sum()
    }

    /// The size of the whole stored segment this header describes.
    pub fn stored_bytes(&self) -> u64 {
        self.len() as u64 + 4 * self.samples()
    }
}

/// The header at the start of `prefix`, or `None` when `prefix` ends before the header does.
pub fn header(prefix: &[u8]) -> Result<Option<Header>, BlobError> {
    let magic = MAGIC.len().min(prefix.len());
    if prefix[..magic] != MAGIC[..magic] {
        return Err(BlobError("bad header"));
    }
    let word = |at: usize| {
        prefix
            .get(at..at + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    };
    let (Some(sample_rate), Some(count)) = (word(8), word(12)) else {
        return Ok(None);
    };
    let end = (count as usize)
        .checked_mul(4)
        .and_then(|table| table.checked_add(16))
        .ok_or(BlobError("bad length"))?;
    let Some(table) = prefix.get(16..end) else {
        return Ok(None);
    };
    Ok(Some(Header {
        sample_rate,
        lengths: table
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
    }))
}

pub fn decode(bytes: &[u8]) -> Result<(u32, Vec<Vec<f32>>), BlobError> {
    let header = header(bytes)?.ok_or(BlobError("truncated"))?;
    if bytes.len() as u64 != header.stored_bytes() {
        return Err(BlobError(if (bytes.len() as u64) < header.stored_bytes() {
            "truncated"
        } else {
            "trailing bytes"
        }));
    }
    let mut samples = &bytes[header.len()..];
    let items = header
        .lengths
        .iter()
        .map(|&len| {
            let (data, rest) = samples.split_at(4 * len as usize);
            samples = rest;
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect();
    Ok((header.sample_rate, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let items = vec![vec![0.5, -0.25, 1.5], vec![], vec![0.125]];
        let bytes = encode(22050, &items);
        assert_eq!(decode(&bytes).unwrap(), (22050, items));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"garbage").is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
    }

    #[test]
    fn the_header_alone_tells_the_items_and_the_size() {
        let items = vec![vec![0.5, -0.25, 1.5], vec![], vec![0.125]];
        let bytes = encode(22050, &items);
        let expected = Header {
            sample_rate: 22050,
            lengths: vec![3, 0, 1],
        };
        // 8 magic + rate + count + three lengths.
        for cut in 0..28 {
            assert_eq!(header(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
        for cut in [28, 30, bytes.len()] {
            assert_eq!(header(&bytes[..cut]).unwrap(), Some(expected.clone()));
        }
        assert_eq!(expected.samples(), 4);
        assert_eq!(expected.stored_bytes(), bytes.len() as u64);
        assert!(header(b"VXPCM1\0\0").is_err());
        assert!(header(b"VX?").is_err());
    }
}
