//! [`FieldValue::of`](super::FieldValue::of) without a detour: a serde
//! [`Serializer`] that builds the [`FieldValue`] straight away, as
//! `serde_json::to_value` would build a `serde_json::Value` to be converted
//! (a map of tags went through a `BTreeMap` node of 640 bytes per value, a
//! million times in a large plan).
//!
//! It covers what the model's plain data serializes to: booleans,
//! integers, strings, options, sequences, maps with string keys, structs
//! and unit variants. Anything else (floats, bytes, the other enum
//! variants, 128-bit integers, non-string map keys, serde_json's private
//! structs) is [`Unsupported`], and the caller falls back to
//! `serde_json::to_value`, so the value is always the one that path gives.
//!
//! Architecture invariant: no I/O.

use std::fmt;

use serde::ser::{self, Impossible, Serialize, Serializer};

use super::{FieldValue, SortedMap};

/// The serializer: each value becomes its [`FieldValue`].
pub(super) struct Direct;

/// What [`Direct`] does not build itself (the caller falls back).
#[derive(Debug)]
pub(super) struct Unsupported;

impl fmt::Display for Unsupported {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("not built directly")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(_message: T) -> Self {
        Unsupported
    }
}

/// The items of a sequence or tuple so far.
pub(super) struct Items(Vec<FieldValue>);

/// The entries of a map or struct so far, and a key waiting for its value.
pub(super) struct Entries {
    map: SortedMap<FieldValue>,
    key: Option<String>,
}

impl Entries {
    fn with_capacity(capacity: Option<usize>) -> Entries {
        Entries {
            map: SortedMap::with_capacity(capacity.unwrap_or(0)),
            key: None,
        }
    }
}

impl Serializer for Direct {
    type Ok = FieldValue;
    type Error = Unsupported;
    type SerializeSeq = Items;
    type SerializeTuple = Items;
    type SerializeTupleStruct = Items;
    type SerializeTupleVariant = Impossible<FieldValue, Unsupported>;
    type SerializeMap = Entries;
    type SerializeStruct = Entries;
    type SerializeStructVariant = Impossible<FieldValue, Unsupported>;

    fn serialize_bool(self, value: bool) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Bool(value))
    }

    fn serialize_i8(self, value: i8) -> Result<FieldValue, Unsupported> {
        self.serialize_i64(i64::from(value))
    }

    fn serialize_i16(self, value: i16) -> Result<FieldValue, Unsupported> {
        self.serialize_i64(i64::from(value))
    }

    fn serialize_i32(self, value: i32) -> Result<FieldValue, Unsupported> {
        self.serialize_i64(i64::from(value))
    }

    fn serialize_i64(self, value: i64) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Number(value.into()))
    }

    fn serialize_u8(self, value: u8) -> Result<FieldValue, Unsupported> {
        self.serialize_u64(u64::from(value))
    }

    fn serialize_u16(self, value: u16) -> Result<FieldValue, Unsupported> {
        self.serialize_u64(u64::from(value))
    }

    fn serialize_u32(self, value: u32) -> Result<FieldValue, Unsupported> {
        self.serialize_u64(u64::from(value))
    }

    fn serialize_u64(self, value: u64) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Number(value.into()))
    }

    fn serialize_f32(self, _value: f32) -> Result<FieldValue, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_f64(self, _value: f64) -> Result<FieldValue, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_char(self, value: char) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::String(value.to_string()))
    }

    fn serialize_str(self, value: &str) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::String(value.to_owned()))
    }

    fn serialize_bytes(self, _value: &[u8]) -> Result<FieldValue, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_none(self) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Null)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<FieldValue, Unsupported> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Null)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Null)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::String(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<FieldValue, Unsupported> {
        if name.starts_with("$serde_json") {
            return Err(Unsupported);
        }
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<FieldValue, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Items, Unsupported> {
        Ok(Items(Vec::with_capacity(len.unwrap_or(0))))
    }

    fn serialize_tuple(self, len: usize) -> Result<Items, Unsupported> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Items, Unsupported> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Entries, Unsupported> {
        Ok(Entries::with_capacity(len))
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Entries, Unsupported> {
        if name.starts_with("$serde_json") {
            return Err(Unsupported);
        }
        Ok(Entries::with_capacity(Some(len)))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::String(value.to_string()))
    }
}

impl ser::SerializeSeq for Items {
    type Ok = FieldValue;
    type Error = Unsupported;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.0.push(value.serialize(Direct)?);
        Ok(())
    }

    fn end(self) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Array(self.0))
    }
}

impl ser::SerializeTuple for Items {
    type Ok = FieldValue;
    type Error = Unsupported;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<FieldValue, Unsupported> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Items {
    type Ok = FieldValue;
    type Error = Unsupported;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<FieldValue, Unsupported> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for Entries {
    type Ok = FieldValue;
    type Error = Unsupported;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        self.key = Some(key.serialize(KeyText)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        let key = self.key.take().ok_or(Unsupported)?;
        self.map.insert(key, value.serialize(Direct)?);
        Ok(())
    }

    fn end(self) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Object(self.map))
    }
}

impl ser::SerializeStruct for Entries {
    type Ok = FieldValue;
    type Error = Unsupported;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.map.insert(name.to_owned(), value.serialize(Direct)?);
        Ok(())
    }

    fn end(self) -> Result<FieldValue, Unsupported> {
        Ok(FieldValue::Object(self.map))
    }
}

/// Methods of a key serializer that refuse a scalar of the given type.
macro_rules! unsupported_scalars {
    ($($method:ident($type:ty)),* $(,)?) => {$(
        fn $method(self, _value: $type) -> Result<String, Unsupported> {
            Err(Unsupported)
        }
    )*};
}

/// A map key: only text (strings, characters, unit variants, text through
/// `Display`, newtypes of those) is built directly.
struct KeyText;

impl Serializer for KeyText {
    type Ok = String;
    type Error = Unsupported;
    type SerializeSeq = Impossible<String, Unsupported>;
    type SerializeTuple = Impossible<String, Unsupported>;
    type SerializeTupleStruct = Impossible<String, Unsupported>;
    type SerializeTupleVariant = Impossible<String, Unsupported>;
    type SerializeMap = Impossible<String, Unsupported>;
    type SerializeStruct = Impossible<String, Unsupported>;
    type SerializeStructVariant = Impossible<String, Unsupported>;

    fn serialize_str(self, value: &str) -> Result<String, Unsupported> {
        Ok(value.to_owned())
    }

    fn serialize_char(self, value: char) -> Result<String, Unsupported> {
        Ok(value.to_string())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, Unsupported> {
        Ok(variant.to_owned())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, Unsupported> {
        value.serialize(self)
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<String, Unsupported> {
        Ok(value.to_string())
    }

    unsupported_scalars! {
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
    }

    fn serialize_none(self) -> Result<String, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit(self) -> Result<String, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }
}
