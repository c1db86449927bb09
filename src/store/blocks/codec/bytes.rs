//! Byte-level helpers of the block format: LEB128 varints, zigzag, bitmaps, and a cursor
//! whose every read is bounds-checked, so corrupt input is an error and never a panic.

/// An error inside a block, before it is given the column it belongs to.
pub(super) type Bad = String;

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// `bits` packed eight to a byte, least significant bit first.
pub(super) fn put_bitmap(out: &mut Vec<u8>, bits: impl Iterator<Item = bool>) {
    let mut byte = 0u8;
    let mut n = 0;
    for b in bits {
        byte |= (b as u8) << (n % 8);
        n += 1;
        if n % 8 == 0 {
            out.push(byte);
            byte = 0;
        }
    }
    if n % 8 != 0 {
        out.push(byte);
    }
}

/// Reads a block's bytes front to back.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn consumed(&self) -> &'a [u8] {
        &self.buf[..self.pos]
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if n > self.remaining() {
            return Err(format!(
                "needs {n} bytes at byte {} but only {} remain",
                self.pos,
                self.remaining()
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(super) fn byte(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32_le(&mut self) -> Result<u32, Bad> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn varint(&mut self) -> Result<u64, Bad> {
        let at = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self
                .byte()
                .map_err(|_| format!("varint at byte {at} runs past the end"))?;
            if shift == 63 && b > 1 {
                return Err(format!("varint at byte {at} overflows 64 bits"));
            }
            v |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(format!("varint at byte {at} is longer than 10 bytes"))
    }

    /// A varint that counts something of which at most `max` can exist.
    pub(super) fn count(&mut self, what: &str, max: usize) -> Result<usize, Bad> {
        let v = self.varint()?;
        if v > max as u64 {
            return Err(format!("{what} {v} exceeds {max}"));
        }
        Ok(v as usize)
    }

    /// `n` bits of a bitmap written by [`put_bitmap`]; padding bits must be zero.
    pub(super) fn bitmap(&mut self, n: usize) -> Result<Vec<bool>, Bad> {
        let bytes = self.take(n.div_ceil(8))?;
        if !n.is_multiple_of(8) && bytes[n / 8] >> (n % 8) != 0 {
            return Err("bitmap has bits set past its end".into());
        }
        Ok((0..n).map(|i| bytes[i / 8] >> (i % 8) & 1 == 1).collect())
    }

    pub(super) fn finish(&self, what: &str) -> Result<(), Bad> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(format!("{n} bytes left over after the {what}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip_at_the_extremes() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, i64::MIN + 1] {
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(v));
            assert_eq!(out.len(), varint_len(zigzag(v)));
            let mut c = Cursor::new(&out);
            assert_eq!(unzigzag(c.varint().unwrap()), v);
            assert!(c.finish("varint").is_ok());
        }
        let too_long = [0xFFu8; 11];
        assert!(Cursor::new(&too_long).varint().is_err());
        assert!(Cursor::new(&[0x80]).varint().is_err());
    }

    #[test]
    fn bitmap_round_trips_and_refuses_stray_padding() {
        let bits = [true, false, true, true, false, false, false, true, true];
        let mut out = Vec::new();
        put_bitmap(&mut out, bits.iter().copied());
        assert_eq!(Cursor::new(&out).bitmap(9).unwrap(), bits);
        out[1] |= 0x80;
        assert!(Cursor::new(&out).bitmap(9).is_err());
    }
}
