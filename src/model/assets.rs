//! The state's assets: [`Assets`], a map by id of [`PackedAsset`]s, each
//! asset one allocation of bytes instead of a struct of a dozen strings. A
//! state of Workload L holds a million assets: 296 MB as [`Asset`]s, a
//! third of that packed. Readers unpack one asset at a time ([`Assets::get`],
//! [`Assets::iter`]) or read its account and owner in place
//! ([`PackedAsset::account`], [`PackedAsset::owner`]), which is what the
//! planner's index of owners and a plan without changes need.
//!
//! Architecture invariant: no I/O.

use std::collections::{btree_map, BTreeMap};
use std::fmt;

use super::packing::{length_size, write_length, write_text, Reader};
use super::{Asset, FieldValue, Fields, Owner, Tags};

/// An asset's owner, borrowed (from a [`PackedAsset`] or an [`Owner`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OwnerRef<'a> {
    User(&'a str),
    Group(&'a str),
}

impl OwnerRef<'_> {
    pub fn to_owner(self) -> Owner {
        match self {
            OwnerRef::User(email) => Owner::User(email.to_string()),
            OwnerRef::Group(name) => Owner::Group(name.to_string()),
        }
    }
}

impl Owner {
    /// The owner, borrowed.
    pub fn borrowed(&self) -> OwnerRef<'_> {
        match self {
            Owner::User(email) => OwnerRef::User(email),
            Owner::Group(name) => OwnerRef::Group(name),
        }
    }
}

/// The assets of a [`State`](super::State) by id, packed (see the module
/// doc). Its methods mirror the map's that the rest of deed uses; reading
/// an asset gives an owned, unpacked [`Asset`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Assets(BTreeMap<String, PackedAsset>);

impl Assets {
    pub fn new() -> Self {
        Assets::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Asset `id`, unpacked.
    pub fn get(&self, id: &str) -> Option<Asset> {
        self.0.get(id).and_then(PackedAsset::unpack)
    }

    /// Asset `id`, as it is kept.
    pub fn packed(&self, id: &str) -> Option<&PackedAsset> {
        self.0.get(id)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    /// Sets asset `id`.
    pub fn insert(&mut self, id: String, asset: Asset) {
        self.0.insert(id, PackedAsset::pack(&asset));
    }

    /// Removes asset `id`, giving it back.
    pub fn remove(&mut self, id: &str) -> Option<Asset> {
        self.0.remove(id).as_ref().and_then(PackedAsset::unpack)
    }

    /// The assets in id order, each unpacked as it is reached.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, Asset)> + '_ {
        self.0
            .iter()
            .filter_map(|(id, packed)| Some((id, packed.unpack()?)))
    }

    /// The assets in id order, as they are kept.
    pub fn packed_iter(&self) -> btree_map::Iter<'_, String, PackedAsset> {
        self.0.iter()
    }

    /// The assets from `id` on (`id` included), in id order.
    pub fn packed_from<'a>(&'a self, id: &str) -> btree_map::Range<'a, String, PackedAsset> {
        self.0
            .range::<str, _>((std::ops::Bound::Included(id), std::ops::Bound::Unbounded))
    }

    /// The assets with ids in `range`, in id order.
    pub fn packed_range<'a>(
        &'a self,
        range: (std::ops::Bound<&str>, std::ops::Bound<&str>),
    ) -> btree_map::Range<'a, String, PackedAsset> {
        self.0.range::<str, _>(range)
    }

    /// The ids, in order.
    pub fn keys(&self) -> btree_map::Keys<'_, String, PackedAsset> {
        self.0.keys()
    }

    /// The account of asset `id`, read in place.
    pub fn account_of(&self, id: &str) -> Option<&str> {
        self.0.get(id).and_then(PackedAsset::account)
    }

    /// The map as it is kept, for the stores that build it in bulk.
    pub(crate) fn packed_map_mut(&mut self) -> &mut BTreeMap<String, PackedAsset> {
        &mut self.0
    }

    pub(crate) fn into_packed_map(self) -> BTreeMap<String, PackedAsset> {
        self.0
    }
}

impl FromIterator<(String, Asset)> for Assets {
    fn from_iter<I: IntoIterator<Item = (String, Asset)>>(assets: I) -> Self {
        Assets(
            assets
                .into_iter()
                .map(|(id, asset)| (id, PackedAsset::pack(&asset)))
                .collect(),
        )
    }
}

impl Extend<(String, Asset)> for Assets {
    fn extend<I: IntoIterator<Item = (String, Asset)>>(&mut self, assets: I) {
        for (id, asset) in assets {
            self.insert(id, asset);
        }
    }
}

impl<const N: usize> From<[(String, Asset); N]> for Assets {
    fn from(assets: [(String, Asset); N]) -> Self {
        assets.into_iter().collect()
    }
}

impl fmt::Debug for Assets {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_map().entries(self.iter()).finish()
    }
}

/// An asset, packed: its fields in declaration order, each text as its
/// length and bytes; the owner with a `u`/`g` tag; an absent creator or
/// folder as a zero byte. About a third of an [`Asset`]'s memory, which
/// holds a dozen separate strings. Equal packed assets are equal assets
/// (tags are sorted by key): the bytes are canonical.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedAsset(Box<[u8]>);

impl PackedAsset {
    pub fn pack(asset: &Asset) -> PackedAsset {
        // Sized exactly (a state of a million assets packs each one as it
        // loads): one allocation, no shrinking copy.
        let mut bytes = Vec::with_capacity(packed_size(asset));
        write_text(&mut bytes, &asset.account);
        match &asset.owner {
            Owner::User(email) => {
                bytes.push(b'u');
                write_text(&mut bytes, email);
            }
            Owner::Group(name) => {
                bytes.push(b'g');
                write_text(&mut bytes, name);
            }
        }
        for optional in [&asset.creator, &asset.folder] {
            match optional {
                None => bytes.push(0),
                Some(text) => {
                    bytes.push(1);
                    write_text(&mut bytes, text);
                }
            }
        }
        write_length(&mut bytes, asset.versions.len());
        for version in &asset.versions {
            write_text(&mut bytes, version);
        }
        write_length(&mut bytes, asset.tags.len());
        for (key, value) in asset.tags.iter() {
            write_text(&mut bytes, key);
            write_text(&mut bytes, value);
        }
        PackedAsset(bytes.into_boxed_slice())
    }

    /// The packed asset in `bytes` (a store keeps assets packed): `None`
    /// unless they are exactly what [`PackedAsset::pack`] makes of some
    /// asset: every text UTF-8 and its length as short as can be, the
    /// owner tagged, the tags in strictly ascending order, nothing after
    /// them. So two assets read back are equal when their bytes are.
    pub fn from_bytes(bytes: &[u8]) -> Option<PackedAsset> {
        is_packed_asset(bytes).then(|| PackedAsset(bytes.into()))
    }

    /// The packed bytes, as [`PackedAsset::from_bytes`] reads them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The asset packed, as it was (`None` only for bytes `pack` never
    /// makes).
    pub fn unpack(&self) -> Option<Asset> {
        let mut reader = Reader::new(&self.0);
        let head = Head::read(&mut reader)?;
        let count = reader.length()?;
        let mut versions = Vec::with_capacity(count.min(reader.bytes.len()));
        for _ in 0..count {
            versions.push(reader.text()?.to_string());
        }
        let count = reader.length()?;
        let mut tags = Tags::with_capacity(count.min(reader.bytes.len()));
        for _ in 0..count {
            let key = reader.text()?.to_string();
            tags.insert(key, reader.text()?.to_string());
        }
        Some(Asset {
            account: head.account.to_string(),
            owner: head.owner.to_owner(),
            creator: head.creator.map(str::to_string),
            folder: head.folder.map(str::to_string),
            versions,
            tags,
        })
    }

    /// The asset's fields, exactly as [`super::to_fields`] gives them for
    /// the unpacked asset, made straight from the bytes (an apply of a
    /// million transfers reads the fields of a million assets twice).
    /// `None` only for bytes `pack` never makes.
    pub fn fields(&self) -> Option<Fields> {
        let parts = Parts::read(&self.0)?;
        let mut fields = Fields::with_capacity(FIELD_NAMES.len());
        for (at, name) in FIELD_NAMES.iter().enumerate() {
            fields.insert(name.to_string(), parts.value(at)?);
        }
        Some(fields)
    }

    /// The fields that differ between this asset and `other`, as they are
    /// in each: exactly what [`super::ObjectFields::changed_fields`] gives
    /// for the two unpacked, made straight from the bytes, where only the
    /// values that differ are made (a plan of a million transfers diffs a
    /// million pairs). `None` only for bytes `pack` never makes.
    pub fn changed_fields(&self, other: &PackedAsset) -> Option<(Fields, Fields)> {
        let (mine, theirs) = (Parts::read(&self.0)?, Parts::read(&other.0)?);
        let changed: [bool; FIELD_NAMES.len()] = std::array::from_fn(|at| !mine.same(&theirs, at));
        let count = changed.iter().filter(|changed| **changed).count();
        let mut before = Fields::with_capacity(count);
        let mut after = Fields::with_capacity(count);
        for (at, name) in FIELD_NAMES
            .iter()
            .enumerate()
            .filter(|(at, _)| changed[*at])
        {
            before.insert(name.to_string(), mine.value(at)?);
            after.insert(name.to_string(), theirs.value(at)?);
        }
        Some((before, after))
    }

    /// The asset's account, read in place.
    pub fn account(&self) -> Option<&str> {
        Reader::new(&self.0).text()
    }

    /// The asset's owner, read in place.
    pub fn owner(&self) -> Option<OwnerRef<'_>> {
        let mut reader = Reader::new(&self.0);
        reader.text()?;
        owner(&mut reader)
    }

    /// The asset with `new_owner` for its owner and `tags` added to its
    /// tags (replacing the values of keys it has), all else as it was,
    /// made from the bytes: the same bytes as [`PackedAsset::pack`] of the
    /// unpacked asset so changed (a rule that moves a million assets
    /// neither unpacks nor packs them). `None` only for bytes `pack` never
    /// makes.
    pub fn with_owner_and_tags(
        &self,
        new_owner: &Owner,
        tags: &BTreeMap<String, String>,
    ) -> Option<PackedAsset> {
        let added = tags
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()));
        self.changed(Some(new_owner), TagChange::Add(added.collect()))
    }

    /// The asset with `new_owner` for its owner, when given, and `tags`
    /// for all its tags, when given (ascending and without repeated keys,
    /// as a map gives them), all else as it was: the same bytes as
    /// [`PackedAsset::pack`] of the unpacked asset so changed. `None` for
    /// tags out of order, and for bytes `pack` never makes.
    pub fn with_owner_and_all_tags(
        &self,
        new_owner: Option<&Owner>,
        tags: Option<Vec<(&str, &str)>>,
    ) -> Option<PackedAsset> {
        let tags = match tags {
            Some(tags) if !tags.windows(2).all(|pair| pair[0].0 < pair[1].0) => return None,
            Some(tags) => TagChange::Replace(tags),
            None => TagChange::Keep,
        };
        self.changed(new_owner, tags)
    }

    /// The asset with its owner and tags changed, packed from its bytes.
    fn changed(&self, new_owner: Option<&Owner>, tags: TagChange) -> Option<PackedAsset> {
        let mut reader = Reader::new(&self.0);
        let offset = |reader: &Reader| self.0.len() - reader.bytes.len();
        reader.text()?;
        let owner_starts = offset(&reader);
        owner(&mut reader)?;
        let owner_ends = offset(&reader);
        let mut bytes = Vec::with_capacity(self.0.len() + 64);
        match new_owner {
            Some(new_owner) => {
                let (tag, text) = match new_owner {
                    Owner::User(email) => (b'u', email),
                    Owner::Group(name) => (b'g', name),
                };
                bytes.extend_from_slice(&self.0[..owner_starts]);
                bytes.push(tag);
                write_text(&mut bytes, text);
            }
            None => bytes.extend_from_slice(&self.0[..owner_ends]),
        }
        if let TagChange::Add(added) = &tags {
            if added.is_empty() {
                bytes.extend_from_slice(&self.0[owner_ends..]);
                return Some(exactly(&bytes));
            }
        }
        let mut reader = self.at_tags()?;
        let tags_start = offset(&reader);
        bytes.extend_from_slice(&self.0[owner_ends..tags_start]);
        let had = read_tags(&mut reader)?;
        let merged = match tags {
            TagChange::Keep => {
                bytes.extend_from_slice(&self.0[tags_start..]);
                return Some(exactly(&bytes));
            }
            TagChange::Replace(tags) => tags,
            TagChange::Add(added) => {
                // Both in ascending order of keys: merged, the added value
                // winning.
                let mut merged = Vec::with_capacity(had.len() + added.len());
                let mut had = had.into_iter().peekable();
                let mut added = added.into_iter().peekable();
                loop {
                    let next = match (had.peek(), added.peek()) {
                        (Some(old), Some(new)) if old.0 < new.0 => had.next(),
                        (Some(old), Some(new)) if old.0 == new.0 => {
                            had.next();
                            added.next()
                        }
                        (_, Some(_)) => added.next(),
                        (Some(_), None) => had.next(),
                        (None, None) => break,
                    };
                    merged.extend(next);
                }
                merged
            }
        };
        write_length(&mut bytes, merged.len());
        for (key, value) in merged {
            write_text(&mut bytes, key);
            write_text(&mut bytes, value);
        }
        Some(exactly(&bytes))
    }

    /// The asset's tags in ascending order of keys, read in place.
    pub fn tags(&self) -> Option<Vec<(&str, &str)>> {
        read_tags(&mut self.at_tags()?)
    }

    /// A reader at the tags: past the head and the versions.
    fn at_tags(&self) -> Option<Reader<'_>> {
        let mut reader = Reader::new(&self.0);
        Head::read(&mut reader)?;
        for _ in 0..reader.length()? {
            reader.text()?;
        }
        Some(reader)
    }

    /// The asset's account and the authors of its versions, read in place
    /// (`None` only for bytes `pack` never makes).
    pub fn account_and_versions(&self) -> Option<(&str, Vec<&str>)> {
        let mut reader = Reader::new(&self.0);
        let head = Head::read(&mut reader)?;
        let count = reader.length()?;
        let mut versions = Vec::with_capacity(count.min(reader.bytes.len()));
        for _ in 0..count {
            versions.push(reader.text()?);
        }
        Some((head.account, versions))
    }

    /// Whether the asset has versions, read in place.
    pub fn has_versions(&self) -> bool {
        let mut reader = Reader::new(&self.0);
        Head::read(&mut reader)
            .and_then(|_| reader.length())
            .is_some_and(|count| count > 0)
    }
}

/// The packed asset of `bytes`, in an allocation of exactly their size
/// (a vector shrunk in place keeps its larger block with mimalloc: on a
/// million assets moved, 40 MB more at the plan's peak).
fn exactly(bytes: &[u8]) -> PackedAsset {
    PackedAsset(bytes.into())
}

/// The tags at `reader` (their count, then each key and value).
fn read_tags<'a>(reader: &mut Reader<'a>) -> Option<Vec<(&'a str, &'a str)>> {
    let count = reader.length()?;
    let mut tags = Vec::with_capacity(count.min(reader.bytes.len()));
    for _ in 0..count {
        tags.push((reader.text()?, reader.text()?));
    }
    Some(tags)
}

/// How [`PackedAsset::changed`] changes the tags: not at all, by adding
/// some (ascending), or by replacing them all (ascending, keys unique).
enum TagChange<'t> {
    Keep,
    Add(Vec<(&'t str, &'t str)>),
    Replace(Vec<(&'t str, &'t str)>),
}

/// The fields of a packed asset before its versions, borrowed.
struct Head<'a> {
    account: &'a str,
    owner: OwnerRef<'a>,
    creator: Option<&'a str>,
    folder: Option<&'a str>,
}

impl<'a> Head<'a> {
    /// Reads the head from the front of `reader`'s bytes.
    fn read(reader: &mut Reader<'a>) -> Option<Head<'a>> {
        let account = reader.text()?;
        let owner = owner(reader)?;
        let mut optional = || -> Option<Option<&'a str>> {
            match reader.byte()? {
                0 => Some(None),
                1 => Some(Some(reader.text()?)),
                _ => None,
            }
        };
        let creator = optional()?;
        let folder = optional()?;
        Some(Head {
            account,
            owner,
            creator,
            folder,
        })
    }
}

/// An asset's fields, by the number [`Parts::value`] and [`Parts::same`]
/// take, in their declaration order.
const FIELD_NAMES: [&str; 6] = ["account", "owner", "creator", "folder", "versions", "tags"];

/// A packed asset, read in place: its head, and the runs of bytes of its
/// versions and of its tags (each canonical: equal runs, equal values).
struct Parts<'a> {
    head: Head<'a>,
    versions: &'a [u8],
    tags: &'a [u8],
}

impl<'a> Parts<'a> {
    fn read(bytes: &'a [u8]) -> Option<Parts<'a>> {
        let mut reader = Reader::new(bytes);
        let head = Head::read(&mut reader)?;
        let versions_start = reader.bytes;
        for _ in 0..reader.length()? {
            reader.text()?;
        }
        let versions = &versions_start[..versions_start.len() - reader.bytes.len()];
        Some(Parts {
            head,
            versions,
            tags: reader.bytes,
        })
    }

    /// Whether field number `at` (of [`FIELD_NAMES`]) is the same in both.
    fn same(&self, other: &Parts, at: usize) -> bool {
        match at {
            0 => self.head.account == other.head.account,
            1 => self.head.owner == other.head.owner,
            2 => self.head.creator == other.head.creator,
            3 => self.head.folder == other.head.folder,
            4 => self.versions == other.versions,
            _ => self.tags == other.tags,
        }
    }

    /// The value of field number `at` (of [`FIELD_NAMES`]), as
    /// [`super::to_fields`] gives it for the unpacked asset.
    fn value(&self, at: usize) -> Option<FieldValue> {
        let text = |text: &str| FieldValue::String(text.to_string());
        let optional = |value: Option<&str>| value.map_or(FieldValue::Null, text);
        Some(match at {
            0 => text(self.head.account),
            1 => FieldValue::String(match self.head.owner {
                OwnerRef::User(email) => format!("user:{email}"),
                OwnerRef::Group(name) => format!("group:{name}"),
            }),
            2 => optional(self.head.creator),
            3 => optional(self.head.folder),
            4 => {
                let mut reader = Reader::new(self.versions);
                let count = reader.length()?;
                let mut versions = Vec::with_capacity(count.min(reader.bytes.len()));
                for _ in 0..count {
                    versions.push(text(reader.text()?));
                }
                FieldValue::Array(versions)
            }
            _ => {
                let mut reader = Reader::new(self.tags);
                let count = reader.length()?;
                let mut tags = Fields::with_capacity(count.min(reader.bytes.len()));
                for _ in 0..count {
                    let key = reader.text()?.to_string();
                    tags.insert(key, text(reader.text()?));
                }
                FieldValue::Object(tags)
            }
        })
    }
}

/// Whether `bytes` are what [`PackedAsset::pack`] makes of some asset.
fn is_packed_asset(bytes: &[u8]) -> bool {
    let mut reader = Reader::new(bytes);
    let mut walk = || -> Option<()> {
        reader.shortest_text()?;
        match reader.byte()? {
            b'u' | b'g' => reader.shortest_text()?,
            _ => return None,
        };
        for _ in 0..2 {
            match reader.byte()? {
                0 => {}
                1 => {
                    reader.shortest_text()?;
                }
                _ => return None,
            }
        }
        // Each version and tag takes at least one byte: a count beyond
        // the bytes left ends the loop as soon as they run out.
        for _ in 0..reader.shortest_length()? {
            reader.shortest_text()?;
        }
        let mut previous: Option<&str> = None;
        for _ in 0..reader.shortest_length()? {
            let key = reader.shortest_text()?;
            if previous.is_some_and(|previous| previous >= key) {
                return None;
            }
            previous = Some(key);
            reader.shortest_text()?;
        }
        Some(())
    };
    walk().is_some() && reader.bytes.is_empty()
}

fn owner<'a>(reader: &mut Reader<'a>) -> Option<OwnerRef<'a>> {
    match reader.byte()? {
        b'u' => Some(OwnerRef::User(reader.text()?)),
        b'g' => Some(OwnerRef::Group(reader.text()?)),
        _ => None,
    }
}

/// The bytes [`PackedAsset::pack`] writes for `asset`.
fn packed_size(asset: &Asset) -> usize {
    let text = |text: &str| length_size(text.len()) + text.len();
    let owner = match &asset.owner {
        Owner::User(text) | Owner::Group(text) => text,
    };
    let optional = |value: &Option<String>| 1 + value.as_deref().map_or(0, text);
    text(&asset.account)
        + 1
        + text(owner)
        + optional(&asset.creator)
        + optional(&asset.folder)
        + length_size(asset.versions.len())
        + asset
            .versions
            .iter()
            .map(|version| text(version))
            .sum::<usize>()
        + length_size(asset.tags.len())
        + asset
            .tags
            .iter()
            .map(|(key, value)| text(key) + text(value))
            .sum::<usize>()
}

impl fmt::Debug for PackedAsset {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.unpack().fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectFields;
    use proptest::prelude::*;

    fn asset_strategy() -> impl Strategy<Value = Asset> {
        (
            ".{0,20}",
            (any::<bool>(), ".{0,30}"),
            prop::option::of(".{0,30}"),
            prop::option::of(".{0,30}"),
            prop::collection::vec(".{0,30}", 0..5),
            prop::collection::btree_map(".{0,10}", ".{0,200}", 0..6),
        )
            .prop_map(
                |(account, (is_user, owner), creator, folder, versions, tags)| Asset {
                    account,
                    owner: if is_user {
                        Owner::User(owner)
                    } else {
                        Owner::Group(owner)
                    },
                    creator,
                    folder,
                    versions,
                    tags: tags.into_iter().collect(),
                },
            )
    }

    #[test]
    fn a_reassigned_asset_packs_to_one_small_allocation() {
        let asset = Asset {
            account: "a0999".into(),
            owner: Owner::Group("team-0".into()),
            creator: Some("u42@a0999.ex.com".into()),
            folder: Some("folder/a0999-f03".into()),
            versions: vec!["u08@a0999.ex.com".into(), "u11@a0999.ex.com".into()],
            tags: [
                ("cost-center".to_string(), "cc-5".to_string()),
                ("original-owner".to_string(), "u08@a0999.ex.com".to_string()),
            ]
            .into(),
        };
        let packed = PackedAsset::pack(&asset);
        assert_eq!(packed.unpack(), Some(asset.clone()));
        assert_eq!(packed.0.len(), packed_size(&asset));
        assert!(packed.0.len() < 140, "{}", packed.0.len());
        assert_eq!(packed.account(), Some("a0999"));
        assert_eq!(packed.owner(), Some(OwnerRef::Group("team-0")));
        assert!(packed.has_versions());
        assert_eq!(PackedAsset(Box::new([])).unpack(), None);
    }

    #[test]
    fn assets_read_and_write_as_a_map_of_unpacked_assets() {
        let asset = |account: &str, owner: &str| Asset {
            account: account.into(),
            owner: owner.parse().unwrap(),
            creator: None,
            folder: None,
            versions: Vec::new(),
            tags: Tags::new(),
        };
        let mut assets: Assets = [
            ("doc/b".to_string(), asset("acme", "user:bob@acme.com")),
            ("doc/a".to_string(), asset("acme", "group:team")),
        ]
        .into();
        assets.insert("doc/c".into(), asset("beta", "user:carol@beta.com"));
        assert_eq!(assets.len(), 3);
        assert_eq!(
            assets.get("doc/b"),
            Some(asset("acme", "user:bob@acme.com"))
        );
        assert_eq!(assets.account_of("doc/c"), Some("beta"));
        assert!(!assets.packed("doc/a").unwrap().has_versions());
        let ids: Vec<&String> = assets.keys().collect();
        assert_eq!(ids, ["doc/a", "doc/b", "doc/c"]);
        let unpacked: Vec<(String, Asset)> = assets
            .iter()
            .map(|(id, asset)| (id.clone(), asset))
            .collect();
        assert_eq!(
            unpacked[0],
            ("doc/a".to_string(), asset("acme", "group:team"))
        );
        assert_eq!(assets.remove("doc/a"), Some(asset("acme", "group:team")));
        assert_eq!(assets.remove("doc/a"), None);
        assert!(!assets.contains_key("doc/a"));
        assert_eq!(
            format!("{assets:?}"),
            format!(
                "{:?}",
                [
                    ("doc/b", asset("acme", "user:bob@acme.com")),
                    ("doc/c", asset("beta", "user:carol@beta.com"))
                ]
                .into_iter()
                .collect::<BTreeMap<_, _>>()
            )
        );
    }

    proptest! {
        #[test]
        fn an_owner_and_tags_set_in_place_pack_as_the_asset_so_changed(
            asset in asset_strategy(),
            other in asset_strategy(),
            shared in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        ) {
            // Added tags: the other asset's, and some of this one's keys
            // with new values.
            let mut tags: BTreeMap<String, String> = other.tags.iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            let keys: Vec<&String> = asset.tags.iter().map(|(key, _)| key).collect();
            for index in shared {
                if !keys.is_empty() {
                    tags.insert(index.get(&keys).to_string(), "replaced".to_string());
                }
            }
            let moved = PackedAsset::pack(&asset).with_owner_and_tags(&other.owner, &tags);
            let mut expected = Asset { owner: other.owner.clone(), ..asset };
            for (key, value) in &tags {
                expected.tags.insert(key.clone(), value.clone());
            }
            prop_assert_eq!(moved, Some(PackedAsset::pack(&expected)));
        }

        #[test]
        fn an_owner_and_all_tags_set_in_place_pack_as_the_asset_so_changed(
            asset in asset_strategy(),
            other in asset_strategy(),
            (set_owner, set_tags) in (any::<bool>(), any::<bool>()),
        ) {
            let tags: Vec<(&str, &str)> =
                other.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
            let changed = PackedAsset::pack(&asset).with_owner_and_all_tags(
                set_owner.then_some(&other.owner),
                set_tags.then(|| tags.clone()),
            );
            let mut expected = asset.clone();
            if set_owner {
                expected.owner = other.owner.clone();
            }
            if set_tags {
                expected.tags = other.tags.clone();
            }
            prop_assert_eq!(changed, Some(PackedAsset::pack(&expected)));
            if tags.len() > 1 {
                let reversed: Vec<(&str, &str)> = tags.iter().rev().copied().collect();
                let refused = PackedAsset::pack(&asset).with_owner_and_all_tags(None, Some(reversed));
                prop_assert_eq!(refused, None);
            }
        }

        #[test]
        fn the_changed_fields_of_two_packed_assets_are_those_of_the_two_unpacked(
            asset in asset_strategy(),
            other in asset_strategy(),
            (same_account, same_owner, same_creator_and_folder, same_versions, same_tags)
                in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        ) {
            // Fields made the same at random, so that each is compared both
            // equal and different.
            let mut other = other;
            if same_account { other.account = asset.account.clone(); }
            if same_owner { other.owner = asset.owner.clone(); }
            if same_creator_and_folder {
                other.creator = asset.creator.clone();
                other.folder = asset.folder.clone();
            }
            if same_versions { other.versions = asset.versions.clone(); }
            if same_tags { other.tags = asset.tags.clone(); }
            let packed = PackedAsset::changed_fields(&PackedAsset::pack(&asset), &PackedAsset::pack(&other));
            prop_assert_eq!(packed, Some(asset.changed_fields(&other)));
        }

        #[test]
        fn any_asset_packs_to_its_size_and_unpacks_as_it_was(asset in asset_strategy()) {
            let packed = PackedAsset::pack(&asset);
            prop_assert_eq!(packed.0.len(), packed_size(&asset));
            prop_assert_eq!(packed.account(), Some(asset.account.as_str()));
            let tags: Vec<(&str, &str)> =
                asset.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
            prop_assert_eq!(packed.tags(), Some(tags));
            prop_assert_eq!(packed.owner(), Some(asset.owner.borrowed()));
            prop_assert_eq!(packed.has_versions(), !asset.versions.is_empty());
            let read = PackedAsset::from_bytes(packed.as_bytes());
            prop_assert_eq!(read.as_ref(), Some(&packed));
            prop_assert_eq!(packed.fields(), Some(crate::model::to_fields(&asset)));
            prop_assert_eq!(packed.unpack(), Some(asset));
        }

        #[test]
        fn bytes_that_pack_makes_of_no_asset_are_refused(
            asset in asset_strategy(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let packed = PackedAsset::pack(&asset);
            let bytes = packed.as_bytes();
            // Cut anywhere: refused.
            let cut = cut.index(bytes.len());
            prop_assert_eq!(PackedAsset::from_bytes(&bytes[..cut]), None);
            // One byte changed: refused, or an asset that packs to exactly
            // those bytes.
            let mut changed = bytes.to_vec();
            let at = at.index(changed.len());
            changed[at] = byte;
            if let Some(read) = PackedAsset::from_bytes(&changed) {
                let unpacked = read.unpack().expect("accepted bytes unpack");
                let repacked = PackedAsset::pack(&unpacked);
                prop_assert_eq!(repacked.as_bytes(), &changed[..]);
            }
            // A byte more: refused.
            let mut longer = bytes.to_vec();
            longer.push(byte);
            prop_assert_eq!(PackedAsset::from_bytes(&longer), None);
        }
    }

    #[test]
    fn packed_bytes_in_a_form_pack_never_writes_are_refused() {
        let asset = Asset {
            account: "acme".into(),
            owner: Owner::User("bob@acme.com".into()),
            creator: None,
            folder: None,
            versions: Vec::new(),
            tags: [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ]
            .into(),
        };
        let bytes = PackedAsset::pack(&asset).as_bytes().to_vec();
        assert!(PackedAsset::from_bytes(&bytes).is_some());
        // The account's length 4 written in two bytes instead of one.
        let mut long_length = vec![0x84, 0x00];
        long_length.extend_from_slice(&bytes[1..]);
        assert_eq!(PackedAsset::from_bytes(&long_length), None);
        // An owner tagged neither u nor g.
        let mut bad_owner = bytes.clone();
        bad_owner[5] = b'x';
        assert_eq!(PackedAsset::from_bytes(&bad_owner), None);
        // Tags out of order, and a tag repeated.
        let swapped = Asset {
            tags: Tags::new(),
            ..asset.clone()
        };
        let mut out_of_order = PackedAsset::pack(&swapped).as_bytes().to_vec();
        out_of_order.pop();
        out_of_order.extend_from_slice(&[2, 1, b'b', 1, b'2', 1, b'a', 1, b'1']);
        assert_eq!(PackedAsset::from_bytes(&out_of_order), None);
        let mut repeated = PackedAsset::pack(&swapped).as_bytes().to_vec();
        repeated.pop();
        repeated.extend_from_slice(&[2, 1, b'a', 1, b'1', 1, b'a', 1, b'2']);
        assert_eq!(PackedAsset::from_bytes(&repeated), None);
        // A text that is not UTF-8.
        let mut not_utf8 = bytes.clone();
        not_utf8[1] = 0xff;
        assert_eq!(PackedAsset::from_bytes(&not_utf8), None);
        assert_eq!(PackedAsset::from_bytes(&[]), None);
    }
}
