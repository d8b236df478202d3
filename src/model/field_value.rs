//! [`FieldValue`]: the value of one field of an object, as the plan's
//! changes hold it — JSON, but with every map kept as a [`SortedMap`].
//!
//! A plan of a million asset transfers holds two million sets of fields,
//! and most hold an asset's tags. As a `serde_json::Value` a map of tags is
//! a `BTreeMap` whose first node alone takes about 640 bytes; as a
//! `SortedMap` two tags take about 112. The value serializes, compares and
//! hashes exactly as the `serde_json::Value` it replaces (maps in key
//! order, a repeated key keeping its last value), so plans, change ids and
//! records are byte for byte what they were.
//!
//! Architecture invariant: no I/O.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Number;

use super::SortedMap;

mod direct;
mod read;

pub use read::Error as FieldsError;

/// The deserializer of an object's fields: a typed object reads from it as
/// it would from the fields' `serde_json::Value` (the same value, or an
/// error of the same text), without that value being built.
pub fn fields_deserializer(
    fields: &SortedMap<FieldValue>,
) -> impl Deserializer<'_, Error = FieldsError> {
    read::Read::object(fields)
}

/// A JSON value whose objects are [`SortedMap`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FieldValue {
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<FieldValue>),
    Object(SortedMap<FieldValue>),
}

impl FieldValue {
    /// The value of anything serializable (`null` if it does not serialize,
    /// which the plain data of the model always does): exactly what
    /// `serde_json::to_value` gives, converted. Built straight from the
    /// value where [`direct`] can, through `serde_json::Value` otherwise.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> FieldValue {
        match value.serialize(direct::Direct) {
            Ok(value) => value,
            Err(direct::Unsupported) => serde_json::to_value(value)
                .map(FieldValue::from)
                .unwrap_or_default(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<FieldValue>> {
        match self {
            FieldValue::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&SortedMap<FieldValue>> {
        match self {
            FieldValue::Object(map) => Some(map),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            FieldValue::Number(number) => number.as_i64(),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, FieldValue::Null)
    }

    /// The value under `key` of an object; `None` for a missing key or a
    /// value that is not an object.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.as_object().and_then(|map| map.get(key))
    }
}

/// Compact JSON, as `serde_json::Value` displays.
impl fmt::Display for FieldValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        formatter.write_str(&text)
    }
}

/// Indexing gives `null` for a missing key, as with `serde_json::Value`.
impl std::ops::Index<&str> for FieldValue {
    type Output = FieldValue;
    fn index(&self, key: &str) -> &FieldValue {
        static NULL: FieldValue = FieldValue::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl From<serde_json::Value> for FieldValue {
    fn from(value: serde_json::Value) -> Self {
        use serde_json::Value;
        match value {
            Value::Null => FieldValue::Null,
            Value::Bool(value) => FieldValue::Bool(value),
            Value::Number(number) => FieldValue::Number(number),
            Value::String(text) => FieldValue::String(text),
            Value::Array(items) => {
                FieldValue::Array(items.into_iter().map(FieldValue::from).collect())
            }
            Value::Object(map) => FieldValue::Object(map.into()),
        }
    }
}

impl From<FieldValue> for serde_json::Value {
    fn from(value: FieldValue) -> Self {
        use serde_json::Value;
        match value {
            FieldValue::Null => Value::Null,
            FieldValue::Bool(value) => Value::Bool(value),
            FieldValue::Number(number) => Value::Number(number),
            FieldValue::String(text) => Value::String(text),
            FieldValue::Array(items) => Value::Array(items.into_iter().map(Value::from).collect()),
            FieldValue::Object(map) => Value::from(map),
        }
    }
}

impl From<&str> for FieldValue {
    fn from(text: &str) -> Self {
        FieldValue::String(text.to_string())
    }
}

impl From<String> for FieldValue {
    fn from(text: String) -> Self {
        FieldValue::String(text)
    }
}

impl From<i64> for FieldValue {
    fn from(number: i64) -> Self {
        FieldValue::Number(number.into())
    }
}

/// Compares with a `serde_json::Value` as if converted to one.
impl PartialEq<serde_json::Value> for FieldValue {
    fn eq(&self, other: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (self, other) {
            (FieldValue::Null, Value::Null) => true,
            (FieldValue::Bool(a), Value::Bool(b)) => a == b,
            (FieldValue::Number(a), Value::Number(b)) => a == b,
            (FieldValue::String(a), Value::String(b)) => a == b,
            (FieldValue::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a == b)
            }
            (FieldValue::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((key_a, a), (key_b, b))| key_a == key_b && a == b)
            }
            _ => false,
        }
    }
}

/// A string value equals the same text, as with `serde_json::Value`.
impl PartialEq<str> for FieldValue {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for FieldValue {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Null => serializer.serialize_unit(),
            FieldValue::Bool(value) => serializer.serialize_bool(*value),
            FieldValue::Number(number) => number.serialize(serializer),
            FieldValue::String(text) => serializer.serialize_str(text),
            FieldValue::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            FieldValue::Object(map) => map.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<FieldValue, E> {
        Ok(FieldValue::Number(value.into()))
    }

    /// A float that is not finite is `null`, as in `serde_json::Value`.
    fn visit_f64<E>(self, value: f64) -> Result<FieldValue, E> {
        Ok(Number::from_f64(value).map_or(FieldValue::Null, FieldValue::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<FieldValue, E> {
        Ok(FieldValue::String(value))
    }

    fn visit_none<E>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<FieldValue, D::Error> {
        Deserialize::deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<FieldValue, A::Error> {
        let mut items = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
        while let Some(item) = access.next_element()? {
            items.push(item);
        }
        Ok(FieldValue::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<FieldValue, A::Error> {
        let mut map = SortedMap::with_capacity(access.size_hint().unwrap_or(0).min(64));
        while let Some((key, value)) = access.next_entry::<String, FieldValue>()? {
            map.insert(key, value);
        }
        Ok(FieldValue::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Any JSON value up to a few levels deep, with keys that repeat.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-c\"\\\\é ]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-d]{0,2}", inner), 0..5)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// A `FieldValue` serializes, parses, displays and converts exactly
        /// as the `serde_json::Value` it stands for.
        #[test]
        fn field_values_behave_as_the_json_values_they_replace(value in json_value()) {
            let field = FieldValue::from(value.clone());
            prop_assert_eq!(&field, &value);
            let json = serde_json::to_string(&value).unwrap();
            prop_assert_eq!(serde_json::to_string(&field).unwrap(), json.clone());
            prop_assert_eq!(
                serde_json::to_string_pretty(&field).unwrap(),
                serde_json::to_string_pretty(&value).unwrap()
            );
            prop_assert_eq!(field.to_string(), value.to_string());
            let parsed: FieldValue = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&parsed, &field);
            prop_assert_eq!(Value::from(field.clone()), value.clone());
            prop_assert_eq!(FieldValue::of(&value), field);
        }
    }

    /// What `of` built before it built values directly.
    fn through_json<T: Serialize + ?Sized>(value: &T) -> FieldValue {
        serde_json::to_value(value)
            .map(FieldValue::from)
            .unwrap_or_default()
    }

    #[test]
    fn of_gives_what_serde_json_gives_for_every_object_of_every_kind() {
        let state = crate::store::sled_store::tests::sample_state();
        let mut compared = 0;
        macro_rules! compare {
            ($($map:ident),*) => {$(
                for object in state.$map.values() {
                    let direct = FieldValue::of(object);
                    assert_eq!(direct, through_json(object));
                    assert!(matches!(direct, FieldValue::Object(_)));
                    compared += 1;
                }
            )*};
        }
        compare!(
            accounts,
            users,
            groups,
            memberships,
            organizations,
            products,
            licenses,
            grants,
            invoices
        );
        for (_, object) in state.assets.iter() {
            let direct = FieldValue::of(&object);
            assert_eq!(direct, through_json(&object));
            compared += 1;
        }
        assert!(compared >= 10, "{compared}");
    }

    #[test]
    fn of_falls_back_to_serde_json_for_what_it_does_not_build() {
        use std::collections::BTreeMap;
        #[derive(serde::Serialize)]
        enum Shape {
            Circle(f64),
            Square { side: u32 },
            Pair(u8, u8),
            Plain,
        }
        let floats = vec![1.5f64, f64::NAN, -0.0];
        let numbered: BTreeMap<u32, &str> = [(2, "b"), (10, "a")].into();
        let flags: BTreeMap<bool, u8> = [(true, 1)].into();
        let keyed: BTreeMap<char, i8> = [('x', -1), ('a', 2)].into();
        let shapes = vec![
            Shape::Circle(2.0),
            Shape::Square { side: 3 },
            Shape::Pair(1, 2),
            Shape::Plain,
        ];
        assert_eq!(FieldValue::of(&floats), through_json(&floats));
        assert_eq!(FieldValue::of(&numbered), through_json(&numbered));
        assert_eq!(FieldValue::of(&flags), through_json(&flags));
        assert_eq!(FieldValue::of(&keyed), through_json(&keyed));
        assert_eq!(FieldValue::of(&shapes), through_json(&shapes));
        assert_eq!(FieldValue::of(&u128::MAX), through_json(&u128::MAX));
        assert_eq!(
            FieldValue::of(&(1u8, "two", None::<u8>)),
            through_json(&(1u8, "two", None::<u8>))
        );
        assert_eq!(FieldValue::of(&[0u8; 3][..]), through_json(&[0u8; 3][..]));
        assert_eq!(FieldValue::of("text"), FieldValue::String("text".into()));
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_and_keys_come_out_sorted() {
        let value: FieldValue =
            serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": 3}, "b": 4}"#).unwrap();
        assert_eq!(value.to_string(), r#"{"a":{"x":3,"y":2},"b":4}"#);
        assert_eq!(value["a"]["x"].as_i64(), Some(3));
        assert!(value["missing"].is_null());
        assert_eq!(
            value.get("a").and_then(|a| a.get("y")),
            Some(&FieldValue::Number(2.into()))
        );
    }

    /// Reads `T` from `fields` both ways: straight, and through the
    /// fields' `serde_json::Value`; the results or the error texts agree.
    fn read_both_ways<T>(fields: &SortedMap<FieldValue>) -> Result<T, String>
    where
        T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let straight = T::deserialize(fields_deserializer(fields)).map_err(|e| e.to_string());
        let through_json = serde_json::from_value::<T>(Value::from(fields.clone()))
            .map_err(|error| error.to_string());
        assert_eq!(straight, through_json, "{fields:?}");
        straight
    }

    #[test]
    fn fields_read_as_every_kind_as_through_serde_json_and_fail_alike() {
        use crate::model::{to_fields, Kind};
        use crate::store::codec::Object;
        let state = crate::store::sled_store::tests::sample_state();
        let mut read = 0;
        for kind in Kind::ALL {
            for id in state.ids(kind) {
                let fields = state.fields(kind, &id).expect("fields");
                let straight =
                    Object::deserialize_kind(kind, fields_deserializer(&fields)).expect("reads");
                assert_eq!(to_fields(&straight), fields);
                read += 1;
                // Each field missing, null, of another type, and one unknown.
                for name in fields.keys() {
                    let mut broken = fields.clone();
                    broken.remove(name);
                    let errors = [
                        broken.clone(),
                        {
                            let mut null = fields.clone();
                            null.insert(name.clone(), FieldValue::Null);
                            null
                        },
                        {
                            let mut other = fields.clone();
                            let value = match &fields[name.as_str()] {
                                FieldValue::String(_) => FieldValue::Number(7.into()),
                                _ => FieldValue::String("seven".into()),
                            };
                            other.insert(name.clone(), value);
                            other
                        },
                        {
                            let mut unknown = fields.clone();
                            unknown.insert("zz_unknown".into(), FieldValue::Bool(true));
                            unknown
                        },
                    ];
                    for fields in errors {
                        let straight = Object::deserialize_kind(kind, fields_deserializer(&fields))
                            .map(|object| to_fields(&object))
                            .map_err(|error| error.to_string());
                        let through_json =
                            Object::deserialize_kind(kind, Value::from(fields.clone()))
                                .map(|object| to_fields(&object))
                                .map_err(|error| error.to_string());
                        assert_eq!(straight, through_json, "{kind} {id}: {fields:?}");
                    }
                }
            }
        }
        assert!(read >= 10, "{read}");
    }

    #[test]
    fn values_of_every_shape_read_as_through_serde_json() {
        use std::collections::BTreeMap;
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Shape {
            Unit,
            Newtype(u8),
            Tuple(u8, String),
            Struct { a: Option<bool> },
        }
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Wrapper(i64);
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Everything {
            flag: bool,
            small: i8,
            large: u64,
            negative: i64,
            real: f64,
            text: String,
            letter: char,
            nothing: Option<u8>,
            something: Option<String>,
            list: Vec<u16>,
            pair: (u8, String),
            map: BTreeMap<String, i32>,
            shapes: Vec<Shape>,
            wrapper: Wrapper,
            unit: (),
            #[serde(default)]
            defaulted: u8,
        }
        let object = |text: &str| match serde_json::from_str::<FieldValue>(text).expect("json") {
            FieldValue::Object(fields) => fields,
            other => panic!("not an object: {other}"),
        };
        let good = r#"{"flag": true, "small": -3, "large": 18446744073709551615,
            "negative": -9007199254740993, "real": 2.5, "text": "é\"", "letter": "x",
            "nothing": null, "something": "s", "list": [1, 2], "pair": [1, "one"],
            "map": {"b": 2, "a": -1}, "wrapper": 5, "unit": null,
            "shapes": ["unit", {"newtype": 4}, {"tuple": [1, "t"]}, {"struct": {"a": null}},
                       {"unit": null}]}"#;
        let everything = read_both_ways::<Everything>(&object(good)).expect("reads");
        assert_eq!(everything.shapes.len(), 5);
        for bad in [
            r#"{"flag": 1}"#,
            r#"{"flag": true, "small": 300}"#,
            r#"{"flag": true, "small": 1, "large": -1}"#,
            r#"{"flag": true, "small": 1, "large": 1, "negative": 1.5}"#,
            r#"{"flag": true, "small": 1, "large": 1, "negative": 1, "real": "r"}"#,
            r#"{"flag": true, "small": 1, "large": 1, "negative": 1, "real": 1, "text": [],
                "letter": "xy"}"#,
            r#"{"shapes": [{"newtype": 1, "unit": null}]}"#,
            r#"{"shapes": [{"nope": 1}]}"#,
            r#"{"shapes": ["newtype"]}"#,
            r#"{"shapes": [{"unit": 3}]}"#,
            r#"{"shapes": [{"tuple": {"a": 1}}]}"#,
            r#"{"shapes": [{"struct": [1]}]}"#,
            r#"{"shapes": [7]}"#,
            r#"{"pair": [1, "one", 2]}"#,
            r#"{"pair": [1]}"#,
            r#"{"unit": 0}"#,
            r#"{"map": {"a": "b"}}"#,
            r#"{"zz": 1}"#,
        ] {
            let error = read_both_ways::<Everything>(&object(bad)).expect_err(bad);
            assert!(!error.is_empty());
        }
    }

    #[test]
    fn a_field_value_is_no_larger_than_a_json_value() {
        // Maps are one vector (24 bytes) instead of a B-tree root: the
        // enum stays at the size of `serde_json::Value`.
        assert_eq!(
            std::mem::size_of::<FieldValue>(),
            std::mem::size_of::<serde_json::Value>()
        );
    }
}
