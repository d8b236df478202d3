//! The plan's data: changes, pending items, the summary. This is the JSON
//! plan of contract 3.1 (and the file `plan --out` writes).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::packed::{PackedChangeFields, PackedFields, PackedFieldsRef};
use crate::model::{FieldValue, Fields, Kind};

/// The version of the JSON plan format; `apply` refuses any other.
pub const FORMAT_VERSION: u32 = 1;

/// What a change does to its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    /// A change of owner (account owner, asset owner, license assignee) or of
    /// container (user's account, product's organization, organization's
    /// account, license's account, asset's account).
    Transfer,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Transfer => "transfer",
            Action::Remove => "remove",
        }
    }

    /// The sign of the change in text plans.
    pub fn sign(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Transfer => '>',
            Action::Remove => '-',
        }
    }
}

/// One change to one object. A plan holds a million at scale, so each is
/// kept small (80 bytes and two allocations): the id as its hash, the
/// account shared with the plan's other changes in it, `before` and
/// `after` packed together. It serializes to the JSON of contract 3.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Stable id: the same change against the same state has the same id.
    pub id: ChangeId,
    pub action: Action,
    pub kind: Kind,
    pub object: Box<str>,
    /// Shared: the planner gives the changes of one account the same text.
    pub account: Arc<str>,
    /// The fields that change, as they are now (`null` for a create: the
    /// object does not exist yet) and as they will be (`null` for a
    /// remove). See [`Change::before`] and [`Change::after`].
    fields: PackedChangeFields,
    /// Shared: the changes one rule makes have the same reason.
    pub reason: Arc<str>,
}

impl Change {
    /// A change with its id computed from its content.
    pub fn new(
        action: Action,
        kind: Kind,
        object: impl Into<Box<str>>,
        account: impl Into<Arc<str>>,
        before: Option<Fields>,
        after: Option<Fields>,
        reason: impl Into<Arc<str>>,
    ) -> Change {
        let object = object.into();
        let account = account.into();
        let id = content_id(
            action,
            kind,
            &object,
            &account,
            before.as_ref(),
            after.as_ref(),
        );
        Change {
            id,
            action,
            kind,
            object,
            account,
            fields: PackedChangeFields::pack(before.as_ref(), after.as_ref()),
            reason: reason.into(),
        }
    }

    /// The fields that change, as they are now (`None` for a create),
    /// packed: read one with [`PackedFieldsRef::text`] or `get`.
    pub fn before(&self) -> Option<PackedFieldsRef<'_>> {
        self.fields.before()
    }

    /// The fields that change, as they will be (`None` for a remove).
    pub fn after(&self) -> Option<PackedFieldsRef<'_>> {
        self.fields.after()
    }

    /// The fields that change, as they are now, unpacked.
    pub fn before_fields(&self) -> Option<Fields> {
        self.before().map(PackedFieldsRef::unpack)
    }

    /// The fields that change, as they will be, unpacked.
    pub fn after_fields(&self) -> Option<Fields> {
        self.after().map(PackedFieldsRef::unpack)
    }

    /// `c-` and 16 hex digits: a hash of what the change does (action,
    /// kind, object, account, before, after), computed over the values
    /// themselves — no serialization — so that planning a million changes
    /// stays cheap. The same change always gets the same id.
    pub fn content_id(&self) -> ChangeId {
        content_id(
            self.action,
            self.kind,
            &self.object,
            &self.account,
            self.before_fields().as_ref(),
            self.after_fields().as_ref(),
        )
    }
}

/// The JSON of a change (contract 3.1), in its field order.
#[derive(Serialize)]
struct ChangeOut<'a> {
    id: ChangeId,
    action: Action,
    kind: Kind,
    object: &'a str,
    account: &'a str,
    before: Option<PackedFieldsRef<'a>>,
    after: Option<PackedFieldsRef<'a>>,
    reason: &'a str,
}

#[derive(Deserialize)]
struct ChangeIn {
    id: ChangeId,
    action: Action,
    kind: Kind,
    object: Box<str>,
    account: Arc<str>,
    before: Option<PackedFields>,
    after: Option<PackedFields>,
    reason: Arc<str>,
}

impl Serialize for Change {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ChangeOut {
            id: self.id,
            action: self.action,
            kind: self.kind,
            object: &self.object,
            account: &self.account,
            before: self.before(),
            after: self.after(),
            reason: &self.reason,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let change = ChangeIn::deserialize(deserializer)?;
        Ok(Change {
            id: change.id,
            action: change.action,
            kind: change.kind,
            object: change.object,
            account: change.account,
            fields: PackedChangeFields::join(change.before.as_ref(), change.after.as_ref()),
            reason: change.reason,
        })
    }
}

/// A change's id, `c-` and 16 lowercase hex digits: kept as the 64-bit
/// hash it shows (8 bytes, where the text took 48).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeId(u64);

impl ChangeId {
    /// The id that `text` shows, if it is one (`c-` and 16 lowercase hex
    /// digits, as ids are written).
    pub fn parse(text: &str) -> Option<ChangeId> {
        let digits = text.strip_prefix("c-")?;
        let well_formed = digits.len() == 16
            && digits
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if !well_formed {
            return None;
        }
        u64::from_str_radix(digits, 16).ok().map(ChangeId)
    }

    /// The id's text, without allocating: `c-` and 16 hex digits.
    pub fn text(self) -> [u8; 18] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = *b"c-0000000000000000";
        for (index, byte) in text[2..].iter_mut().enumerate() {
            *byte = HEX[((self.0 >> (60 - 4 * index)) & 0xf) as usize];
        }
        text
    }
}

impl fmt::Display for ChangeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "c-{:016x}", self.0)
    }
}

impl fmt::Debug for ChangeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

impl Serialize for ChangeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        // Always ASCII: `c-` and hex digits.
        serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for ChangeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        // Only an edit makes another id: said so, as for an id that does
        // not match its change.
        ChangeId::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "change {text} was edited after the plan was made (its id is not one deed makes: `c-` and 16 hex digits)"
            ))
        })
    }
}

/// See [`Change::content_id`].
fn content_id(
    action: Action,
    kind: Kind,
    object: &str,
    account: &str,
    before: Option<&Fields>,
    after: Option<&Fields>,
) -> ChangeId {
    let mut hasher = StableHasher::new();
    hasher.text(action.as_str());
    hasher.text(kind.as_str());
    hasher.text(object);
    hasher.text(account);
    hasher.fields(before);
    hasher.fields(after);
    ChangeId(hasher.finish())
}

/// FNV-1a (64 bits) over a length-prefixed, type-tagged walk of the values:
/// stable across builds and platforms, unlike `std`'s hasher.
struct StableHasher {
    state: u64,
}

impl StableHasher {
    fn new() -> Self {
        StableHasher {
            state: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.state ^= u64::from(*byte);
            self.state = self.state.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn text(&mut self, text: &str) {
        self.bytes(&(text.len() as u64).to_le_bytes());
        self.bytes(text.as_bytes());
    }

    fn fields(&mut self, fields: Option<&Fields>) {
        match fields {
            None => self.bytes(b"n"),
            Some(fields) => self.entries(fields.len(), fields.iter()),
        }
    }

    /// The entries of a map, in name order (both `Fields` and serde_json's
    /// maps are sorted by name: the walk is canonical).
    fn entries<'a>(
        &mut self,
        len: usize,
        entries: impl Iterator<Item = (&'a String, &'a FieldValue)>,
    ) {
        self.bytes(b"m");
        self.bytes(&(len as u64).to_le_bytes());
        for (name, value) in entries {
            self.text(name);
            self.value(value);
        }
    }

    fn value(&mut self, value: &FieldValue) {
        use FieldValue as Value;
        match value {
            Value::Null => self.bytes(b"0"),
            Value::Bool(true) => self.bytes(b"t"),
            Value::Bool(false) => self.bytes(b"f"),
            Value::Number(number) => {
                self.bytes(b"#");
                self.text(&number.to_string());
            }
            Value::String(text) => {
                self.bytes(b"s");
                self.text(text);
            }
            Value::Array(items) => {
                self.bytes(b"a");
                self.bytes(&(items.len() as u64).to_le_bytes());
                for item in items {
                    self.value(item);
                }
            }
            Value::Object(map) => self.entries(map.len(), map.iter()),
        }
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// Something the specs ask for that cannot happen yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub kind: Kind,
    pub object: String,
    pub reason: String,
}

/// How many changes of each action a plan has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub transfer: usize,
    pub remove: usize,
}

impl Summary {
    pub fn of(changes: &[Change]) -> Summary {
        let mut summary = Summary::default();
        for change in changes {
            match change.action {
                Action::Create => summary.create += 1,
                Action::Update => summary.update += 1,
                Action::Transfer => summary.transfer += 1,
                Action::Remove => summary.remove += 1,
            }
        }
        summary
    }

    pub fn total(&self) -> usize {
        self.create + self.update + self.transfer + self.remove
    }
}

/// A plan: the JSON of contract 3.1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub summary: Summary,
    pub changes: Vec<Change>,
    pub pending: Vec<Pending>,
}

impl Plan {
    pub fn new(changes: Vec<Change>, pending: Vec<Pending>) -> Plan {
        Plan {
            format_version: FORMAT_VERSION,
            summary: Summary::of(&changes),
            changes,
            pending,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// `p-` and 16 hex digits naming exactly this list of changes.
    pub fn id(&self) -> String {
        let mut hasher = Sha256::new();
        for change in &self.changes {
            hasher.update(change.id.text());
            hasher.update([0]);
        }
        format!("p-{}", hex(&hasher.finalize()[..8]))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_ids_deed_makes_parse() {
        for text in [
            "c-0123456789ABCDEF",
            "c-0123456789abcde",
            "c-0123456789abcdef0",
            "c-0123456789abcdeg",
            "d-0123456789abcdef",
            "c-+123456789abcdef",
            "",
        ] {
            assert_eq!(ChangeId::parse(text), None, "{text}");
            let json = serde_json::to_string(text).unwrap();
            let error = serde_json::from_str::<ChangeId>(&json).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("was edited after the plan was made"),
                "{error}"
            );
        }
    }

    proptest! {
        #[test]
        fn an_id_prints_parses_and_serializes_as_the_hash_it_is(hash in any::<u64>()) {
            let id = ChangeId(hash);
            let text = id.to_string();
            prop_assert_eq!(text.as_bytes(), &id.text()[..]);
            prop_assert_eq!(&text, &format!("c-{hash:016x}"));
            prop_assert_eq!(ChangeId::parse(&text), Some(id));
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(&json, &format!("\"{text}\""));
            prop_assert_eq!(serde_json::from_str::<ChangeId>(&json).unwrap(), id);
        }
    }
}
