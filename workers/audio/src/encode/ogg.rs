//! A minimal Ogg muxer (RFC 3533): pages of whole or continued packets with CRC.

use std::io::Write;

const MAX_SEGMENTS: usize = 255;

/// Writes one logical bitstream's pages.
pub(super) struct OggWriter<W: Write> {
    out: W,
    serial: u32,
    sequence: u32,
    lacing: Vec<u8>,
    body: Vec<u8>,
    /// The page being filled starts with the rest of a packet from the previous page.
    continued: bool,
    first: bool,
    /// Granule position of the last packet added.
    granule: u64,
}

impl<W: Write> OggWriter<W> {
    pub(super) fn new(out: W, serial: u32) -> Self {
        Self {
            out,
            serial,
            sequence: 0,
            lacing: Vec::new(),
            body: Vec::new(),
            continued: false,
            first: true,
            granule: 0,
        }
    }

    /// Adds a packet; pages fill up to 255 segments and flush on their own.
    pub(super) fn packet(&mut self, packet: &[u8], granule: u64) -> std::io::Result<()> {
        let mut rest = packet;
        loop {
            if self.lacing.len() == MAX_SEGMENTS {
                // The packet continues on the next page; this page ends no packet.
                self.flush_page(u64::MAX, false)?;
                self.continued = true;
            }
            let take = rest.len().min(255);
            self.lacing.push(take as u8);
            self.body.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if take < 255 {
                break;
            }
            if rest.is_empty() {
                // A packet of a multiple of 255 bytes ends with a zero-length segment.
                if self.lacing.len() == MAX_SEGMENTS {
                    self.flush_page(u64::MAX, false)?;
                    self.continued = true;
                }
                self.lacing.push(0);
                break;
            }
        }
        self.granule = granule;
        Ok(())
    }

    pub(super) fn pending_segments(&self) -> usize {
        self.lacing.len()
    }

    /// Ends the current page (if it holds anything), stamped with the last packet's granule.
    pub(super) fn end_page(&mut self, last: bool) -> std::io::Result<()> {
        if self.lacing.is_empty() && !last {
            return Ok(());
        }
        let granule = self.granule;
        self.flush_page(granule, last)?;
        self.continued = false;
        Ok(())
    }

    pub(super) fn into_inner(self) -> W {
        self.out
    }

    fn flush_page(&mut self, granule: u64, last: bool) -> std::io::Result<()> {
        let mut page = Vec::with_capacity(27 + self.lacing.len() + self.body.len());
        page.extend_from_slice(b"OggS");
        page.push(0);
        let mut flags = 0u8;
        if self.continued {
            flags |= 0x01;
        }
        if self.first {
            flags |= 0x02;
        }
        if last {
            flags |= 0x04;
        }
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(self.lacing.len() as u8);
        page.extend_from_slice(&self.lacing);
        page.extend_from_slice(&self.body);
        let crc = crc32(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&page)?;
        self.sequence += 1;
        self.first = false;
        self.lacing.clear();
        self.body.clear();
        Ok(())
    }
}

/// Ogg's CRC-32: polynomial 0x04C11DB7, no reflection, zero initial value and final XOR.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::LazyLock<[u32; 256]> = std::sync::LazyLock::new(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04C1_1DB7
                } else {
                    r << 1
                };
            }
            *entry = r;
        }
        table
    });
    data.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ TABLE[((crc >> 24) as u8 ^ b) as usize]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_a_known_page() {
        // CRC-32/CKSUM's check value for "123456789" is 0x765E7680; Ogg uses the same
        // polynomial without the final inversion, so its check value is the complement.
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
    }

    #[test]
    fn long_packets_span_pages() {
        let mut writer = OggWriter::new(Vec::new(), 7);
        writer.packet(&vec![1u8; 255 * 300], 42).unwrap();
        writer.end_page(true).unwrap();
        let bytes = writer.into_inner();
        let pages = bytes.windows(4).filter(|w| w == b"OggS").count();
        assert_eq!(pages, 2);
        // Second page is a continuation and the last page.
        let second = bytes.windows(4).rposition(|w| w == b"OggS").unwrap();
        assert_eq!(bytes[second + 5], 0x01 | 0x04);
    }
}
