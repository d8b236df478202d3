//! The byte primitives of deed's packed forms (a change's fields in
//! `plan::packed`, an asset in [`super::assets`]): LEB128 varint lengths,
//! texts as a length and their bytes, and a reader of both from the front
//! of a slice. Only deed's packers write these bytes, so a reader that
//! meets bytes they never make gives up with `None`, never panics.
//!
//! Architecture invariant: no I/O.

/// Appends `length` as a LEB128 varint.
pub(crate) fn write_length(bytes: &mut Vec<u8>, mut length: usize) {
    loop {
        let low = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            bytes.push(low);
            return;
        }
        bytes.push(low | 0x80);
    }
}

/// The bytes [`write_length`] writes for `length`.
pub(crate) fn length_size(length: usize) -> usize {
    (usize::BITS - length.leading_zeros()).div_ceil(7).max(1) as usize
}

/// Appends `text` as its length and bytes.
pub(crate) fn write_text(bytes: &mut Vec<u8>, text: &str) {
    write_length(bytes, text.len());
    bytes.extend_from_slice(text.as_bytes());
}

/// Reads packed bytes from the front; `None` on bytes no packer makes.
pub(crate) struct Reader<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(*first)
    }

    pub fn length(&mut self) -> Option<usize> {
        let mut length = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let byte = self.byte()?;
            length |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(length);
            }
        }
        None
    }

    /// [`Reader::length`], refusing a length not written in as few bytes
    /// as [`write_length`] writes it (so that equal values have equal bytes).
    pub fn shortest_length(&mut self) -> Option<usize> {
        let before = self.bytes.len();
        let length = self.length()?;
        let used = before - self.bytes.len();
        (used == length_size(length)).then_some(length)
    }

    pub fn text(&mut self) -> Option<&'a str> {
        let length = self.length()?;
        self.text_of(length)
    }

    /// [`Reader::text`] with its length as [`Reader::shortest_length`] reads it.
    pub fn shortest_text(&mut self) -> Option<&'a str> {
        let length = self.shortest_length()?;
        self.text_of(length)
    }

    fn text_of(&mut self, length: usize) -> Option<&'a str> {
        if length > self.bytes.len() {
            return None;
        }
        let (text, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        std::str::from_utf8(text).ok()
    }
}
