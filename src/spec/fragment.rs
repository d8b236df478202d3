//! The typed shape of one spec document (an account fragment): the serde
//! structs the YAML is deserialized into, the validated id newtypes that
//! report bad ids, emails, dates and domains at the offending value, and
//! [`UniqueMap`], a mapping that refuses duplicate keys at the second key.
//!
//! Architecture invariant: no I/O, no generic `Value`; every check that can be
//! made on one value alone is made while deserializing it, so serde's error
//! carries the line and column.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::model::{self, AssetKind, Duration, GroupRole, Owner, Role};

use super::keys::KeyIndex;

/// One `---` document of a spec file: the declarations of one account.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an account fragment: a mapping with `account:` and what it declares"
)]
#[schemars(
    title = "deed account fragment",
    description = "One YAML document of a deed spec file: it names one account and declares some of it."
)]
pub struct Fragment {
    /// The file that holds the fragment, relative to the specs directory.
    #[serde(skip)]
    pub path: String,
    /// 0-based index of the document inside its file.
    #[serde(skip)]
    pub document: usize,
    /// Where the keys of the document are, for diagnostics.
    #[serde(skip)]
    pub(crate) keys: KeyIndex,

    /// The account: lowercase `[a-z0-9-]`, 1-63 characters.
    pub account: AccountId,
    /// Header: email domains of this account (required, non-empty, in the header fragment).
    #[serde(default)]
    pub domains: Option<Vec<DomainName>>,
    /// Header: this account is a satellite of that account.
    #[serde(default)]
    pub hub: Option<AccountId>,
    /// Header: accounts this one consents to exchange transfers with.
    #[serde(default)]
    pub connections: Option<Vec<AccountId>>,
    /// Header: how long an invitation stays open (default 48h).
    #[serde(default)]
    pub invite_ttl: Option<SpecDuration>,
    /// Header: fold this account into another one.
    #[serde(default)]
    pub merged_into: Option<AccountId>,
    /// Header: who receives what a removed user leaves behind (default: the owner).
    #[serde(default)]
    pub successor: Option<Email>,

    /// Users by email (case-insensitive).
    #[serde(default)]
    pub users: Option<UniqueMap<Email, Option<UserSpec>>>,
    /// Groups by name; group ids are `<account>/<name>`.
    #[serde(default)]
    pub groups: Option<UniqueMap<GroupName, Option<GroupSpec>>>,
    /// Organizations by global id.
    #[serde(default)]
    pub organizations: Option<UniqueMap<ObjectId, Option<OrganizationSpec>>>,
    /// Licenses by global id.
    #[serde(default)]
    pub licenses: Option<UniqueMap<ObjectId, LicenseSpec>>,
    /// Pinned assets: `<kind>/<id>` -> ownership.
    #[serde(default)]
    pub assets: Option<UniqueMap<AssetId, AssetSpec>>,
    /// Bulk ownership rules over the inventory.
    #[serde(default)]
    pub reassign: Option<Vec<ReassignSpec>>,
}

impl Fragment {
    /// Whether the fragment declares any header field.
    pub fn has_header(&self) -> bool {
        self.domains.is_some()
            || self.hub.is_some()
            || self.connections.is_some()
            || self.invite_ttl.is_some()
            || self.merged_into.is_some()
            || self.successor.is_some()
    }

    /// How many objects the fragment declares (users, groups and their
    /// members, organizations and their products, licenses, pinned assets):
    /// a capacity hint for merging.
    pub fn object_count(&self) -> usize {
        let users = self.users.as_ref().map_or(0, UniqueMap::len);
        let groups: usize = self
            .groups
            .iter()
            .flat_map(|m| m.iter())
            .map(|(_, group)| {
                1 + group
                    .as_ref()
                    .and_then(|group| group.members.as_ref())
                    .map_or(0, UniqueMap::len)
            })
            .sum();
        let organizations: usize = self
            .organizations
            .iter()
            .flat_map(|m| m.iter())
            .map(|(_, organization)| {
                1 + organization
                    .as_ref()
                    .and_then(|organization| organization.products.as_ref())
                    .map_or(0, UniqueMap::len)
            })
            .sum();
        let licenses = self.licenses.as_ref().map_or(0, UniqueMap::len);
        let assets = self.assets.as_ref().map_or(0, UniqueMap::len);
        users + groups + organizations + licenses + assets
    }

    /// The object sections the fragment declares, by their key.
    pub fn object_sections(&self) -> Vec<&'static str> {
        let mut sections = Vec::new();
        if self.users.is_some() {
            sections.push("users");
        }
        if self.groups.is_some() {
            sections.push("groups");
        }
        if self.organizations.is_some() {
            sections.push("organizations");
        }
        if self.licenses.is_some() {
            sections.push("licenses");
        }
        if self.assets.is_some() {
            sections.push("assets");
        }
        if self.reassign.is_some() {
            sections.push("reassign");
        }
        sections
    }
}

/// A user entry; `{}` or an empty value means a member with no name.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a user: a mapping with role, name, move (or empty)"
)]
pub struct UserSpec {
    /// Default: member.
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub name: Option<String>,
    /// How the user is moved when they arrive from another account.
    #[serde(default, rename = "move")]
    pub move_rule: Option<MoveSpec>,
}

/// `move:` of a user.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a move: a mapping with successor, bring, folder"
)]
pub struct MoveSpec {
    /// A user of the source account; default: its owner.
    #[serde(default)]
    pub successor: Option<Email>,
    /// Asset kinds that move with the user; default: none.
    #[serde(default)]
    pub bring: Option<Vec<AssetKind>>,
    /// Folder that receives moved files; default `Moved from <source>`.
    #[serde(default)]
    pub folder: Option<String>,
}

/// A group entry.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a group: a mapping with members")]
pub struct GroupSpec {
    /// Members by email, with their group role.
    #[serde(default)]
    pub members: Option<UniqueMap<Email, GroupRole>>,
}

/// An organization entry.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an organization: a mapping with products"
)]
pub struct OrganizationSpec {
    /// Products by global id.
    #[serde(default)]
    pub products: Option<UniqueMap<ObjectId, Option<ProductSpec>>>,
}

/// A product entry.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a product: a mapping with name, access"
)]
pub struct ProductSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Users of the organization's account who have access.
    #[serde(default)]
    pub access: Option<Vec<Email>>,
}

/// A license entry: one seat of a product, with a term.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a license: a mapping with product, assignee, expires"
)]
pub struct LicenseSpec {
    /// The product SKU (text, not a reference to a product id).
    pub product: Sku,
    /// A user of the same account.
    #[serde(default)]
    pub assignee: Option<Email>,
    /// End of the term, `YYYY-MM-DD`.
    #[serde(default)]
    pub expires: Option<SpecDate>,
}

/// A pinned asset.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a pinned asset: a mapping with owner, tags"
)]
pub struct AssetSpec {
    pub owner: SpecOwner,
    #[serde(default)]
    pub tags: Option<UniqueMap<TagKey, String>>,
}

/// A `reassign` rule.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a reassign rule: a mapping with from, to, kinds, tag"
)]
pub struct ReassignSpec {
    /// `user:EMAIL` or `group:NAME`; may name someone who no longer exists.
    pub from: SpecOwner,
    /// `user:EMAIL` or `group:NAME` of this account.
    pub to: SpecOwner,
    /// Default: every kind.
    #[serde(default)]
    pub kinds: Option<Vec<AssetKind>>,
    /// Tags added to every asset the rule transfers.
    #[serde(default)]
    pub tag: Option<UniqueMap<TagKey, String>>,
}

/// A text value that parses and validates itself; also usable as a map key.
pub trait SpecText: Sized {
    /// What the schema and error messages call it.
    const WHAT: &'static str;
    fn parse(text: &str) -> Result<Self, String>;
    /// The canonical text (lowercase for emails), used to find duplicates.
    fn as_key(&self) -> &str;
    fn schema() -> serde_json::Value;
}

struct SpecTextVisitor<T>(PhantomData<T>);

impl<'de, T: SpecText> Visitor<'de> for SpecTextVisitor<T> {
    type Value = T;
    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(T::WHAT)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        T::parse(text).map_err(E::custom)
    }
}

macro_rules! spec_text {
    ($(#[$doc:meta])* $name:ident, $what:literal, |$text:ident| $parse:expr, $schema:tt) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub String);

        impl SpecText for $name {
            const WHAT: &'static str = $what;
            fn parse($text: &str) -> Result<Self, String> {
                $parse.map($name)
            }
            fn as_key(&self) -> &str {
                &self.0
            }
            fn schema() -> serde_json::Value {
                serde_json::json!($schema)
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(SpecTextVisitor::<$name>(PhantomData))
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match schemars::Schema::try_from(<$name as SpecText>::schema()) {
                    Ok(schema) => schema,
                    Err(_) => schemars::Schema::default(),
                }
            }
        }
    };
}

spec_text!(
    /// An account id: lowercase `[a-z0-9-]`, 1-63 characters.
    AccountId, "an account id",
    |text| model::validate_account_id(text).map(|()| text.to_string()),
    {"type": "string", "pattern": "^[a-z0-9-]{1,63}$", "description": "an account id: lowercase a-z, 0-9 and -, 1-63 characters"}
);

spec_text!(
    /// An email, stored lowercase.
    Email, "an email",
    |text| model::validate_email(text).map(|()| text.to_ascii_lowercase()),
    {"type": "string", "pattern": "^[^@\\s:/]+@[^@\\s:/]+\\.[^@\\s:/]+$", "description": "an email (case-insensitive)"}
);

spec_text!(
    /// A global object id (organization, product, license).
    ObjectId, "an id",
    |text| model::validate_object_id(text).map(|()| text.to_string()),
    {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
);

spec_text!(
    /// A group name (unique inside its account).
    GroupName, "a group name",
    |text| model::validate_group_name(text).map(|()| text.to_string()),
    {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
);

spec_text!(
    /// An asset id `<kind>/<id>`.
    AssetId, "an asset id",
    |text| model::validate_asset_id(text).map(|_| text.to_string()),
    {"type": "string", "pattern": "^(dataset|workflow|proof|file|folder|view)/[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", "description": "<kind>/<id>, e.g. dataset/ds-1"}
);

spec_text!(
    /// An email domain, stored lowercase.
    DomainName, "a domain name",
    |text| validate_domain(text),
    {"type": "string", "pattern": "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$", "description": "an email domain such as acme.com"}
);

spec_text!(
    /// A product SKU on a license: any non-empty text.
    Sku, "a product SKU",
    |text| non_empty(text, "product"),
    {"type": "string", "minLength": 1, "description": "the product SKU, e.g. omiq-pro"}
);

spec_text!(
    /// A tag key: any non-empty text.
    TagKey, "a tag name",
    |text| non_empty(text, "tag name"),
    {"type": "string", "minLength": 1}
);

fn non_empty(text: &str, what: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err(format!("{what} is empty: give it a value"))
    } else {
        Ok(text.to_string())
    }
}

/// Checks a domain name (`acme.com`) and returns it lowercase.
pub fn validate_domain(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let ok = lower.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(lower)
    } else {
        Err(format!(
            "bad domain `{text}`: expected a domain name such as acme.com"
        ))
    }
}

/// Deserializes through `FromStr` inside `deserialize_str`, so a parse error
/// is located at the value.
struct FromStrVisitor<T>(&'static str, PhantomData<T>);

impl<T: std::str::FromStr<Err = String>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;
    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

/// An owner (`user:EMAIL`, `group:NAME` or a bare email), located on error.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecOwner(pub Owner);

impl<'de> Deserialize<'de> for SpecOwner {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(FromStrVisitor::<Owner>(
                "user:EMAIL or group:NAME",
                PhantomData,
            ))
            .map(SpecOwner)
    }
}

impl schemars::JsonSchema for SpecOwner {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Owner::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Owner::json_schema(generator)
    }
}

/// A duration (`48h`), located on error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecDuration(pub Duration);

impl<'de> Deserialize<'de> for SpecDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(FromStrVisitor::<Duration>(
                "a duration such as 48h",
                PhantomData,
            ))
            .map(SpecDuration)
    }
}

impl schemars::JsonSchema for SpecDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Duration::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Duration::json_schema(generator)
    }
}

/// A calendar date written `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecDate(pub model::Date);

impl SpecDate {
    pub fn parse(text: &str) -> Result<SpecDate, String> {
        let bad =
            || format!("bad date `{text}`: expected a calendar date YYYY-MM-DD, e.g. 2027-03-31");
        let bytes = text.as_bytes();
        let shape = bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
        if !shape {
            return Err(bad());
        }
        let number = |range: std::ops::Range<usize>| {
            text.get(range).and_then(|part| part.parse::<i16>().ok())
        };
        let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10))
        else {
            return Err(bad());
        };
        let month = i8::try_from(month).map_err(|_| bad())?;
        let day = i8::try_from(day).map_err(|_| bad())?;
        model::Date::new(year, month, day)
            .map(SpecDate)
            .map_err(|_| bad())
    }
}

impl<'de> Deserialize<'de> for SpecDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DateVisitor;
        impl Visitor<'_> for DateVisitor {
            type Value = SpecDate;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a date YYYY-MM-DD")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SpecDate, E> {
                SpecDate::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DateVisitor)
    }
}

impl schemars::JsonSchema for SpecDate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Date".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})
    }
}

/// A mapping that keeps its entries in document order and refuses a key
/// declared twice (after normalization: `Bob@Acme.com` is `bob@acme.com`),
/// reporting the second one at its own line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueMap<K, V>(pub Vec<(K, V)>);

impl<K, V> Default for UniqueMap<K, V> {
    fn default() -> Self {
        UniqueMap(Vec::new())
    }
}

impl<K, V> UniqueMap<K, V> {
    pub fn iter(&self) -> impl Iterator<Item = &(K, V)> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct UniqueKeySeed<'a, K> {
    seen: &'a mut HashSet<String>,
    key: PhantomData<K>,
}

impl<'de, K: SpecText> DeserializeSeed<'de> for UniqueKeySeed<'_, K> {
    type Value = K;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<K, D::Error> {
        // The duplicate check runs inside `deserialize_str`, so the error is
        // located at the second key.
        deserializer.deserialize_str(self)
    }
}

impl<'de, K: SpecText> Visitor<'de> for UniqueKeySeed<'_, K> {
    type Value = K;
    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(K::WHAT)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<K, E> {
        let key = K::parse(text).map_err(E::custom)?;
        if self.seen.insert(key.as_key().to_string()) {
            return Ok(key);
        }
        if key.as_key() == text {
            Err(E::custom(format!(
                "duplicate key `{text}`: it is already declared in this mapping"
            )))
        } else {
            Err(E::custom(format!(
                "duplicate key `{text}`: it is already declared in this mapping as `{}` (case is ignored)",
                key.as_key()
            )))
        }
    }
}

impl<'de, K: SpecText, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: SpecText, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
            type Value = UniqueMap<K, V>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                write!(formatter, "a mapping keyed by {}", K::WHAT)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut seen = HashSet::new();
                let mut entries = Vec::new();
                while let Some(key) = access.next_key_seed(UniqueKeySeed::<K> {
                    seen: &mut seen,
                    key: PhantomData,
                })? {
                    let value = access.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(UniqueMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<K: SpecText, V: schemars::JsonSchema> schemars::JsonSchema for UniqueMap<K, V> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let value = generator.subschema_for::<V>();
        schemars::json_schema!({
            "type": "object",
            "propertyNames": K::schema(),
            "additionalProperties": value,
        })
    }
}
