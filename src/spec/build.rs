//! Fragments -> one validated [`Desired`]: merges the fragments of each
//! account, and checks everything the contract (section 1, and the rules of
//! section 2 that specs alone decide) asks of them. Every problem is
//! reported, each at the line of the object it is about.
//!
//! Architecture invariant: no I/O, and the result depends only on the
//! fragments (sorted by path and document), so it is deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::desired::{Desired, DesiredAccount, DesiredUser, MoveRule, Origin, Pin, ReassignRule};
use crate::diagnostic::Diagnostic;
use crate::model::{
    group_id, Duration, Group, GroupRole, Kind, License, Membership, Organization, Owner, Product,
    Role,
};

use super::fragment::{Email, Fragment, UniqueMap};
use super::keys::{join, KeyHasher};
use super::parse::ParsedFile;

/// Accounts whose declarations are incomplete because a document failed to
/// parse: what is missing from them is not reported (it may be in the
/// broken document).
#[derive(Clone, Debug, Default)]
pub(crate) struct Taint {
    pub accounts: BTreeSet<String>,
    /// A document whose account could not be told failed: any account may
    /// be incomplete, so no semantic problem is reported.
    pub unknown: bool,
}

const HEADER_FIELDS: [&str; 6] = [
    "domains",
    "hub",
    "connections",
    "invite_ttl",
    "merged_into",
    "successor",
];

/// `path:line:col` of an origin, for messages that name a second place.
fn place(origin: &Origin) -> String {
    format!("{}:{}:{}", origin.path, origin.line, origin.column)
}

/// The origin of the key at `parts` joined with dots (as [`join`] joins
/// them), the path written into `scratch` rather than a new string, and the
/// file's shared `path`.
fn origin_of(fragment: &Fragment, path: &Arc<str>, scratch: &mut String, parts: &[&str]) -> Origin {
    scratch.clear();
    for (n, part) in parts.iter().enumerate() {
        if n > 0 && !scratch.is_empty() {
            scratch.push('.');
        }
        scratch.push_str(part);
    }
    origin_at(fragment, path, scratch)
}

/// The origin of the key at `key_path`, with the file's shared `path`.
fn origin_at(fragment: &Fragment, path: &Arc<str>, key_path: &str) -> Origin {
    let position = fragment.keys.locate(key_path);
    Origin {
        path: Arc::clone(path),
        line: position.line,
        column: position.column,
    }
}

/// The origin of the key at `key_path`, with a path of its own (for the
/// few origins per account).
fn origin(fragment: &Fragment, key_path: &str) -> Origin {
    origin_at(fragment, &Arc::from(fragment.path.as_str()), key_path)
}

/// Where a step of [`build`] comes in its order: (step, fragment, part).
type Rank = (u8, usize, u8);

#[derive(Default)]
struct Report {
    /// Each problem with the account it is about and the rank of the step
    /// that found it.
    diagnostics: Vec<(String, Diagnostic, Rank)>,
    /// The rank of the step running.
    rank: Rank,
}

impl Report {
    fn error(&mut self, account: &str, at: &Origin, message: String) {
        self.diagnostics.push((
            account.to_string(),
            Diagnostic::at_origin(at, message),
            self.rank,
        ));
    }
}

/// A reference to check once every fragment is merged.
struct Reference<'a> {
    account: &'a str,
    at: Origin,
    /// What refers, for the message: `product p1: access user`.
    subject: Subject<'a>,
    target: Target<'a>,
}

/// What refers, written only when a message needs it.
enum Subject<'a> {
    ProductAccess(&'a str),
    LicenseAssignee(&'a str),
    AssetOwner(&'a str),
    ReassignTo { number: usize, account: &'a str },
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::ProductAccess(product) => write!(f, "product {product}: access user"),
            Subject::LicenseAssignee(license) => write!(f, "license {license}: assignee"),
            Subject::AssetOwner(asset) => write!(f, "asset {asset}: owner"),
            Subject::ReassignTo { number, account } => {
                write!(f, "reassign rule {number} of account {account}: to")
            }
        }
    }
}

enum Target<'a> {
    User(&'a str),
    Owner(&'a Owner),
    /// A license's assignee (contract 2.3, 2.6, 2.7: a license is held by a
    /// user of its own account, and follows no user who moves or leaves).
    Assignee {
        license: &'a str,
        email: &'a str,
    },
}

/// The account of each user, by email, while merging.
type UserAccounts<'a> = HashMap<&'a str, &'a str, BuildHasherDefault<KeyHasher>>;

/// A group declared once, whose members are checked once every user is
/// known.
struct AcceptedGroup<'a> {
    fragment: &'a Fragment,
    name: &'a str,
    members: &'a UniqueMap<Email, GroupRole>,
}

pub(crate) fn build<'a>(
    fragments: impl IntoIterator<Item = &'a Fragment>,
    taint: &Taint,
) -> Result<Desired, Vec<Diagnostic>> {
    let mut order: Vec<&Fragment> = fragments.into_iter().collect();
    order.sort_by(|a, b| (a.path.as_str(), a.document).cmp(&(b.path.as_str(), b.document)));
    let mut builder = Builder::new(order.iter().map(|f| f.object_count()).sum());
    for fragment in order {
        builder.add(fragment);
    }
    builder.finish(taint)
}

/// What a build is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The whole model, to plan with.
    Model,
    /// Only the diagnostics and the counts `deed validate` prints: the
    /// checks are the same, but users and memberships (400k at scale,
    /// whose bodies nothing checks) are counted, not stored, and
    /// memberships get no origins. The model it gives is not to plan with.
    Check,
}

/// How many objects of each kind the specs declare (each counted once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecCounts {
    pub accounts: usize,
    pub users: usize,
    pub groups: usize,
    pub memberships: usize,
    pub organizations: usize,
    pub products: usize,
    pub licenses: usize,
}

impl SpecCounts {
    /// The counts of a whole model.
    pub fn of(desired: &Desired) -> SpecCounts {
        SpecCounts {
            accounts: desired.accounts.len(),
            users: desired.users.len(),
            groups: desired.groups.len(),
            memberships: desired.memberships.len(),
            organizations: desired.organizations.len(),
            products: desired.products.len(),
            licenses: desired.licenses.len(),
        }
    }
}

/// [`build`] one fragment at a time, so that merging can start while later
/// files are still being parsed: [`Builder::add`] merges the objects of a
/// fragment, [`Builder::finish`] what needs every fragment (headers, owners,
/// references). The result is exactly that of [`build`]: diagnostics carry
/// the rank of the step that found them, so their order does not depend on
/// when each step ran.
pub(crate) struct Builder<'a> {
    /// The fragments, in the order added (path, then document).
    order: Vec<&'a Fragment>,
    report: Report,
    desired: Desired,
    scratch: String,
    references: Vec<Reference<'a>>,
    owners: BTreeMap<&'a str, Vec<(&'a str, Origin)>>,
    /// The groups whose members are checked once every user is known.
    accepted_groups: Vec<AcceptedGroup<'a>>,
    /// The account of each user, faster to look up than `desired.users`.
    user_accounts: UserAccounts<'a>,
    rule_numbers: BTreeMap<&'a str, usize>,
    /// The path of the last fragment added, shared by its origins.
    path: Option<Arc<str>>,
    purpose: Purpose,
    /// Users and memberships accepted so far (stored or, for
    /// [`Purpose::Check`], only counted).
    users_declared: usize,
    memberships_declared: usize,
}

impl<'a> Builder<'a> {
    /// Makes room in the origin and user maps for the whole tree once the
    /// first `files_done` of `files_total` files are added, from their
    /// average (growing a map of half a million origins step by step
    /// rehashes every key several times).
    pub(crate) fn reserve_like_first_files(&mut self, files_done: usize, files_total: usize) {
        if files_done == 0 || files_total <= files_done {
            return;
        }
        let expect = |so_far: usize| {
            let expected = so_far.saturating_mul(files_total) / files_done;
            expected.saturating_add(expected / 8).saturating_sub(so_far)
        };
        let origins = expect(self.desired.origins.len());
        self.desired.origins.reserve(origins);
        let users = expect(self.user_accounts.len());
        self.user_accounts.reserve(users);
    }

    /// A builder of the whole model for about `objects` objects (a
    /// capacity hint).
    pub(crate) fn new(objects: usize) -> Builder<'a> {
        Builder::for_purpose(objects, Purpose::Model)
    }

    /// [`Builder::new`] for `purpose`.
    pub(crate) fn for_purpose(objects: usize, purpose: Purpose) -> Builder<'a> {
        let mut desired = Desired::default();
        desired.origins.reserve(objects);
        Builder {
            order: Vec::new(),
            report: Report::default(),
            desired,
            scratch: String::new(),
            references: Vec::new(),
            owners: BTreeMap::new(),
            accepted_groups: Vec::new(),
            user_accounts: UserAccounts::default(),
            rule_numbers: BTreeMap::new(),
            path: None,
            purpose,
            users_declared: 0,
            memberships_declared: 0,
        }
    }

    /// The counts of the model [`Builder::finish`] gave (`desired`), with
    /// the users and memberships counted as they were added.
    pub(crate) fn counts(
        desired: &Desired,
        users_declared: usize,
        memberships_declared: usize,
    ) -> SpecCounts {
        SpecCounts {
            users: users_declared,
            memberships: memberships_declared,
            ..SpecCounts::of(desired)
        }
    }

    /// The users and memberships accepted so far.
    pub(crate) fn declared(&self) -> (usize, usize) {
        (self.users_declared, self.memberships_declared)
    }

    /// Merges the objects of the next fragment; fragments must come in path
    /// and document order.
    pub(crate) fn add(&mut self, fragment: &'a Fragment) {
        self.report.rank = (1, self.order.len(), 1);
        self.order.push(fragment);
        // The documents of a file share one path.
        let path = match &self.path {
            Some(path) if **path == *fragment.path => Arc::clone(path),
            _ => Arc::from(fragment.path.as_str()),
        };
        self.path = Some(Arc::clone(&path));
        let Builder {
            report,
            desired,
            scratch,
            references,
            owners,
            accepted_groups,
            user_accounts,
            rule_numbers,
            purpose,
            users_declared,
            memberships_declared,
            ..
        } = self;
        let store_bodies = *purpose == Purpose::Model;
        let account = fragment.account.as_str();

        for (email, spec) in fragment.users.iter().flat_map(|m| m.iter()) {
            let email = email.as_str();
            let at = origin_of(fragment, &path, scratch, &["users", email]);
            if let Some(previous_account) = user_accounts.get(email) {
                let first = desired
                    .origin(Kind::User, email)
                    .map(place)
                    .unwrap_or_default();
                let message = if *previous_account == account {
                    format!("user {email} is declared twice: here and at {first}")
                } else {
                    format!(
                        "user {email} is declared in two accounts, {account} here and {previous_account} at {first}: a user belongs to one account"
                    )
                };
                report.error(account, &at, message);
                continue;
            }
            let role = spec
                .as_ref()
                .and_then(|spec| spec.role)
                .unwrap_or(Role::Member);
            if role == Role::Owner {
                owners.entry(account).or_default().push((email, at.clone()));
            }
            let move_rule = match spec.as_ref().and_then(|spec| spec.move_rule.as_ref()) {
                None => None,
                Some(rule) => {
                    if rule
                        .folder
                        .as_ref()
                        .is_some_and(|folder| folder.trim().is_empty())
                    {
                        report.error(
                            account,
                            &origin_at(fragment, &path, &join(&join(&join("users", email), "move"), "folder")),
                            format!("user {email}: move.folder is empty: name the folder or leave it out"),
                        );
                    }
                    let mut bring = rule.bring.clone().unwrap_or_default();
                    bring.sort();
                    bring.dedup();
                    Some(MoveRule {
                        successor: rule.successor.as_ref().map(|s| s.0.clone()),
                        bring,
                        folder: rule.folder.clone(),
                    })
                }
            };
            user_accounts.insert(email, account);
            *users_declared += 1;
            if store_bodies {
                desired.users.insert(
                    email.to_string(),
                    DesiredUser {
                        account: account.to_string(),
                        role,
                        name: spec.as_ref().and_then(|spec| spec.name.clone()),
                        move_rule,
                    },
                );
            }
            desired.origins.insert((Kind::User, email.to_string()), at);
        }

        for (name, spec) in fragment.groups.iter().flat_map(|m| m.iter()) {
            let name = name.as_str();
            let id = joined_id(&[account, name]);
            let at = origin_of(fragment, &path, scratch, &["groups", name]);
            if desired.groups.contains_key(&id) {
                let first = desired
                    .origin(Kind::Group, &id)
                    .map(place)
                    .unwrap_or_default();
                let message = format!(
                    "group {name} of account {account} is declared twice: here and at {first}"
                );
                report.error(account, &at, message);
                continue;
            }
            desired.groups.insert(
                id.clone(),
                Group {
                    account: account.to_string(),
                    name: name.to_string(),
                },
            );
            desired.origins.insert((Kind::Group, id), at);
            if let Some(members) = spec.as_ref().and_then(|g| g.members.as_ref()) {
                // Made now, while later files are still being parsed;
                // `finish` checks that each member is a user of the account
                // (if one is not, the build fails and the model is dropped).
                *memberships_declared += members.len();
                for (email, role) in members.iter().filter(|_| store_bodies) {
                    let email = email.as_str();
                    let at = origin_of(
                        fragment,
                        &path,
                        scratch,
                        &["groups", name, "members", email],
                    );
                    let id = joined_id(&[account, name, email]);
                    desired.origins.insert((Kind::Membership, id.clone()), at);
                    desired.memberships.insert(
                        id,
                        Membership {
                            account: account.to_string(),
                            group: name.to_string(),
                            user: email.to_string(),
                            role: *role,
                        },
                    );
                }
                accepted_groups.push(AcceptedGroup {
                    fragment,
                    name,
                    members,
                });
            }
        }

        for (org, spec) in fragment.organizations.iter().flat_map(|m| m.iter()) {
            let org = org.as_str();
            let at = origin_of(fragment, &path, scratch, &["organizations", org]);
            if let Some(previous) = desired.organizations.get(org) {
                // Reported, and its products still checked (they are global too).
                let first = desired
                    .origin(Kind::Organization, org)
                    .map(place)
                    .unwrap_or_default();
                report.error(
                    account,
                    &at,
                    twice("organization", org, account, &previous.account, &first),
                );
            } else {
                desired.organizations.insert(
                    org.to_string(),
                    Organization {
                        account: account.to_string(),
                    },
                );
                desired
                    .origins
                    .insert((Kind::Organization, org.to_string()), at);
            }
            let products = spec.as_ref().and_then(|o| o.products.as_ref());
            for (product, spec) in products.iter().flat_map(|m| m.iter()) {
                let product = product.as_str();
                let at = origin_of(
                    fragment,
                    &path,
                    scratch,
                    &["organizations", org, "products", product],
                );
                if let Some(previous) = desired.products.get(product) {
                    let first = desired
                        .origin(Kind::Product, product)
                        .map(place)
                        .unwrap_or_default();
                    let previous_account = desired
                        .organizations
                        .get(&previous.organization)
                        .map(|o| o.account.clone())
                        .unwrap_or_default();
                    report.error(
                        account,
                        &at,
                        twice("product", product, account, &previous_account, &first),
                    );
                    continue;
                }
                let mut access: Vec<&str> = spec
                    .as_ref()
                    .and_then(|spec| spec.access.as_ref())
                    .iter()
                    .flat_map(|access| access.iter())
                    .map(|email| email.as_str())
                    .collect();
                access.sort_unstable();
                access.dedup();
                if !access.is_empty() {
                    let access_at = origin_of(
                        fragment,
                        &path,
                        scratch,
                        &["organizations", org, "products", product, "access"],
                    );
                    for email in &access {
                        references.push(Reference {
                            account,
                            at: access_at.clone(),
                            subject: Subject::ProductAccess(product),
                            target: Target::User(email),
                        });
                    }
                }
                desired.products.insert(
                    product.to_string(),
                    Product {
                        organization: org.to_string(),
                        name: spec.as_ref().and_then(|spec| spec.name.clone()),
                        access: access.iter().map(|email| email.to_string()).collect(),
                    },
                );
                desired
                    .origins
                    .insert((Kind::Product, product.to_string()), at);
            }
        }

        for (license, spec) in fragment.licenses.iter().flat_map(|m| m.iter()) {
            let license = license.as_str();
            let at = origin_of(fragment, &path, scratch, &["licenses", license]);
            if let Some(previous) = desired.licenses.get(license) {
                let first = desired
                    .origin(Kind::License, license)
                    .map(place)
                    .unwrap_or_default();
                report.error(
                    account,
                    &at,
                    twice("license", license, account, &previous.account, &first),
                );
                continue;
            }
            if let Some(assignee) = &spec.assignee {
                references.push(Reference {
                    account,
                    at: origin_of(fragment, &path, scratch, &["licenses", license, "assignee"]),
                    subject: Subject::LicenseAssignee(license),
                    target: Target::Assignee {
                        license,
                        email: assignee.as_str(),
                    },
                });
            }
            desired.licenses.insert(
                license.to_string(),
                License {
                    account: account.to_string(),
                    product: spec.product.0.clone(),
                    assignee: spec.assignee.as_ref().map(|a| a.0.clone()),
                    expires: spec.expires.map(|d| d.0),
                },
            );
            desired
                .origins
                .insert((Kind::License, license.to_string()), at);
        }

        for (asset, spec) in fragment.assets.iter().flat_map(|m| m.iter()) {
            let asset = asset.as_str();
            let at = origin_of(fragment, &path, scratch, &["assets", asset]);
            if let Some(previous) = desired.pins.get(asset) {
                let first = desired
                    .origin(Kind::Asset, asset)
                    .map(place)
                    .unwrap_or_default();
                let message = if previous.account == account {
                    format!("asset {asset} is pinned twice: here and at {first}")
                } else {
                    format!(
                        "asset {asset} is pinned in two accounts, {account} here and {} at {first}: an asset belongs to one account",
                        previous.account
                    )
                };
                report.error(account, &at, message);
                continue;
            }
            references.push(Reference {
                account,
                at: origin_of(fragment, &path, scratch, &["assets", asset, "owner"]),
                subject: Subject::AssetOwner(asset),
                target: Target::Owner(&spec.owner.0),
            });
            let tags = spec
                .tags
                .iter()
                .flat_map(|m| m.iter())
                .map(|(k, v)| (k.0.clone(), v.clone()))
                .collect();
            desired.pins.insert(
                asset.to_string(),
                Pin {
                    account: account.to_string(),
                    owner: spec.owner.0.clone(),
                    tags,
                },
            );
            desired.origins.insert((Kind::Asset, asset.to_string()), at);
        }

        for (index, rule) in fragment.reassign.iter().flatten().enumerate() {
            let number = rule_numbers.entry(account).or_insert(0);
            *number += 1;
            let number = *number;
            let rule_path = format!("reassign[{index}]");
            let at = origin_at(fragment, &path, &rule_path);
            let kinds = match &rule.kinds {
                Some(kinds) if kinds.is_empty() => {
                    report.error(
                        account,
                        &origin_at(fragment, &path, &join(&rule_path, "kinds")),
                        format!(
                            "reassign rule {number} of account {account}: kinds is empty; leave it out to match every kind"
                        ),
                    );
                    Vec::new()
                }
                Some(kinds) => {
                    let mut kinds = kinds.clone();
                    kinds.sort();
                    kinds.dedup();
                    kinds
                }
                None => Vec::new(),
            };
            if rule.from == rule.to {
                report.error(
                    account,
                    &at,
                    format!(
                        "reassign rule {number} of account {account}: from and to are both {}; the rule would change nothing",
                        rule.to.0
                    ),
                );
            }
            references.push(Reference {
                account,
                at: origin_at(fragment, &path, &join(&rule_path, "to")),
                subject: Subject::ReassignTo { number, account },
                target: Target::Owner(&rule.to.0),
            });
            let tag = rule
                .tag
                .iter()
                .flat_map(|m| m.iter())
                .map(|(k, v)| (k.0.clone(), v.clone()))
                .collect();
            desired
                .reassign
                .entry(account.to_string())
                .or_default()
                .push(ReassignRule {
                    number,
                    from: rule.from.0.clone(),
                    to: rule.to.0.clone(),
                    kinds,
                    tag,
                });
        }
    }

    /// Checks what needs every fragment, and gives the model or every
    /// problem found.
    pub(crate) fn finish(self, taint: &Taint) -> Result<Desired, Vec<Diagnostic>> {
        let Builder {
            order,
            mut report,
            mut desired,
            scratch: _,
            references,
            owners,
            accepted_groups,
            user_accounts,
            ..
        } = self;
        report.rank = (0, 0, 0);

        let mut by_account: BTreeMap<&str, Vec<&Fragment>> = BTreeMap::new();
        for fragment in &order {
            by_account
                .entry(fragment.account.as_str())
                .or_default()
                .push(fragment);
        }
        let declared: BTreeSet<&str> = by_account
            .keys()
            .copied()
            .chain(taint.accounts.iter().map(String::as_str))
            .collect();

        // Headers.
        let mut headers: BTreeMap<&str, &Fragment> = BTreeMap::new();
        for (account, account_fragments) in &by_account {
            let mut files: Vec<String> = account_fragments.iter().map(|f| f.path.clone()).collect();
            files.dedup();
            desired.account_files.insert(account.to_string(), files);
            let with_header: Vec<&Fragment> = account_fragments
                .iter()
                .copied()
                .filter(|f| f.has_header())
                .collect();
            let Some(header) = with_header.first().copied() else {
                report.error(
                    account,
                    &origin(account_fragments[0], "account"),
                    format!(
                        "account {account} has no header: declare its domains (and hub, connections, invite_ttl, merged_into, successor if needed) in one of its fragments"
                    ),
                );
                desired.origins.insert(
                    (Kind::Account, account.to_string()),
                    origin(account_fragments[0], "account"),
                );
                continue;
            };
            let header_origin = origin(header, "account");
            for extra in with_header.iter().skip(1) {
                let key = HEADER_FIELDS
                    .iter()
                    .copied()
                    .find(|field| extra.keys.get(field).is_some())
                    .unwrap_or("account");
                report.error(
                    account,
                    &origin(extra, key),
                    format!(
                        "account {account}: the header is declared twice: here and at {}; declare domains, hub, connections, invite_ttl, merged_into and successor in one fragment only",
                        place(&header_origin)
                    ),
                );
            }
            headers.insert(account, header);
            desired
                .origins
                .insert((Kind::Account, account.to_string()), header_origin);
            desired.accounts.insert(
                account.to_string(),
                header_account(account, header, &mut report),
            );
        }
        for account in by_account.keys() {
            desired
                .accounts
                .entry(account.to_string())
                .or_insert_with(|| DesiredAccount {
                    domains: Vec::new(),
                    hub: None,
                    connections: Vec::new(),
                    invite_ttl: Duration::DEFAULT_INVITE_TTL,
                    merged_into: None,
                    successor: None,
                    owner: None,
                });
        }

        for (index, &fragment) in order.iter().enumerate() {
            report.rank = (1, index, 0);
            let account = fragment.account.as_str();
            let merged_into = headers
                .get(account)
                .and_then(|h| h.merged_into.as_ref())
                .map(|m| m.as_str());
            if let Some(target) = merged_into {
                let is_header = headers
                    .get(account)
                    .is_some_and(|h| std::ptr::eq(*h, fragment));
                if !is_header {
                    report.error(
                        account,
                        &origin(fragment, "account"),
                        format!(
                            "account {account} is merged into {target}: its header must be its only fragment; remove this fragment (declare its objects in {target})"
                        ),
                    );
                } else {
                    for section in fragment.object_sections() {
                        let empty = match section {
                            "users" => fragment.users.as_ref().is_some_and(|m| m.is_empty()),
                            "groups" => fragment.groups.as_ref().is_some_and(|m| m.is_empty()),
                            "organizations" => fragment
                                .organizations
                                .as_ref()
                                .is_some_and(|m| m.is_empty()),
                            "licenses" => fragment.licenses.as_ref().is_some_and(|m| m.is_empty()),
                            "assets" => fragment.assets.as_ref().is_some_and(|m| m.is_empty()),
                            _ => fragment.reassign.as_ref().is_some_and(|m| m.is_empty()),
                        };
                        if !empty {
                            report.error(
                                account,
                                &origin(fragment, section),
                                format!(
                                    "account {account} is merged into {target}: it declares no {section}; declare them in {target}"
                                ),
                            );
                        }
                    }
                }
            }
        }

        report.rank = (2, 0, 0);

        // Owners: exactly one per account that is not merged.
        for (account, account_fragments) in &by_account {
            let merged = headers
                .get(account)
                .is_some_and(|h| h.merged_into.is_some());
            let declared_owners = owners.get(account).map(Vec::as_slice).unwrap_or(&[]);
            if merged {
                continue;
            }
            match declared_owners {
                [] => {
                    let at = desired
                        .origin(Kind::Account, account)
                        .cloned()
                        .unwrap_or_else(|| origin(account_fragments[0], "account"));
                    report.error(
                        account,
                        &at,
                        format!(
                            "account {account} has no owner: give exactly one of its users role: owner"
                        ),
                    );
                }
                [(first, first_at), others @ ..] => {
                    for (other, other_at) in others {
                        report.error(
                            account,
                            other_at,
                            format!(
                                "account {account} has two owners, {other} here and {first} at {}: an account has exactly one owner; give the others another role",
                                place(first_at)
                            ),
                        );
                    }
                    if let Some(desired_account) = desired.accounts.get_mut(*account) {
                        desired_account.owner = Some(first.to_string());
                    }
                }
            }
        }

        report.rank = (3, 0, 0);
        // Memberships (made by `add`): members must be users of the group's
        // account.
        for group in &accepted_groups {
            let account = group.fragment.account.as_str();
            let name = group.name;
            for (email, _) in group.members.iter() {
                let email = email.as_str();
                if user_accounts.get(email) == Some(&account) {
                    continue;
                }
                let at = origin(
                    group.fragment,
                    &join(&join(&join("groups", name), "members"), email),
                );
                let subject = format_args!("group {name}: member");
                check_user(&user_accounts, &mut report, account, &at, subject, email);
            }
        }

        report.rank = (4, 0, 0);
        for reference in &references {
            match &reference.target {
                Target::User(email) => {
                    check_user(
                        &user_accounts,
                        &mut report,
                        reference.account,
                        &reference.at,
                        &reference.subject,
                        email,
                    );
                }
                Target::Assignee { license, email } => {
                    let account = reference.account;
                    let message = match user_accounts.get(email) {
                        Some(user_account) if *user_account == account => None,
                        Some(user_account) => Some(format!(
                            "license {license}: assignee {email} is not a user of account {account} (it is a user of account {other}): a license is not left assigned to a user who moves; reassign it to a user of {account}, or move it with them (declare {license} in {other}; the accounts must be connected)",
                            other = user_account
                        )),
                        None => Some(format!(
                            "license {license}: assignee {email} is not a user of account {account} (nor of any other): a license is not left assigned to a removed user; reassign it to a user of {account}, or leave assignee out to free the seat"
                        )),
                    };
                    if let Some(message) = message {
                        report.error(account, &reference.at, message);
                    }
                }
                Target::Owner(Owner::User(email)) => {
                    let subject = format!("{} user:{email}", reference.subject);
                    let elsewhere = match user_accounts.get(email.as_str()) {
                        Some(user_account) if *user_account == reference.account => None,
                        Some(user_account) => {
                            Some(format!(" (it is a user of account {user_account})"))
                        }
                        None => Some(String::new()),
                    };
                    if let Some(elsewhere) = elsewhere {
                        report.error(
                            reference.account,
                            &reference.at,
                            format!(
                                "{subject} is not a user of account {}{elsewhere}",
                                reference.account
                            ),
                        );
                    }
                }
                Target::Owner(Owner::Group(name)) => {
                    if !desired
                        .groups
                        .contains_key(&group_id(reference.account, name))
                    {
                        report.error(
                            reference.account,
                            &reference.at,
                            format!(
                                "{} group:{name} is not a group of account {}; declare it under groups:",
                                reference.subject, reference.account
                            ),
                        );
                    }
                }
            }
        }

        report.rank = (5, 0, 0);
        // Header references: hub, connections, merged_into, successor.
        for (account, header) in &headers {
            let account = *account;
            if let Some(hub) = &header.hub {
                let at = origin(header, "hub");
                let hub = hub.as_str();
                if hub == account {
                    report.error(
                        account,
                        &at,
                        format!("account {account} cannot be its own hub; remove hub:"),
                    );
                } else if !declared.contains(hub) {
                    report.error(
                        account,
                        &at,
                        format!("account {account}: hub {hub} is not a declared account"),
                    );
                } else if let Some(next) = headers.get(hub).and_then(|h| h.hub.as_ref()) {
                    report.error(
                        account,
                        &at,
                        format!(
                            "account {account}: hub {hub} is itself a satellite of {next}, and hubs do not chain; make {next} the hub of {account}"
                        ),
                    );
                }
            }
            let mut seen = BTreeSet::new();
            for connection in header.connections.iter().flatten() {
                let at = origin(header, "connections");
                let connection = connection.as_str();
                if !seen.insert(connection) {
                    report.error(
                        account,
                        &at,
                        format!("account {account}: connection {connection} is listed twice"),
                    );
                } else if connection == account {
                    report.error(
                        account,
                        &at,
                        format!("account {account} cannot list itself in connections"),
                    );
                } else if !declared.contains(connection) {
                    report.error(
                        account,
                        &at,
                        format!(
                            "account {account}: connection {connection} is not a declared account"
                        ),
                    );
                }
            }
            if let Some(target) = &header.merged_into {
                let at = origin(header, "merged_into");
                let target = target.as_str();
                if target == account {
                    report.error(
                        account,
                        &at,
                        format!("account {account} cannot be merged into itself"),
                    );
                } else if !declared.contains(target) {
                    report.error(
                        account,
                        &at,
                        format!(
                            "account {account}: merged_into {target} is not a declared account"
                        ),
                    );
                } else if let Some(target_header) = headers.get(target) {
                    if let Some(next) = &target_header.merged_into {
                        report.error(
                            account,
                            &at,
                            format!(
                                "account {account} cannot be merged into {target}, which is itself merged into {next}; merge it into {next}"
                            ),
                        );
                    } else {
                        let ours = domains_of(header);
                        let theirs = domains_of(target_header);
                        if !ours.is_empty()
                            && !theirs.is_empty()
                            && ours.iter().all(|d| !theirs.contains(d))
                        {
                            report.error(
                                account,
                                &at,
                                format!(
                                    "account {account} cannot be merged into {target}: they share no domain ({account} has {}; {target} has {}); add a common domain to both",
                                    ours.join(", "),
                                    theirs.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
            if let Some(successor) = &header.successor {
                let at = origin(header, "successor");
                check_user(
                    &user_accounts,
                    &mut report,
                    account,
                    &at,
                    format_args!("account {account}: successor"),
                    successor.as_str(),
                );
            }
        }

        let mut diagnostics: Vec<(Diagnostic, Rank)> = if taint.unknown {
            Vec::new()
        } else {
            report
                .diagnostics
                .into_iter()
                .filter(|(account, _, _)| !taint.accounts.contains(account))
                .map(|(_, diagnostic, rank)| (diagnostic, rank))
                .collect()
        };
        if diagnostics.is_empty() {
            Ok(desired)
        } else {
            // By place, then in the order `build` would have found them.
            diagnostics.sort_by(|(a, a_rank), (b, b_rank)| {
                (&a.path, a.line, a.column, a_rank).cmp(&(&b.path, b.line, b.column, b_rank))
            });
            Err(diagnostics
                .into_iter()
                .map(|(diagnostic, _)| diagnostic)
                .collect())
        }
    }
}

/// [`crate::spec::build_parsed`]: merges the fragments of parsed files (in
/// any order) and adds their diagnostics to `diagnostics` (from reading).
pub(crate) fn build_parsed(
    files: &[&ParsedFile],
    diagnostics: Vec<Diagnostic>,
) -> Result<Desired, Vec<Diagnostic>> {
    build_parsed_for(files, diagnostics, Purpose::Model).map(|(desired, _)| desired)
}

/// [`build_parsed`] for `purpose`, with the counts of what was declared.
pub(crate) fn build_parsed_for(
    files: &[&ParsedFile],
    diagnostics: Vec<Diagnostic>,
    purpose: Purpose,
) -> Result<(Desired, SpecCounts), Vec<Diagnostic>> {
    let mut fragments: Vec<&Fragment> = files
        .iter()
        .flat_map(|parsed| parsed.fragments.iter())
        .collect();
    fragments.sort_by(|a, b| (a.path.as_str(), a.document).cmp(&(b.path.as_str(), b.document)));
    let objects = fragments.iter().map(|f| f.object_count()).sum();
    let mut builder = Builder::for_purpose(objects, purpose);
    for fragment in fragments {
        builder.add(fragment);
    }
    finish_parsed(builder, files, diagnostics)
}

/// The end of [`build_parsed_for`], once `builder` has merged the fragments
/// of `files` in path and document order.
pub(crate) fn finish_parsed(
    builder: Builder,
    files: &[&ParsedFile],
    mut diagnostics: Vec<Diagnostic>,
) -> Result<(Desired, SpecCounts), Vec<Diagnostic>> {
    let (users_declared, memberships_declared) = builder.declared();
    // A file that could not be read may have held any account.
    let mut taint = Taint {
        unknown: !diagnostics.is_empty(),
        ..Taint::default()
    };
    for parsed in files {
        diagnostics.extend(parsed.diagnostics.iter().cloned());
        for account in &parsed.broken {
            match account {
                Some(account) => {
                    taint.accounts.insert(account.clone());
                }
                None => taint.unknown = true,
            }
        }
    }
    match builder.finish(&taint) {
        Ok(desired) if diagnostics.is_empty() => {
            let counts = Builder::counts(&desired, users_declared, memberships_declared);
            Ok((desired, counts))
        }
        Ok(_) => {
            sort_diagnostics(&mut diagnostics);
            Err(diagnostics)
        }
        Err(more) => {
            diagnostics.extend(more);
            sort_diagnostics(&mut diagnostics);
            Err(diagnostics)
        }
    }
}

/// The parts joined with `/`: [`group_id`] and
/// [`membership_id`](crate::model::membership_id), without going through
/// `format!` (tens of thousands of ids).
fn joined_id(parts: &[&str]) -> String {
    let mut id = String::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            id.push('/');
        }
        id.push_str(part);
    }
    id
}

/// Sorts by path, line, column; ties keep the order they were found in.
pub(crate) fn sort_diagnostics(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
}

fn domains_of(fragment: &Fragment) -> Vec<String> {
    fragment
        .domains
        .iter()
        .flatten()
        .map(|d| d.0.clone())
        .collect()
}

fn twice(kind: &str, id: &str, account: &str, previous_account: &str, first: &str) -> String {
    if previous_account == account {
        format!("{kind} {id} is declared twice: here and at {first}")
    } else {
        format!(
            "{kind} {id} is declared in two accounts, {account} here and {previous_account} at {first}: its id is global, declare it once"
        )
    }
}

/// Reports `SUBJECT EMAIL is not a user of account ACCOUNT` unless it is.
fn check_user(
    user_accounts: &UserAccounts,
    report: &mut Report,
    account: &str,
    at: &Origin,
    subject: impl fmt::Display,
    email: &str,
) -> bool {
    match user_accounts.get(email) {
        Some(user_account) if *user_account == account => true,
        Some(user_account) => {
            report.error(
                account,
                at,
                format!("{subject} {email} is not a user of account {account} (it is a user of account {user_account})"),
            );
            false
        }
        None => {
            report.error(
                account,
                at,
                format!(
                    "{subject} {email} is not a user of account {account}; declare it under users:"
                ),
            );
            false
        }
    }
}

/// The account as its header declares it (owner filled in later).
fn header_account(account: &str, header: &Fragment, report: &mut Report) -> DesiredAccount {
    let mut domains: Vec<String> = Vec::new();
    match &header.domains {
        None => report.error(
            account,
            &origin(header, "account"),
            format!("account {account}: the header needs domains, the email domains of the account (e.g. domains: [acme.com])"),
        ),
        Some(list) if list.is_empty() => report.error(
            account,
            &origin(header, "domains"),
            format!("account {account}: domains is empty; list at least one email domain"),
        ),
        Some(list) => {
            for domain in list {
                if domains.contains(&domain.0) {
                    report.error(
                        account,
                        &origin(header, "domains"),
                        format!("account {account}: domain {} is listed twice", domain.0),
                    );
                } else {
                    domains.push(domain.0.clone());
                }
            }
        }
    }
    let invite_ttl = header
        .invite_ttl
        .map(|d| d.0)
        .unwrap_or(Duration::DEFAULT_INVITE_TTL);
    if invite_ttl.seconds == 0 {
        report.error(
            account,
            &origin(header, "invite_ttl"),
            format!("account {account}: invite_ttl is zero; give a positive duration such as 48h"),
        );
    }
    let mut connections: Vec<String> = Vec::new();
    for connection in header.connections.iter().flatten() {
        if !connections.contains(&connection.0) {
            connections.push(connection.0.clone());
        }
    }
    DesiredAccount {
        domains,
        hub: header.hub.as_ref().map(|h| h.0.clone()),
        connections,
        invite_ttl,
        merged_into: header.merged_into.as_ref().map(|m| m.0.clone()),
        successor: header.successor.as_ref().map(|s| s.0.clone()),
        owner: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_joined_as_the_model_joins_them() {
        assert_eq!(
            joined_id(&["acme", "analysts"]),
            group_id("acme", "analysts")
        );
        assert_eq!(
            joined_id(&["acme", "analysts", "bob@acme.com"]),
            crate::model::membership_id("acme", "analysts", "bob@acme.com")
        );
    }
}
