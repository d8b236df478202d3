//! [`Tags`]: the tags of an asset, a small map kept as a vector sorted by
//! key.
//!
//! A state holds a million assets and a third of them carry a tag or two; a
//! `BTreeMap` allocates a whole node (about 550 bytes) even for one entry,
//! and a `reassign` plan makes a tagged copy of every asset it moves. Keys
//! iterate, serialize and compare in key order, as with the `BTreeMap` it
//! replaces, so records and plans are byte-for-byte what they were.
//!
//! Architecture invariant: no I/O.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Tag key → value, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    pub fn new() -> Tags {
        Tags(Vec::new())
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(existing, _)| existing.as_str().cmp(key))
    }

    /// Sets `key` to `value`; gives the value it replaces.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.position(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.position(key).ok().map(|at| &self.0[at].1)
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
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

    /// The tags in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &String)> + ExactSizeIterator {
        self.0.iter().map(|(key, value)| (key, value))
    }
}

impl FromIterator<(String, String)> for Tags {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Tags {
        let mut tags = Tags::new();
        tags.extend(iter);
        tags
    }
}

impl Extend<(String, String)> for Tags {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        for (key, value) in iter {
            self.insert(key, value);
        }
    }
}

impl<const N: usize> From<[(String, String); N]> for Tags {
    fn from(entries: [(String, String); N]) -> Tags {
        entries.into_iter().collect()
    }
}

impl IntoIterator for Tags {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(key, value)| (key, value))
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Tags {
    /// A map of strings; a repeated key keeps its last value, as a
    /// `BTreeMap` does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Tags, D::Error> {
        struct TagsVisitor;
        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = Tags;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a map of tags")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Tags, A::Error> {
                let mut tags = Tags(Vec::with_capacity(access.size_hint().unwrap_or(0).min(64)));
                while let Some((key, value)) = access.next_entry::<String, String>()? {
                    tags.insert(key, value);
                }
                Ok(tags)
            }
        }
        deserializer.deserialize_map(TagsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the order of insertion, `Tags` holds, iterates,
        /// compares and serializes exactly what a `BTreeMap` does.
        #[test]
        fn behaves_as_the_btree_map_it_replaces(
            entries in proptest::collection::vec(("[a-e]{1,3}", "[x-z]{0,2}"), 0..12),
            removed in proptest::collection::vec("[a-e]{1,3}", 0..4),
        ) {
            let mut tags = Tags::new();
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
            prop_assert_eq!(tags.len(), map.len());
            prop_assert_eq!(tags.iter().collect::<Vec<_>>(), map.iter().collect::<Vec<_>>());
            let json = serde_json::to_string(&map).unwrap();
            prop_assert_eq!(serde_json::to_string(&tags).unwrap(), json.clone());
            prop_assert_eq!(
                serde_json::to_value(&tags).unwrap(),
                serde_json::to_value(&map).unwrap()
            );
            let back: Tags = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &tags);
            prop_assert_eq!(map.into_iter().collect::<Tags>(), tags);
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let tags: Tags = serde_json::from_str(r#"{"b": "1", "a": "2", "b": "3"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&tags).unwrap(),
            r#"{"a":"2","b":"3"}"#
        );
    }
}
