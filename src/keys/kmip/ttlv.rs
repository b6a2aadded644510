//! KMIP 1.x binary encoding (TTLV): every item is a 3-byte tag, a 1-byte type, a 4-byte
//! big-endian length and a value padded with zeros to a multiple of 8 bytes.
//!
//! Only the types the client needs are supported (no Big Integer). [`decode`] is meant
//! for hostile input: lengths are checked against the bytes present, nesting is bounded
//! by [`MAX_DEPTH`], and nothing in it panics.

use zeroize::Zeroize;

/// How deep structures may nest in a decoded message. KMIP messages the client handles
/// nest about 6 deep; anything deeper is refused.
pub const MAX_DEPTH: usize = 32;

/// The length of an item's header: tag, type and length.
pub const HEADER_LEN: usize = 8;

/// One TTLV item: a tag and a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttlv {
    /// The item's tag (24 bits; KMIP's own tags are 0x42xxxx).
    pub tag: u32,
    /// The item's value.
    pub value: Value,
}

/// The value of a TTLV item, one variant per supported item type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Type 0x01: a sequence of items.
    Structure(Vec<Ttlv>),
    /// Type 0x02: a signed 32-bit integer.
    Integer(i32),
    /// Type 0x03: a signed 64-bit integer.
    LongInteger(i64),
    /// Type 0x05: an unsigned 32-bit enumeration value.
    Enumeration(u32),
    /// Type 0x06: a boolean, encoded as 8 bytes holding 0 or 1.
    Boolean(bool),
    /// Type 0x07: UTF-8 text.
    TextString(String),
    /// Type 0x08: bytes.
    ByteString(Vec<u8>),
    /// Type 0x09: seconds since the Unix epoch.
    DateTime(i64),
    /// Type 0x0A: a duration in seconds.
    Interval(u32),
}

/// Why bytes do not decode as TTLV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends inside an item.
    #[error("TTLV truncated at byte {0}")]
    Truncated(usize),
    /// An item has a type this decoder does not know.
    #[error("TTLV item at byte {at} has unsupported type 0x{ty:02x}")]
    UnknownType {
        /// Offset of the item.
        at: usize,
        /// Its type byte.
        ty: u8,
    },
    /// A fixed-size item has the wrong length, or a boolean is neither 0 nor 1.
    #[error("TTLV item at byte {0} has a malformed value")]
    BadValue(usize),
    /// A text string is not UTF-8.
    #[error("TTLV text string at byte {0} is not UTF-8")]
    BadText(usize),
    /// Structures nest deeper than [`MAX_DEPTH`].
    #[error("TTLV structures nest deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Bytes are left after the top-level item.
    #[error("{0} trailing bytes after the TTLV item")]
    Trailing(usize),
}

impl Ttlv {
    /// A Structure item.
    pub fn structure(tag: u32, items: Vec<Ttlv>) -> Ttlv {
        Ttlv {
            tag,
            value: Value::Structure(items),
        }
    }
    /// An Integer item.
    pub fn integer(tag: u32, v: i32) -> Ttlv {
        Ttlv {
            tag,
            value: Value::Integer(v),
        }
    }
    /// An Enumeration item.
    pub fn enumeration(tag: u32, v: u32) -> Ttlv {
        Ttlv {
            tag,
            value: Value::Enumeration(v),
        }
    }
    /// A Text String item.
    pub fn text(tag: u32, v: &str) -> Ttlv {
        Ttlv {
            tag,
            value: Value::TextString(v.to_owned()),
        }
    }
    /// A Byte String item.
    pub fn bytes(tag: u32, v: &[u8]) -> Ttlv {
        Ttlv {
            tag,
            value: Value::ByteString(v.to_vec()),
        }
    }

    /// The items of a Structure (empty for any other type).
    pub fn items(&self) -> &[Ttlv] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }
    /// The first direct child with this tag.
    pub fn child(&self, tag: u32) -> Option<&Ttlv> {
        self.items().iter().find(|t| t.tag == tag)
    }
    /// Every direct child with this tag.
    pub fn children(&self, tag: u32) -> impl Iterator<Item = &Ttlv> {
        self.items().iter().filter(move |t| t.tag == tag)
    }
    /// The text of a Text String item.
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(s) => Some(s),
            _ => None,
        }
    }
    /// The bytes of a Byte String item.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(b) => Some(b),
            _ => None,
        }
    }
    /// The value of an Enumeration item.
    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    /// The value of an Integer item.
    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }

    /// The TTLV bytes of this item.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Appends the TTLV bytes of this item to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let tag = self.tag.to_be_bytes();
        out.extend_from_slice(&tag[1..]);
        out.push(self.value.type_byte());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        match &self.value {
            Value::Structure(items) => items.iter().for_each(|i| i.encode_into(out)),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::TextString(s) => out.extend_from_slice(s.as_bytes()),
            Value::ByteString(b) => out.extend_from_slice(b),
        }
        let len = out.len() - start;
        // A message is far below 4 GiB: the client builds small requests only.
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        out[len_at..len_at + 4].copy_from_slice(&len32.to_be_bytes());
        out.resize(out.len() + padding(len), 0);
    }
}

impl Value {
    fn type_byte(&self) -> u8 {
        match self {
            Value::Structure(_) => 0x01,
            Value::Integer(_) => 0x02,
            Value::LongInteger(_) => 0x03,
            Value::Enumeration(_) => 0x05,
            Value::Boolean(_) => 0x06,
            Value::TextString(_) => 0x07,
            Value::ByteString(_) => 0x08,
            Value::DateTime(_) => 0x09,
            Value::Interval(_) => 0x0A,
        }
    }
}

impl Zeroize for Ttlv {
    fn zeroize(&mut self) {
        match &mut self.value {
            Value::Structure(items) => items.iter_mut().for_each(Zeroize::zeroize),
            Value::TextString(s) => s.zeroize(),
            Value::ByteString(b) => b.zeroize(),
            _ => {}
        }
    }
}

/// Zero bytes that pad a value of `len` bytes to a multiple of 8.
fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// The value length announced by an item's 8-byte header, or `None` if `header` is short.
pub fn header_value_len(header: &[u8]) -> Option<usize> {
    let b: [u8; 4] = header.get(4..8)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(b)).ok()
}

/// Decodes exactly one TTLV item filling all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Ttlv, DecodeError> {
    let (item, used) = decode_at(bytes, 0, 0)?;
    if used != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - used));
    }
    Ok(item)
}

/// Decodes the item starting at `at`; returns it and the offset just past it (padding
/// included).
fn decode_at(bytes: &[u8], at: usize, depth: usize) -> Result<(Ttlv, usize), DecodeError> {
    let header = bytes.get(at..at + HEADER_LEN).ok_or(DecodeError::Truncated(at))?;
    let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let ty = header[3];
    let len = header_value_len(header).ok_or(DecodeError::Truncated(at))?;
    let start = at + HEADER_LEN;
    let end = start.checked_add(len).ok_or(DecodeError::Truncated(at))?;
    let raw = bytes.get(start..end).ok_or(DecodeError::Truncated(at))?;
    let padded_end = end + padding(len);
    if padded_end > bytes.len() {
        return Err(DecodeError::Truncated(at));
    }
    let fixed4 = || -> Result<[u8; 4], DecodeError> { raw.try_into().map_err(|_| DecodeError::BadValue(at)) };
    let fixed8 = || -> Result<[u8; 8], DecodeError> { raw.try_into().map_err(|_| DecodeError::BadValue(at)) };
    let value = match ty {
        0x01 => {
            if depth >= MAX_DEPTH {
                return Err(DecodeError::TooDeep);
            }
            let mut items = Vec::new();
            let mut pos = start;
            while pos < end {
                let (item, next) = decode_at(&bytes[..end], pos, depth + 1)?;
                items.push(item);
                pos = next;
            }
            Value::Structure(items)
        }
        0x02 => Value::Integer(i32::from_be_bytes(fixed4()?)),
        0x03 => Value::LongInteger(i64::from_be_bytes(fixed8()?)),
        0x05 => Value::Enumeration(u32::from_be_bytes(fixed4()?)),
        0x06 => match u64::from_be_bytes(fixed8()?) {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            _ => return Err(DecodeError::BadValue(at)),
        },
        0x07 => Value::TextString(
            std::str::from_utf8(raw)
                .map_err(|_| DecodeError::BadText(at))?
                .to_owned(),
        ),
        0x08 => Value::ByteString(raw.to_vec()),
        0x09 => Value::DateTime(i64::from_be_bytes(fixed8()?)),
        0x0A => Value::Interval(u32::from_be_bytes(fixed4()?)),
        _ => return Err(DecodeError::UnknownType { at, ty }),
    };
    Ok((Ttlv { tag, value }, padded_end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The encoding examples of the KMIP 1.2 specification, section 9.1.2.
    #[test]
    fn known_answers_from_the_spec() {
        let cases = [
            (Ttlv::integer(0x420020, 8), "420020 02 00000004 00000008 00000000"),
            (
                Ttlv {
                    tag: 0x420020,
                    value: Value::LongInteger(123_456_789_000_000_000),
                },
                "420020 03 00000008 01B69B4BA5749200",
            ),
            (
                Ttlv::enumeration(0x420020, 255),
                "420020 05 00000004 000000FF 00000000",
            ),
            (
                Ttlv {
                    tag: 0x420020,
                    value: Value::Boolean(true),
                },
                "420020 06 00000008 0000000000000001",
            ),
            (
                Ttlv::text(0x420020, "Hello World"),
                "420020 07 0000000B 48656C6C6F20576F726C64 0000000000",
            ),
            (
                Ttlv::bytes(0x420020, &[1, 2, 3]),
                "420020 08 00000003 010203 0000000000",
            ),
            (
                Ttlv {
                    tag: 0x420020,
                    value: Value::DateTime(0x47DA67F8),
                },
                "420020 09 00000008 0000000047DA67F8",
            ),
            (
                Ttlv {
                    tag: 0x420020,
                    value: Value::Interval(864_000),
                },
                "420020 0A 00000004 000D2F00 00000000",
            ),
            (
                Ttlv::structure(
                    0x420020,
                    vec![Ttlv::enumeration(0x420004, 254), Ttlv::integer(0x420005, 255)],
                ),
                "420020 01 00000020 420004 05 00000004 000000FE 00000000 \
                 420005 02 00000004 000000FF 00000000",
            ),
        ];
        for (item, bytes) in cases {
            let bytes = hex(bytes);
            assert_eq!(item.encode(), bytes, "{item:?}");
            assert_eq!(decode(&bytes).unwrap(), item);
        }
    }

    #[test]
    fn hostile_inputs_are_refused() {
        // Announces 4 GiB.
        assert!(matches!(
            decode(&hex("420020 08 FFFFFFFF 00")),
            Err(DecodeError::Truncated(0))
        ));
        // Missing padding.
        assert!(decode(&hex("420020 08 00000003 010203")).is_err());
        // Integer of the wrong size.
        assert!(matches!(
            decode(&hex("420020 02 00000008 0000000000000001")),
            Err(DecodeError::BadValue(0))
        ));
        // Boolean 2.
        assert!(decode(&hex("420020 06 00000008 0000000000000002")).is_err());
        // Big Integer is not supported.
        assert!(matches!(
            decode(&hex("420020 04 00000008 0000000000000001")),
            Err(DecodeError::UnknownType { .. })
        ));
        // A child runs past its parent's end.
        assert!(decode(&hex(
            "420020 01 00000008 420004 08 00000010 0000000000000000 0000000000000000"
        ))
        .is_err());
        // Trailing bytes.
        assert!(matches!(
            decode(&hex("420020 02 00000004 00000008 00000000 00")),
            Err(DecodeError::Trailing(1))
        ));
        // Deep nesting: MAX_DEPTH + 2 nested structures, innermost empty.
        let mut deep = Ttlv::structure(0x420001, vec![]);
        for _ in 0..MAX_DEPTH + 1 {
            deep = Ttlv::structure(0x420001, vec![deep]);
        }
        assert_eq!(decode(&deep.encode()), Err(DecodeError::TooDeep));
    }

    fn leaf() -> impl Strategy<Value = Ttlv> {
        let tag = 0x420000u32..0x420200;
        let value = prop_oneof![
            any::<i32>().prop_map(Value::Integer),
            any::<i64>().prop_map(Value::LongInteger),
            any::<u32>().prop_map(Value::Enumeration),
            any::<bool>().prop_map(Value::Boolean),
            ".{0,20}".prop_map(Value::TextString),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::ByteString),
            any::<i64>().prop_map(Value::DateTime),
            any::<u32>().prop_map(Value::Interval),
        ];
        (tag, value).prop_map(|(tag, value)| Ttlv { tag, value })
    }

    fn tree() -> impl Strategy<Value = Ttlv> {
        leaf().prop_recursive(5, 64, 6, |inner| {
            (0x420000u32..0x420200, proptest::collection::vec(inner, 0..6))
                .prop_map(|(tag, items)| Ttlv::structure(tag, items))
        })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(item in tree()) {
            let bytes = item.encode();
            prop_assert_eq!(bytes.len() % 8, 0);
            prop_assert_eq!(decode(&bytes), Ok(item));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_encodings_never_panic(item in tree(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let mut bytes = item.encode();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = byte;
                bytes.truncate(bytes.len() - cut % bytes.len());
            }
            let _ = decode(&bytes);
        }
    }
}
