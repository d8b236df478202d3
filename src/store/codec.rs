//! How records are encoded, shared by the sled backend and the dump format:
//! the typed [`Object`] of each [`Kind`], and the keys of the sled tree.
//!
//! Objects are kept as the serde_json bytes of their typed struct
//! ([`crate::model::User`], [`crate::model::Asset`], ...) and are always
//! decoded straight into that struct, never through `serde_json::Value`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{
    Account, Asset, Fields, Grant, Group, Kind, License, Membership, Organization, Product, State,
    User,
};

/// Generates [`Object`], one variant per kind, and the per-kind dispatch.
macro_rules! objects {
    ($($variant:ident => $map:ident),* $(,)?) => {
        /// One object of any kind, as its typed struct.
        #[derive(Clone, Debug, PartialEq)]
        pub(crate) enum Object {
            $($variant($variant),)*
        }

        impl Object {
            /// The kind of this object.
            pub(crate) fn kind(&self) -> Kind {
                match self {
                    $(Object::$variant(_) => Kind::$variant,)*
                }
            }

            /// Decodes the stored bytes of an object of `kind`.
            pub(crate) fn decode(kind: Kind, bytes: &[u8]) -> serde_json::Result<Object> {
                Ok(match kind {
                    $(Kind::$variant => Object::$variant(serde_json::from_slice(bytes)?),)*
                })
            }

            /// Deserializes an object of `kind` from any deserializer.
            pub(crate) fn deserialize_kind<'de, D: Deserializer<'de>>(
                kind: Kind,
                deserializer: D,
            ) -> Result<Object, D::Error> {
                Ok(match kind {
                    $(Kind::$variant => Object::$variant($variant::deserialize(deserializer)?),)*
                })
            }

            /// Moves the object into its map of `state`.
            pub(crate) fn insert_into(self, state: &mut State, id: String) {
                match self {
                    $(Object::$variant(object) => {
                        state.$map.insert(id, object);
                    })*
                }
            }
        }

        impl Serialize for Object {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Object::$variant(object) => object.serialize(serializer),)*
                }
            }
        }
    };
}

objects! {
    Account => accounts,
    User => users,
    Group => groups,
    Membership => memberships,
    Organization => organizations,
    Product => products,
    License => licenses,
    Asset => assets,
    Grant => grants,
}

impl Object {
    /// Checks that `fields` make an object of `kind`.
    pub(crate) fn from_fields(kind: Kind, fields: Fields) -> serde_json::Result<Object> {
        Object::deserialize_kind(kind, serde_json::Value::Object(fields))
    }

    /// The bytes the store keeps.
    pub(crate) fn encode(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

/// The kind named `name` (`user`, `asset`, ...).
pub(crate) fn kind_named(name: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
}

/// Keys of the single sled tree. Every key starts with a one-letter prefix
/// and a NUL byte, so each record type is one prefix scan.
pub(crate) mod keys {
    use crate::model::Kind;

    /// Objects: `o\0<kind>\0<id>`.
    pub(crate) const OBJECTS: &[u8] = b"o\0";
    /// Invoices: `i\0<id>`.
    pub(crate) const INVOICES: &[u8] = b"i\0";
    /// History: `h\0<seq, 20 digits>`.
    pub(crate) const HISTORY: &[u8] = b"h\0";
    /// Outbox: `n\0<id>`.
    pub(crate) const OUTBOX: &[u8] = b"n\0";
    /// The layout version ([`crate::store::SCHEMA_VERSION`]), decimal.
    pub(crate) const SCHEMA_VERSION: &[u8] = b"m\0schema_version";
    /// The last history seq, decimal; absent while the history is empty.
    pub(crate) const HISTORY_SEQ: &[u8] = b"m\0history_seq";
    /// Present while a restore is being written; a state that still has it
    /// was interrupted and is refused.
    pub(crate) const RESTORE_INCOMPLETE: &[u8] = b"m\0restore_incomplete";

    /// The prefix of every object of one kind: `o\0<kind>\0`.
    pub(crate) fn kind_prefix(kind: Kind) -> Vec<u8> {
        let mut key = OBJECTS.to_vec();
        key.extend_from_slice(kind.as_str().as_bytes());
        key.push(0);
        key
    }

    pub(crate) fn object(kind: Kind, id: &str) -> Vec<u8> {
        let mut key = kind_prefix(kind);
        key.extend_from_slice(id.as_bytes());
        key
    }

    pub(crate) fn invoice(id: &str) -> Vec<u8> {
        [INVOICES, id.as_bytes()].concat()
    }

    pub(crate) fn history(seq: u64) -> Vec<u8> {
        [HISTORY, format!("{seq:020}").as_bytes()].concat()
    }

    pub(crate) fn notification(id: &str) -> Vec<u8> {
        [OUTBOX, id.as_bytes()].concat()
    }

    /// Splits an object key into its kind and id.
    pub(crate) fn parse_object(key: &[u8]) -> Option<(Kind, &str)> {
        let rest = key.strip_prefix(OBJECTS)?;
        let separator = rest.iter().position(|&byte| byte == 0)?;
        let kind = std::str::from_utf8(&rest[..separator]).ok()?;
        let id = std::str::from_utf8(&rest[separator + 1..]).ok()?;
        Some((super::kind_named(kind)?, id))
    }

    /// The id after `prefix` in `key`.
    pub(crate) fn parse_id<'a>(key: &'a [u8], prefix: &[u8]) -> Option<&'a str> {
        std::str::from_utf8(key.strip_prefix(prefix)?).ok()
    }

    /// A key as printable text, for error messages.
    pub(crate) fn display(key: &[u8]) -> String {
        key.escape_ascii().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_split_back_into_kind_and_id() {
        let key = keys::object(Kind::Membership, "acme/analysts/bob@acme.com");
        assert_eq!(
            keys::parse_object(&key),
            Some((Kind::Membership, "acme/analysts/bob@acme.com"))
        );
        assert_eq!(keys::parse_object(b"o\0nope\0x"), None);
        assert_eq!(keys::history(42), b"h\x0000000000000000000042".to_vec());
    }
}
