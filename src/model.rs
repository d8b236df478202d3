//! The domain: accounts, users, groups, memberships, organizations, products,
//! licenses, assets and grants, their ids, and the [`State`] that holds them.
//!
//! Everything here is plain data. The same structs describe the state kept in
//! the store and the desired objects the specs resolve to, so the planner can
//! compare them field by field. Field names are the names of the contract
//! (`owner`, `account`, `assignee`, ...): they are what `state show`, the JSON
//! plan and the dump print.
//!
//! Architecture invariant: this module does no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every kind of object a plan can change, in dependency order: an object
/// may refer only to kinds before it, so creations run in this order and
/// removals in the reverse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Account,
    User,
    Group,
    Membership,
    Organization,
    Product,
    License,
    Asset,
    Grant,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Account,
        Kind::User,
        Kind::Group,
        Kind::Membership,
        Kind::Organization,
        Kind::Product,
        Kind::License,
        Kind::Asset,
        Kind::Grant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Membership => "membership",
            Kind::Organization => "organization",
            Kind::Product => "product",
            Kind::License => "license",
            Kind::Asset => "asset",
            Kind::Grant => "grant",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Account => "accounts",
            Kind::User => "users",
            Kind::Group => "groups",
            Kind::Membership => "memberships",
            Kind::Organization => "organizations",
            Kind::Product => "products",
            Kind::License => "licenses",
            Kind::Asset => "assets",
            Kind::Grant => "grants",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account role (`role:` of a user).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Owner,
    Admin,
    BillingAdmin,
    Member,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::BillingAdmin => "billing-admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role inside a group.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum GroupRole {
    Admin,
    Member,
}

impl GroupRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupRole::Admin => "admin",
            GroupRole::Member => "member",
        }
    }
}

/// Whether a user has accepted their invitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Invited,
    Active,
}

/// The kinds of asset users create.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    Dataset,
    Workflow,
    Proof,
    File,
    Folder,
    View,
}

impl AssetKind {
    pub const ALL: [AssetKind; 6] = [
        AssetKind::Dataset,
        AssetKind::Workflow,
        AssetKind::Proof,
        AssetKind::File,
        AssetKind::Folder,
        AssetKind::View,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Dataset => "dataset",
            AssetKind::Workflow => "workflow",
            AssetKind::Proof => "proof",
            AssetKind::File => "file",
            AssetKind::Folder => "folder",
            AssetKind::View => "view",
        }
    }

    /// The kind of an asset id `<kind>/<id>`, if it names one.
    pub fn of_asset_id(asset_id: &str) -> Option<AssetKind> {
        let (kind, rest) = asset_id.split_once('/')?;
        if rest.is_empty() {
            return None;
        }
        kind.parse().ok()
    }
}

impl FromStr for AssetKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AssetKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                format!("unknown asset kind `{text}` (expected one of dataset, workflow, proof, file, folder, view)")
            })
    }
}

impl fmt::Display for AssetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who owns an asset: `user:EMAIL` or `group:NAME` (a group of the asset's
/// account). A bare email parses as a user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    User(String),
    Group(String),
}

impl Owner {
    pub fn user(&self) -> Option<&str> {
        match self {
            Owner::User(email) => Some(email),
            Owner::Group(_) => None,
        }
    }
}

impl FromStr for Owner {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(email) = text.strip_prefix("user:") {
            validate_email(email)?;
            Ok(Owner::User(email.to_ascii_lowercase()))
        } else if let Some(name) = text.strip_prefix("group:") {
            validate_group_name(name)?;
            Ok(Owner::Group(name.to_string()))
        } else if text.contains('@') {
            validate_email(text)?;
            Ok(Owner::User(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "bad owner `{text}`: expected user:EMAIL or group:NAME"
            ))
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::User(email) => write!(f, "user:{email}"),
            Owner::Group(name) => write!(f, "group:{name}"),
        }
    }
}

impl Serialize for Owner {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Owner {
    /// Parses the text where the deserializer has it (a state loads a
    /// million owners): no owned copy of `user:...` before the lowercase one.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(OwnerVisitor)
    }
}

/// Reads an [`Owner`] from a string, as `String` would accept it (text, or
/// bytes that are UTF-8).
struct OwnerVisitor;

impl serde::de::Visitor<'_> for OwnerVisitor {
    type Value = Owner;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Owner, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Owner, E> {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.visit_str(text),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(bytes), &self)),
        }
    }
}

impl schemars::JsonSchema for Owner {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Owner".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "user:EMAIL, group:NAME, or a bare email",
            "pattern": "^(user:[^@\\s]+@[^@\\s]+|group:[a-z0-9][a-z0-9-_.]*|[^@:\\s]+@[^@\\s]+)$"
        })
    }
}

/// A duration such as `48h`, `30m` or `2d`, kept in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    pub seconds: u64,
}

impl Duration {
    pub const DEFAULT_INVITE_TTL: Duration = Duration { seconds: 48 * 3600 };

    pub fn from_seconds(seconds: u64) -> Duration {
        Duration { seconds }
    }
}

impl FromStr for Duration {
    type Err = String;
    /// Parses one or more `<number><unit>` parts, units `d`, `h`, `m`, `s`:
    /// `48h`, `1h30m`, `2d`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad duration `{text}`: expected e.g. 48h, 30m, 2d or 1h30m");
        let mut seconds: u64 = 0;
        let mut digits = String::new();
        let mut parts = 0;
        for character in text.trim().chars() {
            if character.is_ascii_digit() {
                digits.push(character);
                continue;
            }
            let unit: u64 = match character {
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => return Err(bad()),
            };
            if digits.is_empty() || digits.len() > 12 {
                return Err(bad());
            }
            let number: u64 = digits.parse().map_err(|_| bad())?;
            seconds = number
                .checked_mul(unit)
                .and_then(|part| seconds.checked_add(part))
                .ok_or_else(bad)?;
            digits.clear();
            parts += 1;
        }
        if parts == 0 || !digits.is_empty() {
            return Err(bad());
        }
        Ok(Duration { seconds })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.seconds;
        if seconds != 0 && seconds.is_multiple_of(3600) {
            write!(f, "{}h", seconds / 3600)
        } else if seconds != 0 && seconds.is_multiple_of(60) {
            write!(f, "{}m", seconds / 60)
        } else {
            write!(f, "{seconds}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "a duration such as 48h, 30m, 2d or 1h30m",
            "pattern": "^([0-9]+[dhms])+$"
        })
    }
}

/// A point in time (RFC 3339, UTC).
pub type Timestamp = jiff::Timestamp;
/// A calendar date (`2027-03-31`).
pub type Date = jiff::civil::Date;

/// An account: its header, its owner and its credit balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub owner: Option<String>,
    pub domains: Vec<String>,
    pub hub: Option<String>,
    pub connections: Vec<String>,
    pub credits: i64,
    pub merged_into: Option<String>,
    pub invite_ttl: Duration,
    pub successor: Option<String>,
}

/// A user, identified by their lowercase email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub account: String,
    pub role: Role,
    pub name: Option<String>,
    pub status: UserStatus,
    pub invitation_expires: Option<Timestamp>,
}

/// A group, identified by `<account>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub account: String,
    pub name: String,
}

/// A user's membership of a group, identified by `<account>/<group>/<email>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub account: String,
    pub group: String,
    pub user: String,
    pub role: GroupRole,
}

/// An organization (global id) inside an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub account: String,
}

/// A product (global id) inside an organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub organization: String,
    pub name: Option<String>,
    pub access: Vec<String>,
}

/// A license: one seat of a product, with a term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub account: String,
    pub product: String,
    pub assignee: Option<String>,
    pub expires: Option<Date>,
}

/// An asset a user created (`<kind>/<id>`), observed through the inventory or
/// pinned in the specs. deed never deletes one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub account: String,
    pub owner: Owner,
    pub creator: Option<String>,
    pub folder: Option<String>,
    #[serde(deserialize_with = "exact_strings")]
    pub versions: Vec<String>,
    pub tags: Tags,
}

/// A list of strings without spare room (JSON gives no size: one version
/// took room for four, and a state holds a million assets).
fn exact_strings<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    let mut strings = Vec::<String>::deserialize(deserializer)?;
    strings.shrink_to_fit();
    Ok(strings)
}

/// Access to an asset granted to a user who does not own it, identified by
/// `<asset>:<email>` (a user who moved away keeps read access to a folder).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub account: String,
    pub asset: String,
    pub user: String,
    pub level: String,
}

/// An invoice billing produced for a product; it stays with its organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub product: String,
    pub organization: String,
}

/// Everything deed knows about: the objects, and the invoices of the
/// inventory. Maps are ordered, so iteration (and so every plan) is
/// deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub accounts: BTreeMap<String, Account>,
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
    pub memberships: BTreeMap<String, Membership>,
    pub organizations: BTreeMap<String, Organization>,
    pub products: BTreeMap<String, Product>,
    pub licenses: BTreeMap<String, License>,
    /// Packed: a state holds a million at scale (see [`Assets`]).
    pub assets: Assets,
    pub grants: BTreeMap<String, Grant>,
    pub invoices: BTreeMap<String, Invoice>,
}

mod assets;
mod field_value;
pub(crate) mod packing;
mod sorted_map;

pub use assets::{Assets, OwnerRef, PackedAsset};
pub use field_value::{fields_deserializer, FieldValue, FieldsError};
pub use sorted_map::SortedMap;

/// The fields of one object as JSON values, by contract name, in name order.
pub type Fields = SortedMap<FieldValue>;

/// The tags of an asset, in key order.
pub type Tags = SortedMap<String>;

/// Runs `$body` with `$map` bound to the map of `State` that holds `$kind`,
/// and `$T` to its object type.
macro_rules! with_kind_map {
    ($state:expr, $kind:expr, |$map:ident| $body:expr) => {
        match $kind {
            Kind::Account => {
                let $map = &$state.accounts;
                $body
            }
            Kind::User => {
                let $map = &$state.users;
                $body
            }
            Kind::Group => {
                let $map = &$state.groups;
                $body
            }
            Kind::Membership => {
                let $map = &$state.memberships;
                $body
            }
            Kind::Organization => {
                let $map = &$state.organizations;
                $body
            }
            Kind::Product => {
                let $map = &$state.products;
                $body
            }
            Kind::License => {
                let $map = &$state.licenses;
                $body
            }
            Kind::Asset => {
                let $map = &$state.assets;
                $body
            }
            Kind::Grant => {
                let $map = &$state.grants;
                $body
            }
        }
    };
    (mut $state:expr, $kind:expr, |$map:ident| $body:expr) => {
        match $kind {
            Kind::Account => {
                let $map = &mut $state.accounts;
                $body
            }
            Kind::User => {
                let $map = &mut $state.users;
                $body
            }
            Kind::Group => {
                let $map = &mut $state.groups;
                $body
            }
            Kind::Membership => {
                let $map = &mut $state.memberships;
                $body
            }
            Kind::Organization => {
                let $map = &mut $state.organizations;
                $body
            }
            Kind::Product => {
                let $map = &mut $state.products;
                $body
            }
            Kind::License => {
                let $map = &mut $state.licenses;
                $body
            }
            Kind::Asset => {
                let $map = &mut $state.assets;
                $body
            }
            Kind::Grant => {
                let $map = &mut $state.grants;
                $body
            }
        }
    };
}

/// Turns any object into its fields.
pub fn to_fields<T: Serialize>(object: &T) -> Fields {
    // Straight into field values, without a `serde_json::Value` between.
    match FieldValue::of(object) {
        FieldValue::Object(fields) => fields,
        _ => Fields::new(),
    }
}

/// Objects that list the fields changed between two versions of them
/// without serializing the whole object (a plan of a million transfers
/// compares a million assets).
pub trait ObjectFields: Serialize + PartialEq {
    /// The fields that differ, as (before: `self`'s values, after: `other`'s).
    fn changed_fields(&self, other: &Self) -> (Fields, Fields);
}

/// Implements [`ObjectFields`]; the destructuring without `..` makes the
/// build fail when a struct gains a field that is not listed here.
macro_rules! object_fields {
    ($($type:ident { $($field:ident),* })*) => {$(
        impl ObjectFields for $type {
            fn changed_fields(&self, other: &Self) -> (Fields, Fields) {
                let $type { $($field),* } = self;
                // Counted first, so that each map is allocated at its size:
                // grown by pushes, two fields would take room for four (a
                // plan of a million transfers holds two maps per change).
                let changed = [$(*$field != other.$field),*];
                let count = changed.iter().filter(|changed| **changed).count();
                let mut before = Fields::with_capacity(count);
                let mut after = Fields::with_capacity(count);
                let mut changed = changed.into_iter();
                $(
                    if changed.next() == Some(true) {
                        let name = stringify!($field).to_string();
                        before.insert(name.clone(), FieldValue::of($field));
                        after.insert(name, FieldValue::of(&other.$field));
                    }
                )*
                (before, after)
            }
        }
    )*};
}

object_fields! {
    Account { owner, domains, hub, connections, credits, merged_into, invite_ttl, successor }
    User { account, role, name, status, invitation_expires }
    Group { account, name }
    Membership { account, group, user, role }
    Organization { account }
    Product { organization, name, access }
    License { account, product, assignee, expires }
    Asset { account, owner, creator, folder, versions, tags }
    Grant { account, asset, user, level }
}

impl State {
    /// The fields of object `id` of `kind`, if it exists.
    pub fn fields(&self, kind: Kind, id: &str) -> Option<Fields> {
        if kind == Kind::Asset {
            return self.assets.packed(id).and_then(PackedAsset::fields);
        }
        with_kind_map!(self, kind, |map| map
            .get(id)
            .map(|object| to_fields(&object)))
    }

    pub fn contains(&self, kind: Kind, id: &str) -> bool {
        with_kind_map!(self, kind, |map| map.contains_key(id))
    }

    /// Replaces object `id` of `kind` by `fields`, or removes it for `None`.
    /// Fails when the fields do not make an object of that kind.
    pub fn put_fields(
        &mut self,
        kind: Kind,
        id: &str,
        fields: Option<Fields>,
    ) -> Result<(), String> {
        with_kind_map!(mut self, kind, |map| {
            match fields {
                None => {
                    map.remove(id);
                    Ok(())
                }
                Some(fields) => {
                    let object = Deserialize::deserialize(fields_deserializer(&fields))
                        .map_err(|error| format!("{kind} {id}: {error}"))?;
                    map.insert(id.to_string(), object);
                    Ok(())
                }
            }
        })
    }

    /// Number of objects of one kind.
    pub fn count(&self, kind: Kind) -> usize {
        with_kind_map!(self, kind, |map| map.len())
    }

    /// Ids of all objects of one kind, sorted.
    pub fn ids(&self, kind: Kind) -> Vec<String> {
        with_kind_map!(self, kind, |map| map.keys().cloned().collect())
    }

    /// The account an object belongs to (a product's is its organization's).
    pub fn account_of(&self, kind: Kind, id: &str) -> Option<String> {
        match kind {
            Kind::Account => self.accounts.contains_key(id).then(|| id.to_string()),
            Kind::User => self.users.get(id).map(|o| o.account.clone()),
            Kind::Group => self.groups.get(id).map(|o| o.account.clone()),
            Kind::Membership => self.memberships.get(id).map(|o| o.account.clone()),
            Kind::Organization => self.organizations.get(id).map(|o| o.account.clone()),
            Kind::Product => self
                .products
                .get(id)
                .and_then(|p| self.organizations.get(&p.organization))
                .map(|o| o.account.clone()),
            Kind::License => self.licenses.get(id).map(|o| o.account.clone()),
            Kind::Asset => self.assets.account_of(id).map(str::to_string),
            Kind::Grant => self.grants.get(id).map(|o| o.account.clone()),
        }
    }

    /// Invoice ids of one product, sorted.
    pub fn invoices_of_product(&self, product: &str) -> Vec<String> {
        self.invoices
            .iter()
            .filter(|(_, invoice)| invoice.product == product)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The account an id resolves to, following `merged_into` tombstones.
    pub fn resolve_account<'a>(&'a self, id: &'a str) -> &'a str {
        let mut current = id;
        for _ in 0..self.accounts.len() + 1 {
            match self
                .accounts
                .get(current)
                .and_then(|a| a.merged_into.as_deref())
            {
                Some(next) => current = next,
                None => break,
            }
        }
        current
    }
}

/// Id of a group: `<account>/<name>`.
pub fn group_id(account: &str, name: &str) -> String {
    format!("{account}/{name}")
}

/// Id of a membership: `<account>/<group>/<email>`.
pub fn membership_id(account: &str, group: &str, email: &str) -> String {
    format!("{account}/{group}/{email}")
}

/// Id of a grant: `<asset>:<email>`.
pub fn grant_id(asset: &str, email: &str) -> String {
    format!("{asset}:{email}")
}

/// Checks an account id: lowercase `[a-z0-9-]`, 1 to 63 characters.
pub fn validate_account_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad account id `{id}`: use 1-63 characters of lowercase a-z, 0-9 and -"
        ))
    }
}

/// Checks a global object id (organization, product, license) or a group
/// name: 1-128 characters of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn validate_object_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad id `{id}`: use 1-128 characters of a-z, A-Z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ))
    }
}

/// Checks a group name (same rules as object ids).
pub fn validate_group_name(name: &str) -> Result<(), String> {
    validate_object_id(name).map_err(|_| {
        format!("bad group name `{name}`: use 1-128 characters of a-z, A-Z, 0-9, '.', '_' and '-'")
    })
}

/// Checks an email: one `@`, a non-empty local part, a domain with a dot, no
/// spaces. Case is ignored (emails are stored lowercase).
pub fn validate_email(email: &str) -> Result<(), String> {
    if email_is_valid(email) {
        Ok(())
    } else {
        Err(format!("bad email `{email}`: expected name@domain.tld"))
    }
}

/// The rules of [`validate_email`]: a non-empty local part of at most 64
/// bytes, one `@`, a domain of at most 253 bytes with a dot, not starting or
/// ending with one, without `..`; no whitespace, control character, `:` or
/// `/`. ASCII (every stored email) is checked in one pass over the bytes;
/// there, whitespace is a space or a control character.
fn email_is_valid(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.len() > 253 {
        return false;
    }
    if !email.is_ascii() {
        return !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && email
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != ':' && c != '/');
    }
    let allowed = |byte: u8| byte > b' ' && byte != 0x7f && byte != b':' && byte != b'/';
    if !local.bytes().all(allowed) {
        return false;
    }
    // Starting from a dot makes a leading dot fail as `..` does.
    let mut previous = b'.';
    let mut has_dot = false;
    for byte in domain.bytes() {
        if byte == b'@' || !allowed(byte) || (byte == b'.' && previous == b'.') {
            return false;
        }
        has_dot |= byte == b'.';
        previous = byte;
    }
    has_dot && previous != b'.'
}

/// Checks an asset id: `<kind>/<id>` with a known kind.
pub fn validate_asset_id(id: &str) -> Result<AssetKind, String> {
    let Some((kind, rest)) = id.split_once('/') else {
        return Err(format!(
            "bad asset id `{id}`: expected <kind>/<id>, e.g. dataset/ds-1"
        ));
    };
    let kind: AssetKind = kind.parse()?;
    validate_object_id(rest).map_err(|_| {
        format!("bad asset id `{id}`: the part after the kind must be 1-128 characters of a-z, A-Z, 0-9, '.', '_' and '-'")
    })?;
    Ok(kind)
}

/// The domain part of an email, lowercase.
pub fn email_domain(email: &str) -> &str {
    email
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_in_the_largest_whole_unit() {
        assert_eq!("48h".parse::<Duration>().unwrap().seconds, 172_800);
        assert_eq!("1h30m".parse::<Duration>().unwrap().to_string(), "90m");
        assert_eq!("2d".parse::<Duration>().unwrap().to_string(), "48h");
        assert!("h".parse::<Duration>().is_err());
        assert!("48".parse::<Duration>().is_err());
        assert!("48x".parse::<Duration>().is_err());
        assert!("99999999999999999999h".parse::<Duration>().is_err());
    }

    #[test]
    fn owners_parse_users_groups_and_bare_emails() {
        assert_eq!(
            "user:Bob@Acme.com".parse::<Owner>().unwrap(),
            Owner::User("bob@acme.com".into())
        );
        assert_eq!(
            "bob@acme.com".parse::<Owner>().unwrap(),
            Owner::User("bob@acme.com".into())
        );
        assert_eq!(
            "group:analysts".parse::<Owner>().unwrap(),
            Owner::Group("analysts".into())
        );
        assert!("analysts".parse::<Owner>().is_err());
    }

    #[test]
    fn email_validation_keeps_its_rules_for_ascii_and_other_text() {
        fn reference(email: &str) -> bool {
            let Some((local, domain)) = email.split_once('@') else {
                return false;
            };
            !local.is_empty()
                && local.len() <= 64
                && domain.len() <= 253
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
                && email
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != ':' && c != '/')
        }
        let long_local = format!("{}@acme.com", "x".repeat(65));
        let long_domain = format!("bob@{}.com", "d".repeat(250));
        let cases = [
            "bob@acme.com",
            "Bob@Acme.COM",
            "@acme.com",
            "bob@",
            "bob@acme",
            "bob@.acme.com",
            "bob@acme.com.",
            "bob@acme..com",
            "bob@@acme.com",
            "bob@acme@x.com",
            "b b@acme.com",
            "b\u{b}b@acme.com",
            "b\tb@acme.com",
            "bob@acme.com\n",
            "b:b@acme.com",
            "b/b@acme.com",
            "bob@ac\u{7f}me.com",
            "bøb@acme.com",
            "bob@acme\u{a0}.com",
            "bob@acme\u{2028}.com",
            "bob@acmé..com",
            "bob@.acmé.com",
            "bob",
            "",
            "a.b-c+d@sub.acme.io",
            &long_local,
            &long_domain,
        ];
        for email in cases {
            assert_eq!(validate_email(email).is_ok(), reference(email), "{email:?}");
        }
    }

    #[test]
    fn owners_decode_from_json_text_or_refuse_other_types() {
        let owner: Owner = serde_json::from_str("\"user:Bob@Acme.com\"").unwrap();
        assert_eq!(owner, Owner::User("bob@acme.com".into()));
        let owner: Owner = serde_json::from_str("\"group:analysts\"").unwrap();
        assert_eq!(owner, Owner::Group("analysts".into()));
        let error = serde_json::from_str::<Owner>("5").unwrap_err().to_string();
        assert!(error.contains("expected a string"), "{error}");
        let error = serde_json::from_str::<Owner>("\"nobody\"").unwrap_err();
        assert!(error.to_string().contains("bad owner `nobody`"), "{error}");
        let value = serde_json::json!("user:bob@acme.com");
        assert_eq!(
            serde_json::from_value::<Owner>(value).unwrap(),
            Owner::User("bob@acme.com".into())
        );
    }

    #[test]
    fn fields_round_trip_through_put_fields() {
        let mut state = State::default();
        let user = User {
            account: "acme".into(),
            role: Role::Admin,
            name: None,
            status: UserStatus::Active,
            invitation_expires: None,
        };
        state
            .put_fields(Kind::User, "bob@acme.com", Some(to_fields(&user)))
            .unwrap();
        assert_eq!(state.users["bob@acme.com"], user);
        assert_eq!(
            state.fields(Kind::User, "bob@acme.com").unwrap()["role"],
            "admin"
        );
        state.put_fields(Kind::User, "bob@acme.com", None).unwrap();
        assert!(!state.contains(Kind::User, "bob@acme.com"));
    }
}
