//! [`SortedMap`]: a small map kept as a vector sorted by key, for the maps
//! deed holds by the million with a handful of entries each: the fields of
//! an object ([`Fields`](super::Fields), two per change of a plan) and the
//! tags of an asset ([`Tags`](super::Tags)).
//!
//! A `BTreeMap` allocates a whole node (about 550 bytes) even for one
//! entry. This map iterates, serializes and compares in key order, as the
//! `BTreeMap` it replaces did, so records and plans are byte-for-byte what
//! they were; a repeated key when deserializing keeps its last value, as
//! with a `BTreeMap`. Lookups are binary searches: these maps are small.
//!
//! Architecture invariant: no I/O.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::FieldValue;

/// Key → value, in key order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SortedMap<V>(Vec<(String, V)>);

impl<V> Default for SortedMap<V> {
    fn default() -> Self {
        SortedMap(Vec::new())
    }
}

impl<V> SortedMap<V> {
    pub fn new() -> Self {
        SortedMap(Vec::new())
    }

    pub fn with_capacity(capacity: usize) -> Self {
        SortedMap(Vec::with_capacity(capacity))
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(existing, _)| existing.as_str().cmp(key))
    }

    /// Sets `key` to `value`; gives the value it replaces.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.position(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.position(key).ok().map(|at| &self.0[at].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        match self.position(key) {
            Ok(at) => Some(&mut self.0[at].1),
            Err(_) => None,
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.position(key).ok().map(|at| self.0.remove(at).1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order, as a slice.
    pub fn entries(&self) -> &[(String, V)] {
        &self.0
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &V)> + ExactSizeIterator {
        self.0.iter().map(|(key, value)| (key, value))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.0.iter().map(|(key, _)| key)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, value)| value)
    }
}

impl<V> FromIterator<(String, V)> for SortedMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut map = SortedMap::new();
        map.extend(iter);
        map
    }
}

impl<V> Extend<(String, V)> for SortedMap<V> {
    fn extend<I: IntoIterator<Item = (String, V)>>(&mut self, iter: I) {
        for (key, value) in iter {
            self.insert(key, value);
        }
    }
}

impl<V, const N: usize> From<[(String, V); N]> for SortedMap<V> {
    fn from(entries: [(String, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<V> IntoIterator for SortedMap<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a SortedMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, V)>,
        fn(&'a (String, V)) -> (&'a String, &'a V),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(key, value)| (key, value))
    }
}

impl<V: Serialize> Serialize for SortedMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SortedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = SortedMap<V>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = SortedMap::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some((key, value)) = access.next_entry::<String, V>()? {
                    map.insert(key, value);
                }
                // JSON gives no size: one entry took room for four. A
                // state holds a million asset tags.
                map.0.shrink_to_fit();
                Ok(map)
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// `Fields` as JSON: indexing gives `null` for a missing name, as indexing a
/// `serde_json::Value` does.
impl std::ops::Index<&str> for SortedMap<FieldValue> {
    type Output = FieldValue;
    fn index(&self, key: &str) -> &FieldValue {
        static NULL: FieldValue = FieldValue::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for SortedMap<FieldValue> {
    fn from(map: serde_json::Map<String, serde_json::Value>) -> Self {
        let mut fields = SortedMap::with_capacity(map.len());
        // A `serde_json::Map` is in key order already: each entry goes last.
        fields.extend(
            map.into_iter()
                .map(|(name, value)| (name, FieldValue::from(value))),
        );
        fields
    }
}

impl From<SortedMap<FieldValue>> for serde_json::Map<String, serde_json::Value> {
    fn from(fields: SortedMap<FieldValue>) -> Self {
        fields
            .0
            .into_iter()
            .map(|(name, value)| (name, serde_json::Value::from(value)))
            .collect()
    }
}

impl From<SortedMap<FieldValue>> for serde_json::Value {
    fn from(fields: SortedMap<FieldValue>) -> Self {
        serde_json::Value::Object(fields.into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// A state holds a million asset tags read from JSON, which gives no
    /// size: none keeps room it does not use.
    #[test]
    fn a_map_read_from_json_keeps_no_spare_room() {
        for count in 0..6 {
            let text = serde_json::to_string(
                &(0..count)
                    .map(|n| (format!("k{n}"), format!("v{n}")))
                    .collect::<BTreeMap<_, _>>(),
            )
            .unwrap();
            let map: SortedMap<String> = serde_json::from_str(&text).unwrap();
            assert_eq!((map.len(), map.0.capacity()), (count, count), "{text}");
        }
        let asset: crate::model::Asset = serde_json::from_str(
            r#"{"account":"a","owner":"user:u@a.com","creator":null,"folder":null,"versions":["u@a.com"],"tags":{"project":"x"}}"#,
        )
        .unwrap();
        assert_eq!(asset.versions.capacity(), 1);
        assert_eq!(asset.tags.0.capacity(), 1);
    }

    proptest! {
        /// Whatever the order of insertion, a `SortedMap` of JSON values
        /// holds, iterates and serializes exactly what a `serde_json::Map`
        /// does (the `Fields` it replaces).
        #[test]
        fn fields_behave_as_the_json_map_they_replace(
            entries in proptest::collection::vec(("[a-e]{1,3}", any::<i64>()), 0..12),
            removed in proptest::collection::vec("[a-e]{1,3}", 0..4),
        ) {
            let mut fields = SortedMap::new();
            let mut map = serde_json::Map::new();
            for (name, value) in &entries {
                prop_assert_eq!(
                    fields.insert(name.clone(), FieldValue::from(Value::from(*value))),
                    map.insert(name.clone(), Value::from(*value)).map(FieldValue::from)
                );
            }
            for name in &removed {
                prop_assert_eq!(fields.remove(name), map.remove(name).map(FieldValue::from));
            }
            prop_assert_eq!(fields.len(), map.len());
            prop_assert!(fields.iter().map(|(name, _)| name).eq(map.keys()));
            prop_assert!(fields.values().zip(map.values()).all(|(a, b)| a == b));
            let json = serde_json::to_string(&map).unwrap();
            prop_assert_eq!(serde_json::to_string(&fields).unwrap(), json.clone());
            let back: SortedMap<FieldValue> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &fields);
            prop_assert_eq!(SortedMap::from(map.clone()), fields.clone());
            prop_assert_eq!(serde_json::Map::from(fields), map);
        }

        /// The same against a `BTreeMap` of strings (the `Tags` it
        /// replaces), including the JSON value it turns into.
        #[test]
        fn tags_behave_as_the_btree_map_they_replace(
            entries in proptest::collection::vec(("[a-e]{1,3}", "[x-z]{0,2}"), 0..12),
            removed in proptest::collection::vec("[a-e]{1,3}", 0..4),
        ) {
            let mut tags = SortedMap::new();
            let mut map = BTreeMap::new();
            for (key, value) in &entries {
                prop_assert_eq!(
                    tags.insert(key.clone(), value.clone()),
                    map.insert(key.clone(), value.clone())
                );
            }
            for key in &removed {
                prop_assert_eq!(tags.remove(key), map.remove(key));
            }
            prop_assert_eq!(tags.iter().collect::<Vec<_>>(), map.iter().collect::<Vec<_>>());
            prop_assert_eq!(
                serde_json::to_value(&tags).unwrap(),
                serde_json::to_value(&map).unwrap()
            );
            prop_assert_eq!(map.into_iter().collect::<SortedMap<String>>(), tags);
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let fields: SortedMap<FieldValue> =
            serde_json::from_str(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        assert_eq!(serde_json::to_string(&fields).unwrap(), r#"{"a":2,"b":3}"#);
        let tags: SortedMap<String> = serde_json::from_str(r#"{"b": "1", "b": "3"}"#).unwrap();
        assert_eq!(tags.get("b").map(String::as_str), Some("3"));
    }

    #[test]
    fn indexing_fields_by_a_missing_name_gives_null() {
        let fields: SortedMap<FieldValue> = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        assert_eq!(fields["a"], Value::from(1));
        assert_eq!(fields["b"], FieldValue::Null);
    }
}
