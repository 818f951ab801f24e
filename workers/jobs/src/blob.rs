//! The stored form of a rendered segment: its items' PCM, in order.
//!
//! `VXPCM1\0\0`, sample rate (u32 LE), item count (u32 LE), then per item a sample count
//! (u32 LE) and that many f32 LE samples. The model's raw output is kept (mastering happens
//! at assembly, across the whole book), so f32 rather than 16-bit.

const MAGIC: &[u8; 8] = b"VXPCM1\0\0";

pub fn encode(sample_rate: u32, items: &[Vec<f32>]) -> Vec<u8> {
    let samples: usize = items.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(16 + 4 * items.len() + 4 * samples);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for pcm in items {
        out.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
        for s in pcm {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("segment audio is damaged: {0}")]
pub struct BlobError(&'static str);

pub fn decode(bytes: &[u8]) -> Result<(u32, Vec<Vec<f32>>), BlobError> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(BlobError("bad header"))?;
    let mut cursor = rest;
    let take_u32 = |cursor: &mut &[u8]| -> Result<u32, BlobError> {
        let (head, tail) = cursor
            .split_first_chunk::<4>()
            .ok_or(BlobError("truncated"))?;
        *cursor = tail;
        Ok(u32::from_le_bytes(*head))
    };
    let sample_rate = take_u32(&mut cursor)?;
    let count = take_u32(&mut cursor)? as usize;
    let mut items = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = take_u32(&mut cursor)? as usize;
        let byte_len = len.checked_mul(4).ok_or(BlobError("bad length"))?;
        if cursor.len() < byte_len {
            return Err(BlobError("truncated"));
        }
        let (data, tail) = cursor.split_at(byte_len);
        items.push(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
        cursor = tail;
    }
    if !cursor.is_empty() {
        return Err(BlobError("trailing bytes"));
    }
    Ok((sample_rate, items))
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
}
