//! [`Fields`]: the fields of one object as JSON values, by contract name.
//!
//! A small map kept as a vector sorted by name. Plans hold two of them per
//! change (what changes, before and after), usually with one entry each: a
//! `BTreeMap` allocates a whole node (about 600 bytes) even for one entry,
//! which made the changes of a plan of a million transfers take more than a
//! gigabyte. Iteration, serialization and equality are in name order, as
//! they were with the `BTreeMap`-backed `serde_json::Map`, so plans and
//! records are byte-for-byte what they were.
//!
//! Architecture invariant: no I/O.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// The fields of one object as JSON values, by name, in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, Value)>);

impl Fields {
    pub fn new() -> Fields {
        Fields(Vec::new())
    }

    pub fn with_capacity(capacity: usize) -> Fields {
        Fields(Vec::with_capacity(capacity))
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(existing, _)| existing.as_str().cmp(name))
    }

    /// Sets `name` to `value`; gives the value it replaces.
    pub fn insert(&mut self, name: String, value: Value) -> Option<Value> {
        match self.position(&name) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (name, value));
                None
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.position(name).ok().map(|at| &self.0[at].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        match self.position(name) {
            Ok(at) => Some(&mut self.0[at].1),
            Err(_) => None,
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.position(name).ok().map(|at| self.0.remove(at).1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in name order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &Value)> + ExactSizeIterator {
        self.0.iter().map(|(name, value)| (name, value))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.0.iter().map(|(name, _)| name)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator {
        self.0.iter().map(|(_, value)| value)
    }
}

impl std::ops::Index<&str> for Fields {
    type Output = Value;
    /// The value of `name`, `null` when there is none (as indexing a
    /// `serde_json::Value` gives).
    fn index(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(name).unwrap_or(&NULL)
    }
}

impl From<serde_json::Map<String, Value>> for Fields {
    /// `serde_json::Map` iterates in name order: no sorting needed.
    fn from(map: serde_json::Map<String, Value>) -> Fields {
        let mut fields = Fields::with_capacity(map.len());
        for (name, value) in map {
            fields.insert(name, value);
        }
        fields
    }
}

impl From<Fields> for serde_json::Map<String, Value> {
    fn from(fields: Fields) -> serde_json::Map<String, Value> {
        fields.0.into_iter().collect()
    }
}

impl From<Fields> for Value {
    fn from(fields: Fields) -> Value {
        Value::Object(fields.into())
    }
}

impl FromIterator<(String, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Fields {
        let mut fields = Fields::new();
        fields.extend(iter);
        fields
    }
}

impl Extend<(String, Value)> for Fields {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        for (name, value) in iter {
            self.insert(name, value);
        }
    }
}

impl IntoIterator for Fields {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a String, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, value)| (name, value))
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    /// A JSON object; a repeated name keeps its last value, as
    /// `serde_json::Map` does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a map of fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Fields, A::Error> {
                let mut fields = Fields::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some((name, value)) = access.next_entry::<String, Value>()? {
                    fields.insert(name, value);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the order of insertion, `Fields` holds, iterates and
        /// serializes exactly what a `serde_json::Map` does.
        #[test]
        fn behaves_as_the_json_map_it_replaces(
            entries in proptest::collection::vec(("[a-e]{1,3}", any::<i64>()), 0..12),
            removed in proptest::collection::vec("[a-e]{1,3}", 0..4),
        ) {
            let mut fields = Fields::new();
            let mut map = serde_json::Map::new();
            for (name, value) in &entries {
                prop_assert_eq!(
                    fields.insert(name.clone(), Value::from(*value)),
                    map.insert(name.clone(), Value::from(*value))
                );
            }
            for name in &removed {
                prop_assert_eq!(fields.remove(name), map.remove(name));
            }
            prop_assert_eq!(fields.len(), map.len());
            let ours: Vec<(&String, &Value)> = fields.iter().collect();
            let theirs: Vec<(&String, &Value)> = map.iter().collect();
            prop_assert_eq!(ours, theirs);
            prop_assert_eq!(
                serde_json::to_string(&fields).unwrap(),
                serde_json::to_string(&map).unwrap()
            );
            let back: Fields = serde_json::from_str(&serde_json::to_string(&map).unwrap()).unwrap();
            prop_assert_eq!(&back, &fields);
            prop_assert_eq!(Fields::from(map.clone()), fields.clone());
            prop_assert_eq!(serde_json::Map::from(fields), map);
        }
    }

    #[test]
    fn a_repeated_name_keeps_its_last_value() {
        let fields: Fields = serde_json::from_str(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        assert_eq!(serde_json::to_string(&fields).unwrap(), r#"{"a":2,"b":3}"#);
    }
}
