//! The compact form of what a plan holds by the million, one allocation
//! instead of a tree of maps and strings: [`PackedChangeFields`], the
//! `before` and `after` of a [`Change`](super::Change), each side read as a
//! [`PackedFieldsRef`] ([`PackedFields`] is one side alone, owned). Assets,
//! of the state and of the target's overlay, are packed the same way by
//! [`crate::model::PackedAsset`]; both use the primitives of
//! `model/packing.rs`.
//!
//! A plan holds two sides per change, and a rule that moves a million
//! assets makes a million changes. As [`Fields`], an asset's owner and
//! tags took about fifteen allocations (each name, each value, each map's
//! vector); packed, they are one run of bytes, about a third of the size.
//! Plans are unchanged byte for byte: a packed value serializes to exactly
//! what its fields serialize to (it walks the bytes and hands the same
//! maps, strings and numbers to the serializer, without building them),
//! and [`PackedFields::unpack`] gives the fields back, equal to those
//! packed.
//!
//! The encoding, private to this module: a map is its entry count, then
//! each name and value; a value is a tag byte (`0` null, `t`/`f`, `#`
//! number as its JSON text, `s` string, `a` array, `m` map) and its body;
//! counts and lengths are LEB128 varints. Only [`PackedFields::pack`]
//! makes the bytes, so reading them cannot fail short of a bug here; if it
//! did, the reader gives up on the rest rather than panic.
//!
//! Architecture invariant: no I/O.

use std::fmt;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::model::packing::{write_length, write_text, Reader};
use crate::model::{FieldValue, Fields};

/// Fields, packed (see the module doc), owned. Equal packed fields are
/// equal fields: [`Fields`] are sorted by name, so the bytes are
/// canonical. Readers are on [`PackedFieldsRef`], the borrowed form that
/// [`PackedChangeFields`] also gives.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PackedFields(Box<[u8]>);

impl PackedFields {
    /// Packs `fields`.
    pub fn pack(fields: &Fields) -> PackedFields {
        let mut bytes = Vec::with_capacity(64);
        write_map(&mut bytes, fields);
        PackedFields(bytes.into_boxed_slice())
    }

    /// The packed fields, borrowed.
    pub fn as_packed_ref(&self) -> PackedFieldsRef<'_> {
        PackedFieldsRef(&self.0)
    }

    /// The fields packed, as they were.
    pub fn unpack(&self) -> Fields {
        self.as_packed_ref().unpack()
    }

    /// The value of field `name`, unpacked alone.
    pub fn get(&self, name: &str) -> Option<FieldValue> {
        self.as_packed_ref().get(name)
    }

    /// The text of field `name` when it is a string (no copy).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.as_packed_ref().text(name)
    }

    /// Whether there is a field `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.as_packed_ref().contains_key(name)
    }
}

impl From<&Fields> for PackedFields {
    fn from(fields: &Fields) -> Self {
        PackedFields::pack(fields)
    }
}

impl fmt::Debug for PackedFields {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_packed_ref().fmt(formatter)
    }
}

impl Serialize for PackedFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_packed_ref().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PackedFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Fields::deserialize(deserializer).map(|fields| PackedFields::pack(&fields))
    }
}

/// Packed fields, borrowed: from a [`PackedFields`] or from one side of a
/// [`PackedChangeFields`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackedFieldsRef<'a>(&'a [u8]);

impl<'a> PackedFieldsRef<'a> {
    /// The fields packed, as they were.
    pub fn unpack(self) -> Fields {
        let mut reader = Reader { bytes: self.0 };
        reader.map().unwrap_or_default()
    }

    /// The value of field `name`, unpacked alone.
    pub fn get(self, name: &str) -> Option<FieldValue> {
        let mut reader = self.find(name)?;
        reader.value()
    }

    /// The text of field `name` when it is a string, borrowed from the
    /// packed bytes (no copy).
    pub fn text(self, name: &str) -> Option<&'a str> {
        let mut reader = self.find(name)?;
        match reader.byte()? {
            b's' => reader.text(),
            _ => None,
        }
    }

    /// The entries of field `name` when it is a map whose values are all
    /// strings, in key order, borrowed from the packed bytes (no copy):
    /// `None` when there is no such field or it is anything else.
    pub fn text_map(self, name: &str) -> Option<Vec<(&'a str, &'a str)>> {
        let mut reader = self.find(name)?;
        if reader.byte()? != b'm' {
            return None;
        }
        let count = reader.length()?;
        let mut entries = Vec::with_capacity(count.min(reader.bytes.len()));
        for _ in 0..count {
            let key = reader.text()?;
            if reader.byte()? != b's' {
                return None;
            }
            entries.push((key, reader.text()?));
        }
        Some(entries)
    }

    /// Whether there is a field `name`.
    pub fn contains_key(self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// How many fields there are.
    pub fn len(self) -> usize {
        Reader { bytes: self.0 }.length().unwrap_or_default()
    }

    /// Whether there are no fields.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// A reader at the value of field `name`.
    fn find(self, name: &str) -> Option<Reader<'a>> {
        let mut reader = Reader { bytes: self.0 };
        for _ in 0..reader.length()? {
            if reader.text()? == name {
                return Some(reader);
            }
            reader.skip_value()?;
        }
        None
    }
}

impl fmt::Debug for PackedFieldsRef<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.unpack().fmt(formatter)
    }
}

impl Serialize for PackedFieldsRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PackedMap(self.0).serialize(serializer)
    }
}

/// A change's `before` and `after`, packed together in one allocation (a
/// plan holds a million at scale): a byte saying which of the two there
/// are, the length of `before`'s bytes, then `before`'s bytes and
/// `after`'s.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PackedChangeFields(Box<[u8]>);

const HAS_BEFORE: u8 = 1;
const HAS_AFTER: u8 = 2;

impl PackedChangeFields {
    /// Packs both sides.
    pub fn pack(before: Option<&Fields>, after: Option<&Fields>) -> PackedChangeFields {
        let mut bytes = Vec::with_capacity(128);
        bytes.push(u8::from(before.is_some()) * HAS_BEFORE + u8::from(after.is_some()) * HAS_AFTER);
        if let Some(before) = before {
            write_map(&mut bytes, before);
            // Its length goes in front of it, once it is known.
            let mut length = Vec::with_capacity(4);
            write_length(&mut length, bytes.len() - 1);
            bytes.splice(1..1, length);
        }
        if let Some(after) = after {
            write_map(&mut bytes, after);
        }
        PackedChangeFields(bytes.into_boxed_slice())
    }

    /// Both sides from their packed forms (bytes copied, not re-encoded).
    pub fn join(before: Option<&PackedFields>, after: Option<&PackedFields>) -> PackedChangeFields {
        let size = 8 + before.map_or(0, |b| b.0.len()) + after.map_or(0, |a| a.0.len());
        let mut bytes = Vec::with_capacity(size);
        bytes.push(u8::from(before.is_some()) * HAS_BEFORE + u8::from(after.is_some()) * HAS_AFTER);
        if let Some(before) = before {
            write_length(&mut bytes, before.0.len());
            bytes.extend_from_slice(&before.0);
        }
        if let Some(after) = after {
            bytes.extend_from_slice(&after.0);
        }
        PackedChangeFields(bytes.into_boxed_slice())
    }

    /// The two sides' bytes; `None` for a side not there (or for bytes
    /// these functions never make).
    fn sides(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        let mut reader = Reader { bytes: &self.0 };
        let Some(flags) = reader.byte() else {
            return (None, None);
        };
        let before = if flags & HAS_BEFORE != 0 {
            match reader.length() {
                Some(length) if length <= reader.bytes.len() => {
                    let (before, rest) = reader.bytes.split_at(length);
                    reader.bytes = rest;
                    Some(before)
                }
                _ => return (None, None),
            }
        } else {
            None
        };
        let after = (flags & HAS_AFTER != 0).then_some(reader.bytes);
        (before, after)
    }

    /// The fields that change, as they are now.
    pub fn before(&self) -> Option<PackedFieldsRef<'_>> {
        self.sides().0.map(PackedFieldsRef)
    }

    /// The fields that change, as they will be.
    pub fn after(&self) -> Option<PackedFieldsRef<'_>> {
        self.sides().1.map(PackedFieldsRef)
    }
}

impl fmt::Debug for PackedChangeFields {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PackedChangeFields")
            .field("before", &self.before())
            .field("after", &self.after())
            .finish()
    }
}

// ---- writing ----

fn write_map(bytes: &mut Vec<u8>, map: &Fields) {
    write_length(bytes, map.len());
    for (name, value) in map.iter() {
        write_text(bytes, name);
        write_value(bytes, value);
    }
}

fn write_value(bytes: &mut Vec<u8>, value: &FieldValue) {
    match value {
        FieldValue::Null => bytes.push(b'0'),
        FieldValue::Bool(true) => bytes.push(b't'),
        FieldValue::Bool(false) => bytes.push(b'f'),
        FieldValue::Number(number) => {
            bytes.push(b'#');
            write_text(bytes, &number.to_string());
        }
        FieldValue::String(text) => {
            bytes.push(b's');
            write_text(bytes, text);
        }
        FieldValue::Array(items) => {
            bytes.push(b'a');
            write_length(bytes, items.len());
            for item in items {
                write_value(bytes, item);
            }
        }
        FieldValue::Object(map) => {
            bytes.push(b'm');
            write_map(bytes, map);
        }
    }
}

// ---- reading ----

impl<'a> Reader<'a> {
    fn map(&mut self) -> Option<Fields> {
        let count = self.length()?;
        let mut map = Fields::with_capacity(count.min(self.bytes.len()));
        for _ in 0..count {
            let name = self.text()?.to_string();
            let value = self.value()?;
            map.insert(name, value);
        }
        Some(map)
    }

    fn value(&mut self) -> Option<FieldValue> {
        Some(match self.byte()? {
            b'0' => FieldValue::Null,
            b't' => FieldValue::Bool(true),
            b'f' => FieldValue::Bool(false),
            b'#' => FieldValue::Number(self.text()?.parse().ok()?),
            b's' => FieldValue::String(self.text()?.to_string()),
            b'a' => {
                let count = self.length()?;
                let mut items = Vec::with_capacity(count.min(self.bytes.len()));
                for _ in 0..count {
                    items.push(self.value()?);
                }
                FieldValue::Array(items)
            }
            b'm' => FieldValue::Object(self.map()?),
            _ => return None,
        })
    }

    /// Steps over one value; gives its bytes (tag included).
    fn skip_value(&mut self) -> Option<&'a [u8]> {
        let start = self.bytes;
        match self.byte()? {
            b'0' | b't' | b'f' => {}
            b'#' | b's' => {
                self.text()?;
            }
            b'a' => {
                for _ in 0..self.length()? {
                    self.skip_value()?;
                }
            }
            b'm' => {
                for _ in 0..self.length()? {
                    self.text()?;
                    self.skip_value()?;
                }
            }
            _ => return None,
        }
        Some(&start[..start.len() - self.bytes.len()])
    }
}

// ---- serializing without unpacking ----

const BROKEN: &str = "packed fields are broken";

/// The body of a packed map (count, then entries).
struct PackedMap<'a>(&'a [u8]);

/// One packed value (tag, then body).
struct PackedValue<'a>(&'a [u8]);

impl Serialize for PackedMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut reader = Reader { bytes: self.0 };
        let count = reader.length().ok_or_else(|| S::Error::custom(BROKEN))?;
        let mut map = serializer.serialize_map(Some(count))?;
        for _ in 0..count {
            let name = reader.text().ok_or_else(|| S::Error::custom(BROKEN))?;
            let value = reader
                .skip_value()
                .ok_or_else(|| S::Error::custom(BROKEN))?;
            map.serialize_entry(name, &PackedValue(value))?;
        }
        map.end()
    }
}

impl Serialize for PackedValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let broken = || S::Error::custom(BROKEN);
        let mut reader = Reader { bytes: self.0 };
        match reader.byte().ok_or_else(broken)? {
            b'0' => serializer.serialize_unit(),
            b't' => serializer.serialize_bool(true),
            b'f' => serializer.serialize_bool(false),
            b'#' => {
                let number: serde_json::Number = reader
                    .text()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(broken)?;
                number.serialize(serializer)
            }
            b's' => serializer.serialize_str(reader.text().ok_or_else(broken)?),
            b'a' => {
                let count = reader.length().ok_or_else(broken)?;
                let mut seq = serializer.serialize_seq(Some(count))?;
                for _ in 0..count {
                    let item = reader.skip_value().ok_or_else(broken)?;
                    seq.serialize_element(&PackedValue(item))?;
                }
                seq.end()
            }
            b'm' => PackedMap(reader.bytes).serialize(serializer),
            _ => Err(broken()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn fields(value: serde_json::Value) -> Fields {
        match FieldValue::from(value) {
            FieldValue::Object(map) => map,
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn an_asset_transfer_packs_smaller_and_back_to_the_same_fields() {
        let before = fields(json!({
            "owner": "user:u08@a0999.ex.com",
            "tags": {"cost-center": "cc-5", "project": "galileo"},
        }));
        let packed = PackedFields::pack(&before);
        assert_eq!(packed.unpack(), before);
        assert_eq!(
            serde_json::to_string_pretty(&packed).unwrap(),
            serde_json::to_string_pretty(&before).unwrap()
        );
        // Names, values and lengths, no more: 2 + 6 + 23 + 5 + 2 + 12 + 5 + 8 + 8.
        assert!(packed.0.len() < 80, "{}", packed.0.len());
    }

    #[test]
    fn every_kind_of_value_serializes_as_its_fields_do() {
        let all = fields(json!({
            "a": null, "b": true, "c": false, "d": 12, "e": -3, "f": 2.5,
            "g": 18446744073709551615u64, "h": "text with \"quotes\" and é",
            "i": [1, "two", [3], {"four": 4}], "j": {}, "k": [], "l": {"m": {"n": null}},
            "": "empty name",
        }));
        let packed = PackedFields::pack(&all);
        assert_eq!(packed.unpack(), all);
        assert_eq!(
            serde_json::to_string(&packed).unwrap(),
            serde_json::to_string(&all).unwrap()
        );
        let back: PackedFields =
            serde_json::from_str(&serde_json::to_string(&all).unwrap()).unwrap();
        assert_eq!(back, packed);
        assert_eq!(format!("{packed:?}"), format!("{all:?}"));
        for (name, value) in all.iter() {
            assert_eq!(packed.get(name).as_ref(), Some(value), "{name}");
            assert_eq!(packed.text(name), value.as_str(), "{name}");
        }
        assert!(all.keys().all(|name| packed.contains_key(name)));
        assert!(!packed.contains_key("z"));
        assert_eq!(packed.get("z"), None);
        assert_eq!(packed.text("z"), None);
    }

    #[test]
    fn broken_bytes_give_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x01",
            b"\x01\x01a",
            b"\x01\x01az",
            b"\x01\x01as\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ] {
            let packed = PackedFields(bytes.to_vec().into_boxed_slice());
            assert_eq!(packed.unpack(), Fields::new());
            assert!(serde_json::to_string(&packed).is_err(), "{bytes:?}");
            let pair = PackedChangeFields(bytes.to_vec().into_boxed_slice());
            if let Some(before) = pair.before() {
                assert!(before.unpack().len() <= 1);
            }
        }
        // A length past the end gives neither side.
        let pair = PackedChangeFields(b"\x03\x7f\x00".to_vec().into_boxed_slice());
        assert_eq!((pair.before(), pair.after()), (None, None));
    }

    fn value_strategy() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e300f64..1e300).prop_map(serde_json::Value::from),
            ".{0,300}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,12}", inner, 0..8)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_fields_pack_unpack_and_serialize_as_they_were(
            map in prop::collection::btree_map(".{0,12}", value_strategy(), 0..8)
        ) {
            let original = fields(serde_json::Value::Object(map.into_iter().collect()));
            let packed = PackedFields::pack(&original);
            prop_assert_eq!(packed.unpack(), original.clone());
            // Each field read in place as a map of texts: only a map whose
            // values are all strings, entry for entry.
            for (name, value) in original.iter() {
                let texts = match value {
                    FieldValue::Object(map) => map
                        .iter()
                        .map(|(key, value)| Some((key.as_str(), value.as_str()?)))
                        .collect::<Option<Vec<_>>>(),
                    _ => None,
                };
                prop_assert_eq!(packed.as_packed_ref().text_map(name), texts);
            }
            prop_assert_eq!(packed.as_packed_ref().text_map("\u{0}not a field"), None);
            prop_assert_eq!(
                serde_json::to_string_pretty(&packed).unwrap(),
                serde_json::to_string_pretty(&original).unwrap()
            );
        }

        #[test]
        fn any_pair_of_sides_packs_together_and_reads_back_apart(
            before in prop::option::of(prop::collection::btree_map(".{0,12}", value_strategy(), 0..6)),
            after in prop::option::of(prop::collection::btree_map(".{0,12}", value_strategy(), 0..6)),
        ) {
            let side = |map: Option<std::collections::BTreeMap<String, serde_json::Value>>| {
                map.map(|map| fields(serde_json::Value::Object(map.into_iter().collect())))
            };
            let (before, after) = (side(before), side(after));
            let pair = PackedChangeFields::pack(before.as_ref(), after.as_ref());
            prop_assert_eq!(pair.before().map(PackedFieldsRef::unpack), before.clone());
            prop_assert_eq!(pair.after().map(PackedFieldsRef::unpack), after.clone());
            let packed_before = before.as_ref().map(PackedFields::pack);
            let packed_after = after.as_ref().map(PackedFields::pack);
            prop_assert_eq!(
                pair.before(),
                packed_before.as_ref().map(PackedFields::as_packed_ref)
            );
            prop_assert_eq!(
                &PackedChangeFields::join(packed_before.as_ref(), packed_after.as_ref()),
                &pair
            );
        }
    }
}
