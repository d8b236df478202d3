//! State → specs: the account fragments that `deed state export` writes and
//! that `plan --diff` compares. Planning the exported specs against the same
//! state gives no changes.
//!
//! What the specs cannot say is left out: user status and invitation expiry,
//! credits, invoices and grants (all observed or derived), and assets, which
//! come from the inventory (a state asset that no pin names is left alone, so
//! omitting it loses nothing).
//!
//! The YAML is written by hand, in the layout of contract §1 (one line per
//! user, product and license), with every scalar that is not a plain safe
//! token double-quoted. Lists keep the order the state holds them in; maps
//! are sorted.
//!
//! Architecture invariant: this module does no I/O.

use std::collections::BTreeMap;

use crate::model::{Account, Duration, GroupRole, License, Product, Role, State, User};

/// One YAML document (an account fragment of contract §1) declaring all of
/// `account` that the state holds; empty when the state has no such account.
pub fn account_document(state: &State, account: &str) -> String {
    let index = Index::of(state, Some(account));
    document(state, &index, account)
}

/// One `<account>.yaml` file per account of the state, sorted by account.
pub fn export_files(state: &State) -> Vec<(String, String)> {
    let index = Index::of(state, None);
    state
        .accounts
        .keys()
        .map(|account| (format!("{account}.yaml"), document(state, &index, account)))
        .collect()
}

/// The documents of several accounts, in the order given, indexing the state
/// once.
pub fn account_documents(state: &State, accounts: &[String]) -> Vec<String> {
    let index = Index::of(state, None);
    accounts
        .iter()
        .map(|account| document(state, &index, account))
        .collect()
}

/// The objects of each account, gathered in one pass over the state.
#[derive(Default)]
struct Index<'a> {
    users: BTreeMap<&'a str, Vec<(&'a str, &'a User)>>,
    /// account -> group name -> member -> role.
    groups: BTreeMap<&'a str, BTreeMap<&'a str, BTreeMap<&'a str, GroupRole>>>,
    /// account -> organization -> product id -> product.
    organizations: BTreeMap<&'a str, BTreeMap<&'a str, BTreeMap<&'a str, &'a Product>>>,
    licenses: BTreeMap<&'a str, Vec<(&'a str, &'a License)>>,
}

impl<'a> Index<'a> {
    /// Indexes the objects of `only` (or of every account).
    fn of(state: &'a State, only: Option<&str>) -> Index<'a> {
        let wanted = |account: &str| only.is_none() || only == Some(account);
        let mut index = Index::default();
        for (email, user) in &state.users {
            if wanted(&user.account) {
                index
                    .users
                    .entry(&user.account)
                    .or_default()
                    .push((email, user));
            }
        }
        for group in state.groups.values() {
            if wanted(&group.account) {
                index
                    .groups
                    .entry(&group.account)
                    .or_default()
                    .entry(&group.name)
                    .or_default();
            }
        }
        for membership in state.memberships.values() {
            if wanted(&membership.account) {
                index
                    .groups
                    .entry(&membership.account)
                    .or_default()
                    .entry(&membership.group)
                    .or_default()
                    .insert(&membership.user, membership.role);
            }
        }
        let mut products: BTreeMap<&str, BTreeMap<&str, &Product>> = BTreeMap::new();
        for (id, product) in &state.products {
            products
                .entry(&product.organization)
                .or_default()
                .insert(id, product);
        }
        for (id, organization) in &state.organizations {
            if wanted(&organization.account) {
                index
                    .organizations
                    .entry(&organization.account)
                    .or_default()
                    .insert(id, products.remove(id.as_str()).unwrap_or_default());
            }
        }
        for (id, license) in &state.licenses {
            if wanted(&license.account) {
                index
                    .licenses
                    .entry(&license.account)
                    .or_default()
                    .push((id, license));
            }
        }
        index
    }
}

fn document(state: &State, index: &Index<'_>, account: &str) -> String {
    let Some(header) = state.accounts.get(account) else {
        return String::new();
    };
    let mut out = String::new();
    write_header(&mut out, account, header);

    if let Some(users) = index.users.get(account).filter(|users| !users.is_empty()) {
        out.push_str("users:\n");
        for (email, user) in users {
            let mut fields = Vec::new();
            let role = if header.owner.as_deref() == Some(*email) {
                Role::Owner
            } else {
                user.role
            };
            if role != Role::Member {
                fields.push(format!("role: {}", role.as_str()));
            }
            if let Some(name) = &user.name {
                fields.push(format!("name: {}", scalar(name)));
            }
            out.push_str(&format!("  {}: {{{}}}\n", scalar(email), fields.join(", ")));
        }
    }

    if let Some(groups) = index
        .groups
        .get(account)
        .filter(|groups| !groups.is_empty())
    {
        out.push_str("groups:\n");
        for (name, members) in groups {
            out.push_str(&format!("  {}:\n", scalar(name)));
            if members.is_empty() {
                out.push_str("    members: {}\n");
                continue;
            }
            out.push_str("    members:\n");
            for (email, role) in members {
                out.push_str(&format!("      {}: {}\n", scalar(email), role.as_str()));
            }
        }
    }

    if let Some(organizations) = index
        .organizations
        .get(account)
        .filter(|orgs| !orgs.is_empty())
    {
        out.push_str("organizations:\n");
        for (id, products) in organizations {
            out.push_str(&format!("  {}:\n", scalar(id)));
            if products.is_empty() {
                out.push_str("    products: {}\n");
                continue;
            }
            out.push_str("    products:\n");
            for (product_id, product) in products {
                let mut fields = Vec::new();
                if let Some(name) = &product.name {
                    fields.push(format!("name: {}", scalar(name)));
                }
                if !product.access.is_empty() {
                    fields.push(format!("access: {}", flow_list(&product.access)));
                }
                out.push_str(&format!(
                    "      {}: {{{}}}\n",
                    scalar(product_id),
                    fields.join(", ")
                ));
            }
        }
    }

    if let Some(licenses) = index
        .licenses
        .get(account)
        .filter(|licenses| !licenses.is_empty())
    {
        out.push_str("licenses:\n");
        for (id, license) in licenses {
            let mut fields = vec![format!("product: {}", scalar(&license.product))];
            if let Some(assignee) = &license.assignee {
                fields.push(format!("assignee: {}", scalar(assignee)));
            }
            if let Some(expires) = &license.expires {
                fields.push(format!("expires: {expires}"));
            }
            out.push_str(&format!("  {}: {{{}}}\n", scalar(id), fields.join(", ")));
        }
    }
    out
}

fn write_header(out: &mut String, account: &str, header: &Account) {
    out.push_str(&format!("account: {}\n", scalar(account)));
    out.push_str(&format!("domains: {}\n", flow_list(&header.domains)));
    if let Some(hub) = &header.hub {
        out.push_str(&format!("hub: {}\n", scalar(hub)));
    }
    if !header.connections.is_empty() {
        out.push_str(&format!(
            "connections: {}\n",
            flow_list(&header.connections)
        ));
    }
    if header.invite_ttl != Duration::DEFAULT_INVITE_TTL {
        out.push_str(&format!("invite_ttl: {}\n", header.invite_ttl));
    }
    if let Some(merged_into) = &header.merged_into {
        out.push_str(&format!("merged_into: {}\n", scalar(merged_into)));
    }
    if let Some(successor) = &header.successor {
        out.push_str(&format!("successor: {}\n", scalar(successor)));
    }
}

fn flow_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|item| scalar(item)).collect();
    format!("[{}]", items.join(", "))
}

/// `text` as a YAML scalar that reads back as the same string, in block and
/// in flow context: plain when it is a safe token, double-quoted otherwise.
fn scalar(text: &str) -> String {
    if is_plain_safe(text) {
        text.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar.
        serde_json::Value::String(text.to_string()).to_string()
    }
}

fn is_plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    if !first.is_ascii_alphanumeric() || text.ends_with(' ') {
        return false;
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-' | '/' | '+' | ' '))
    {
        return false;
    }
    // Words YAML 1.1 or 1.2 read as booleans or null.
    const SPECIAL: [&str; 11] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf",
    ];
    if SPECIAL.contains(&text.to_ascii_lowercase().as_str()) {
        return false;
    }
    // Anything that could be read as a number, a date or a time.
    let numeric_like = first.is_ascii_digit()
        && text.chars().all(|c| {
            c.is_ascii_hexdigit()
                || matches!(
                    c,
                    '.' | '_'
                        | '-'
                        | '+'
                        | ':'
                        | 'x'
                        | 'X'
                        | 'o'
                        | 'O'
                        | ' '
                        | 'T'
                        | 't'
                        | 'Z'
                        | 'z'
                )
        });
    !numeric_like
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Group, Membership, Organization, UserStatus};

    fn user(account: &str, role: Role, name: Option<&str>) -> User {
        User {
            account: account.into(),
            role,
            name: name.map(String::from),
            status: UserStatus::Active,
            invitation_expires: None,
        }
    }

    fn small_state() -> State {
        let mut state = State::default();
        state.accounts.insert(
            "acme".into(),
            Account {
                owner: Some("alice@acme.com".into()),
                domains: vec!["acme.com".into(), "acme.io".into()],
                hub: Some("acme-hq".into()),
                connections: vec!["globex".into()],
                credits: 5000,
                merged_into: None,
                invite_ttl: Duration::from_seconds(72 * 3600),
                successor: Some("bob@acme.com".into()),
            },
        );
        state.accounts.insert(
            "acme-hq".into(),
            Account {
                owner: Some("root@acme.com".into()),
                domains: vec!["acme.com".into()],
                hub: None,
                connections: Vec::new(),
                credits: 0,
                merged_into: None,
                invite_ttl: Duration::DEFAULT_INVITE_TTL,
                successor: None,
            },
        );
        state.accounts.insert(
            "old".into(),
            Account {
                owner: None,
                domains: vec!["acme.com".into()],
                hub: None,
                connections: Vec::new(),
                credits: 0,
                merged_into: Some("acme".into()),
                invite_ttl: Duration::DEFAULT_INVITE_TTL,
                successor: None,
            },
        );
        state.users.insert(
            "alice@acme.com".into(),
            user("acme", Role::Owner, Some("Alice Doe")),
        );
        state
            .users
            .insert("bob@acme.com".into(), user("acme", Role::Admin, None));
        state
            .users
            .insert("carol@acme.com".into(), user("acme", Role::Member, None));
        state.users.insert(
            "dan@acme.com".into(),
            user("acme", Role::Member, Some("Doe, Dan: #1")),
        );
        state
            .users
            .insert("root@acme.com".into(), user("acme-hq", Role::Owner, None));
        for (name, members) in [
            (
                "analysts",
                vec![
                    ("carol@acme.com", GroupRole::Member),
                    ("bob@acme.com", GroupRole::Admin),
                ],
            ),
            ("empty", vec![]),
        ] {
            state.groups.insert(
                format!("acme/{name}"),
                Group {
                    account: "acme".into(),
                    name: name.into(),
                },
            );
            for (email, role) in members {
                state.memberships.insert(
                    format!("acme/{name}/{email}"),
                    Membership {
                        account: "acme".into(),
                        group: name.into(),
                        user: email.into(),
                        role,
                    },
                );
            }
        }
        state.organizations.insert(
            "research".into(),
            Organization {
                account: "acme".into(),
            },
        );
        state.organizations.insert(
            "2024".into(),
            Organization {
                account: "acme".into(),
            },
        );
        state.products.insert(
            "prod-7".into(),
            Product {
                organization: "research".into(),
                name: Some("kDrive 2TB".into()),
                access: vec!["carol@acme.com".into()],
            },
        );
        state.products.insert(
            "prod-8".into(),
            Product {
                organization: "research".into(),
                name: None,
                access: vec![],
            },
        );
        state.licenses.insert(
            "lic-42".into(),
            License {
                account: "acme".into(),
                product: "omiq-pro".into(),
                assignee: Some("carol@acme.com".into()),
                expires: Some("2027-03-31".parse().unwrap()),
            },
        );
        state.licenses.insert(
            "lic-43".into(),
            License {
                account: "acme".into(),
                product: "omiq-pro".into(),
                assignee: None,
                expires: None,
            },
        );
        state
    }

    #[test]
    fn export_of_a_small_state() {
        let state = small_state();
        assert_eq!(
            account_document(&state, "acme"),
            r#"account: acme
domains: [acme.com, acme.io]
hub: acme-hq
connections: [globex]
invite_ttl: 72h
successor: bob@acme.com
users:
  alice@acme.com: {role: owner, name: Alice Doe}
  bob@acme.com: {role: admin}
  carol@acme.com: {}
  dan@acme.com: {name: "Doe, Dan: #1"}
groups:
  analysts:
    members:
      bob@acme.com: admin
      carol@acme.com: member
  empty:
    members: {}
organizations:
  "2024":
    products: {}
  research:
    products:
      prod-7: {name: kDrive 2TB, access: [carol@acme.com]}
      prod-8: {}
licenses:
  lic-42: {product: omiq-pro, assignee: carol@acme.com, expires: 2027-03-31}
  lic-43: {product: omiq-pro}
"#
        );
        assert_eq!(
            account_document(&state, "old"),
            "account: old\ndomains: [acme.com]\nmerged_into: acme\n"
        );
        assert_eq!(account_document(&state, "missing"), "");
    }

    #[test]
    fn export_files_names_one_file_per_account() {
        let state = small_state();
        let files = export_files(&state);
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["acme.yaml", "acme-hq.yaml", "old.yaml"]);
        assert_eq!(
            files[1].1,
            "account: acme-hq\ndomains: [acme.com]\nusers:\n  root@acme.com: {role: owner}\n"
        );
        assert_eq!(files[0].1, account_document(&state, "acme"));
        assert_eq!(
            account_documents(&state, &["old".to_string(), "acme".to_string()]),
            [
                account_document(&state, "old"),
                account_document(&state, "acme")
            ]
        );
    }

    #[test]
    fn exported_yaml_reads_back_as_the_same_values() {
        let document = account_document(&small_state(), "acme");
        let value: serde_yaml::Value = serde_yaml::from_str(&document).unwrap();
        assert_eq!(
            value["users"]["dan@acme.com"]["name"].as_str(),
            Some("Doe, Dan: #1")
        );
        assert_eq!(
            value["users"]["alice@acme.com"]["name"].as_str(),
            Some("Alice Doe")
        );
        assert_eq!(
            value["organizations"]["2024"]["products"]
                .as_mapping()
                .map(|m| m.len()),
            Some(0)
        );
        assert_eq!(
            value["licenses"]["lic-42"]["expires"].as_str(),
            Some("2027-03-31")
        );
        assert_eq!(value["domains"][1].as_str(), Some("acme.io"));
    }

    #[test]
    fn awkward_scalars_are_quoted_and_read_back() {
        let awkward = [
            "yes",
            "No",
            "null",
            "~",
            "",
            " lead",
            "trail ",
            "123",
            "1e3",
            "0x1F",
            "2027-03-31",
            "12:30",
            "a: b",
            "a #b",
            "[x]",
            "{x}",
            "a,b",
            "-x",
            "? x",
            "&anchor",
            "*alias",
            "!tag",
            "%x",
            "@x",
            "`x`",
            "'q'",
            "\"dq\"",
            "tab\there",
            "line\nbreak",
            "émile",
            "back\\slash",
            ".inf",
        ];
        for text in awkward {
            let yaml = format!("key: {}\nlist: [{}, z]\n", scalar(text), scalar(text));
            let value: serde_yaml::Value =
                serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(value["key"].as_str(), Some(text), "{yaml}");
            assert_eq!(value["list"][0].as_str(), Some(text), "{yaml}");
        }
        for plain in [
            "acme",
            "bob@acme.com",
            "kDrive 2TB",
            "prod-7",
            "group:x".replace(':', "-").as_str(),
        ] {
            assert_eq!(scalar(plain), plain);
        }
    }
}

#[cfg(test)]
mod round_trip {
    //! Exported specs planned against the same state give no changes.
    use super::*;
    use crate::model::{Group, Membership, Organization, UserStatus};
    use crate::plan::{plan, PlanConfig};
    use crate::spec::{load_files, SourceFile};

    fn state() -> State {
        let mut state = State::default();
        let account = |owner: Option<&str>, domain: &str| Account {
            owner: owner.map(String::from),
            domains: vec![domain.into()],
            hub: None,
            connections: Vec::new(),
            credits: 0,
            merged_into: None,
            invite_ttl: Duration::DEFAULT_INVITE_TTL,
            successor: None,
        };
        let mut acme = account(Some("alice@acme.com"), "acme.com");
        acme.hub = Some("hq".into());
        acme.connections = vec!["globex".into()];
        acme.invite_ttl = Duration::from_seconds(72 * 3600);
        acme.successor = Some("bob@acme.com".into());
        acme.credits = 5000;
        state.accounts.insert("acme".into(), acme);
        state
            .accounts
            .insert("hq".into(), account(Some("root@acme.com"), "acme.com"));
        let mut globex = account(Some("gina@globex.com"), "globex.com");
        globex.connections = vec!["acme".into()];
        state.accounts.insert("globex".into(), globex);
        let mut old = account(None, "acme.com");
        old.merged_into = Some("acme".into());
        state.accounts.insert("old".into(), old);
        let user = |account: &str, role, name: Option<&str>, status| User {
            account: account.into(),
            role,
            name: name.map(String::from),
            status,
            invitation_expires: None,
        };
        state.users.insert(
            "alice@acme.com".into(),
            user("acme", Role::Owner, Some("Doe, Alice"), UserStatus::Active),
        );
        state.users.insert(
            "bob@acme.com".into(),
            user("acme", Role::Admin, None, UserStatus::Active),
        );
        state.users.insert(
            "carol@acme.com".into(),
            user("acme", Role::Member, None, UserStatus::Active),
        );
        state.users.insert(
            "vic@acme.com".into(),
            user("acme", Role::Viewer, None, UserStatus::Active),
        );
        state.users.insert(
            "root@acme.com".into(),
            user("hq", Role::Owner, None, UserStatus::Active),
        );
        let mut invited = user(
            "acme",
            Role::BillingAdmin,
            Some("2027"),
            UserStatus::Invited,
        );
        invited.invitation_expires = Some("2026-11-24T12:00:00Z".parse().unwrap());
        state.users.insert("ivy@acme.com".into(), invited);
        state.users.insert(
            "gina@globex.com".into(),
            user("globex", Role::Owner, None, UserStatus::Active),
        );
        state.groups.insert(
            "acme/analysts".into(),
            Group {
                account: "acme".into(),
                name: "analysts".into(),
            },
        );
        state.groups.insert(
            "acme/empty".into(),
            Group {
                account: "acme".into(),
                name: "empty".into(),
            },
        );
        for (email, role) in [
            ("bob@acme.com", GroupRole::Admin),
            ("carol@acme.com", GroupRole::Member),
        ] {
            state.memberships.insert(
                format!("acme/analysts/{email}"),
                Membership {
                    account: "acme".into(),
                    group: "analysts".into(),
                    user: email.into(),
                    role,
                },
            );
        }
        state.organizations.insert(
            "research".into(),
            Organization {
                account: "acme".into(),
            },
        );
        state.organizations.insert(
            "bare".into(),
            Organization {
                account: "acme".into(),
            },
        );
        state.products.insert(
            "prod-7".into(),
            Product {
                organization: "research".into(),
                name: Some("kDrive 2TB".into()),
                access: vec!["carol@acme.com".into()],
            },
        );
        state.products.insert(
            "prod-8".into(),
            Product {
                organization: "research".into(),
                name: None,
                access: vec![],
            },
        );
        state.licenses.insert(
            "lic-42".into(),
            License {
                account: "acme".into(),
                product: "prod-7".into(),
                assignee: Some("carol@acme.com".into()),
                expires: Some("2027-03-31".parse().unwrap()),
            },
        );
        state
    }

    #[test]
    fn planning_exported_specs_against_the_same_state_gives_no_changes() {
        let state = state();
        let files: Vec<SourceFile> = export_files(&state)
            .into_iter()
            .map(|(path, text)| SourceFile { path, text })
            .collect();
        let desired = match load_files(&files, Vec::new()) {
            Ok(desired) => desired,
            Err(errors) => panic!("{errors:?}\n{files:#?}"),
        };
        let config = PlanConfig {
            now: "2026-11-23T12:00:00Z".parse().unwrap(),
        };
        let plan = match plan(&desired, &state, &config) {
            Ok(plan) => plan,
            Err(errors) => panic!("{errors:?}"),
        };
        assert!(
            plan.changes.is_empty(),
            "{}",
            crate::render::render_json(&plan)
        );
    }
}
