//! How records are encoded, shared by the sled backend and the dump format:
//! the typed [`Object`] of each [`Kind`], and the keys of the sled tree.
//!
//! Objects are kept as the serde_json bytes of their typed struct
//! ([`crate::model::User`], [`crate::model::Group`], ...) and are always
//! decoded straight into that struct, never through `serde_json::Value`.
//! Assets, a million in a large state, are kept packed instead: the sled
//! store keeps them in pages (see `asset_pages`), and reads the one record
//! per asset of older layouts (the bytes of a [`PackedAsset`] after
//! [`PACKED_ASSET`], or JSON) as a load always did.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::collections::BTreeMap;

use crate::model::{
    Account, Asset, Assets, Fields, Grant, Group, Invoice, Kind, License, Membership, Organization,
    PackedAsset, Product, State, User,
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
                    $(Kind::$variant => Object::$variant(<$variant as Keep>::from_record(bytes)?),)*
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

        /// Builds a [`State`] from records read in key order, which keeps
        /// each kind together and each kind's ids sorted (sled scans in key
        /// order): a kind's map is built in bulk, in linear time, as soon as
        /// the records of the next one start, instead of by one insertion
        /// after another. Records out of order are still placed right, only
        /// slower.
        #[derive(Default)]
        pub(crate) struct StateBuilder {
            state: State,
            /// What the pending records are.
            pending: Option<Pending>,
            $($map: Vec<(String, <$variant as Keep>::Kept)>,)*
            invoices: Vec<(String, Invoice)>,
        }

        impl StateBuilder {
            /// Decodes the stored bytes of object `id` of `kind` and keeps
            /// it for the state.
            pub(crate) fn decode(
                &mut self,
                kind: Kind,
                id: &str,
                bytes: &[u8],
            ) -> serde_json::Result<()> {
                self.start(Pending::Objects(kind));
                match kind {
                    $(Kind::$variant => {
                        let kept = <$variant as Keep>::kept_from_record(bytes)?;
                        self.$map.push((id.to_string(), kept));
                    })*
                }
                Ok(())
            }

            /// Keeps asset `id`, read packed from a page of assets.
            pub(crate) fn keep_packed_asset(&mut self, id: String, asset: PackedAsset) {
                self.start(Pending::Objects(Kind::Asset));
                self.assets.push((id, asset));
            }

            /// Decodes the stored bytes of invoice `id` and keeps it.
            pub(crate) fn decode_invoice(&mut self, id: &str, bytes: &[u8]) -> serde_json::Result<()> {
                self.start(Pending::Invoices);
                let invoice: Invoice = from_stored(bytes)?;
                self.invoices.push((id.to_string(), invoice));
                Ok(())
            }

            /// The state of every object and invoice decoded (the last one
            /// of an id wins).
            pub(crate) fn build(mut self) -> State {
                self.flush();
                self.state
            }

            /// Moves the pending records into the state when `next` starts
            /// another group.
            fn start(&mut self, next: Pending) {
                if self.pending != Some(next) {
                    self.flush();
                    self.pending = Some(next);
                }
            }

            fn flush(&mut self) {
                $(merge(self.state.$map.kept(), std::mem::take(&mut self.$map));)*
                merge(&mut self.state.invoices, std::mem::take(&mut self.invoices));
            }
        }

        /// The objects and invoices of two states read from disjoint key
        /// ranges.
        pub(crate) fn join_states(mut first: State, second: State) -> State {
            $(join_maps(first.$map.kept(), second.$map.into_kept());)*
            join_maps(&mut first.invoices, second.invoices);
            first
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
    pub(crate) fn from_fields(
        kind: Kind,
        fields: &Fields,
    ) -> Result<Object, crate::model::FieldsError> {
        Object::deserialize_kind(kind, crate::model::fields_deserializer(fields))
    }

    /// The bytes the sled store keeps: an asset packed (see
    /// [`PACKED_ASSET`]), any other object as JSON.
    pub(crate) fn encode(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Object::Asset(asset) => Ok(asset_record(&PackedAsset::pack(asset))),
            object => serde_json::to_vec(object),
        }
    }
}

/// The first byte of an asset record kept packed: this byte, then the
/// bytes of its [`PackedAsset`] (sled layout 4). An asset record of an
/// older layout, or of the PostgreSQL store, is JSON, which starts with
/// `{` (or white space), never with this byte: both are read.
pub(crate) const PACKED_ASSET: u8 = 1;

/// The record of a packed asset.
pub(crate) fn asset_record(asset: &PackedAsset) -> Vec<u8> {
    let packed = asset.as_bytes();
    let mut record = Vec::with_capacity(1 + packed.len());
    record.push(PACKED_ASSET);
    record.extend_from_slice(packed);
    record
}

/// Decodes one stored record. The record is checked to be UTF-8 once, then
/// parsed as text: cheaper than serde_json checking every string of it
/// (`from_slice`). A record that is not UTF-8 is parsed as bytes, for the
/// same error as always.
pub(crate) fn from_stored<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// How a state's map keeps an object of its kind: assets packed
/// ([`PackedAsset`]), every other kind as it is; and how it is read from
/// its record.
trait Keep: serde::de::DeserializeOwned {
    type Kept;
    fn keep(self) -> Self::Kept;

    /// The object in its stored record (JSON for every kind but assets).
    fn from_record(bytes: &[u8]) -> serde_json::Result<Self> {
        from_stored(bytes)
    }

    /// The object in its stored record, as the state keeps it.
    fn kept_from_record(bytes: &[u8]) -> serde_json::Result<Self::Kept> {
        Self::from_record(bytes).map(Self::keep)
    }
}

macro_rules! kept_as_they_are {
    ($($type:ident),*) => {$(
        impl Keep for $type {
            type Kept = $type;
            fn keep(self) -> $type {
                self
            }
        }
    )*};
}

kept_as_they_are!(
    Account,
    User,
    Group,
    Membership,
    Organization,
    Product,
    License,
    Grant
);

impl Keep for Asset {
    type Kept = PackedAsset;
    fn keep(self) -> PackedAsset {
        PackedAsset::pack(&self)
    }

    fn from_record(bytes: &[u8]) -> serde_json::Result<Asset> {
        match bytes.first() {
            Some(&PACKED_ASSET) => packed_record(bytes)?
                .unpack()
                .ok_or_else(|| serde::de::Error::custom(MALFORMED_ASSET)),
            _ => from_stored(bytes),
        }
    }

    /// A packed record is checked and kept as its bytes are, with no JSON
    /// parsed and no field allocated.
    fn kept_from_record(bytes: &[u8]) -> serde_json::Result<PackedAsset> {
        match bytes.first() {
            Some(&PACKED_ASSET) => packed_record(bytes),
            _ => from_stored(bytes).map(Asset::keep),
        }
    }
}

const MALFORMED_ASSET: &str = "a packed asset record that is cut or malformed";

/// The asset in a record that starts with [`PACKED_ASSET`].
fn packed_record(bytes: &[u8]) -> serde_json::Result<PackedAsset> {
    PackedAsset::from_bytes(&bytes[1..]).ok_or_else(|| serde::de::Error::custom(MALFORMED_ASSET))
}

/// A state's map of one kind, as the builder fills it in bulk.
trait KeptMap {
    type Kept;
    fn kept(&mut self) -> &mut BTreeMap<String, Self::Kept>;
    fn into_kept(self) -> BTreeMap<String, Self::Kept>;
}

impl<T> KeptMap for BTreeMap<String, T> {
    type Kept = T;
    fn kept(&mut self) -> &mut BTreeMap<String, T> {
        self
    }
    fn into_kept(self) -> BTreeMap<String, T> {
        self
    }
}

impl KeptMap for Assets {
    type Kept = PackedAsset;
    fn kept(&mut self) -> &mut BTreeMap<String, PackedAsset> {
        self.packed_map_mut()
    }
    fn into_kept(self) -> BTreeMap<String, PackedAsset> {
        self.into_packed_map()
    }
}

/// The records a [`StateBuilder`] holds before they go into their map.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    Objects(Kind),
    Invoices,
}

/// Adds `entries` to `map`: in bulk into an empty map, else one by one.
fn merge<T>(map: &mut BTreeMap<String, T>, entries: Vec<(String, T)>) {
    if entries.is_empty() {
        return;
    }
    if map.is_empty() {
        *map = bulk_map(entries);
    } else {
        map.extend(entries);
    }
}

/// Moves `second` into `first` (in linear time when both hold objects).
fn join_maps<T>(first: &mut BTreeMap<String, T>, mut second: BTreeMap<String, T>) {
    if first.is_empty() {
        *first = second;
    } else {
        first.append(&mut second);
    }
}

/// A map of `entries`. `BTreeMap::from_iter` sorts them first (stably, so
/// the last of equal ids wins, as with inserts); on entries already sorted
/// that is one pass, and the tree is then built bottom-up in linear time.
fn bulk_map<T>(entries: Vec<(String, T)>) -> BTreeMap<String, T> {
    entries.into_iter().collect()
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
    /// Pages of assets: `o\0assets\0<id of the page's first asset>`
    /// (sled layout 5, see `asset_pages`). Sorted after the asset records
    /// of older layouts (`o\0asset\0<id>`) and before the next kind, and
    /// never parsed as an object key: `assets` is no kind.
    pub(crate) const ASSET_PAGES: &[u8] = b"o\0assets\0";
    /// Invoices: `i\0<id>`.
    pub(crate) const INVOICES: &[u8] = b"i\0";
    /// History: `h\0<seq, 20 digits>`, the seq of the first entry of a
    /// group (see `history_groups`).
    pub(crate) const HISTORY: &[u8] = b"h\0";
    /// Outbox: `n\0<id>`.
    pub(crate) const OUTBOX: &[u8] = b"n\0";
    /// The layout version
    /// ([`crate::store::sled_store::SLED_SCHEMA_VERSION`]), decimal.
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

    /// The key of the page whose first asset is `id`.
    pub(crate) fn asset_page(id: &str) -> Vec<u8> {
        [ASSET_PAGES, id.as_bytes()].concat()
    }

    pub(crate) fn invoice(id: &str) -> Vec<u8> {
        [INVOICES, id.as_bytes()].concat()
    }

    pub(crate) fn history(seq: u64) -> Vec<u8> {
        [HISTORY, format!("{seq:020}").as_bytes()].concat()
    }

    /// The seq in a history key.
    pub(crate) fn parse_history(key: &[u8]) -> Option<u64> {
        let digits = key.strip_prefix(HISTORY)?;
        if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
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
    fn the_state_builder_places_records_in_any_order_and_keeps_the_last() {
        let user = |account: &str| {
            format!(
                r#"{{"account":"{account}","role":"member","name":null,"status":"active","invitation_expires":null}}"#
            )
        };
        let group = r#"{"account":"acme","name":"analysts"}"#;
        let invoice = r#"{"product":"p-1","organization":"lab"}"#;
        let mut builder = StateBuilder::default();
        let records = [
            (Some(Kind::User), "b@acme.com", user("acme")),
            (Some(Kind::User), "c@acme.com", user("acme")),
            (Some(Kind::Group), "acme/analysts", group.to_string()),
            (None, "inv-2", invoice.to_string()),
            (Some(Kind::User), "a@acme.com", user("acme")),
            (Some(Kind::User), "c@acme.com", user("globex")),
            (None, "inv-1", invoice.to_string()),
        ];
        let mut expected = State::default();
        for (kind, id, bytes) in &records {
            match kind {
                Some(kind) => {
                    builder.decode(*kind, id, bytes.as_bytes()).expect("decode");
                    Object::decode(*kind, bytes.as_bytes())
                        .expect("decode")
                        .insert_into(&mut expected, id.to_string());
                }
                None => {
                    builder
                        .decode_invoice(id, bytes.as_bytes())
                        .expect("decode");
                    let invoice = serde_json::from_str(bytes).expect("invoice");
                    expected.invoices.insert(id.to_string(), invoice);
                }
            }
        }
        let state = builder.build();
        assert_eq!(state, expected);
        assert_eq!(state.users["c@acme.com"].account, "globex");
        assert_eq!(state.users.len(), 3);
    }

    #[test]
    fn records_that_are_not_utf8_fail_as_serde_json_says() {
        let mut bytes = br#"{"account":"acme","name":"an"#.to_vec();
        bytes.extend_from_slice(&[0xff, b'"', b'}']);
        let error = from_stored::<crate::model::Group>(&bytes).expect_err("not UTF-8");
        let expected = serde_json::from_slice::<crate::model::Group>(&bytes).expect_err("bad");
        assert_eq!(error.to_string(), expected.to_string());
    }

    #[test]
    fn object_keys_split_back_into_kind_and_id() {
        let key = keys::object(Kind::Membership, "acme/analysts/bob@acme.com");
        assert_eq!(
            keys::parse_object(&key),
            Some((Kind::Membership, "acme/analysts/bob@acme.com"))
        );
        assert_eq!(keys::parse_object(b"o\0nope\0x"), None);
        assert_eq!(keys::history(42), b"h\x0000000000000000000042".to_vec());
        assert_eq!(keys::parse_history(&keys::history(42)), Some(42));
        assert_eq!(
            keys::parse_history(&keys::history(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(keys::parse_history(b"h\x00042"), None);
        assert_eq!(keys::parse_history(b"h\x00-0000000000000000042"), None);
    }
}
