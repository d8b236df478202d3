//! Tests of spec loading: parse + build on inline YAML (one test per class
//! of error, each asserting path, line and message), the full contract
//! example, `read_tree` on temporary folders, and hostile input.

use std::time::{Duration as StdDuration, Instant};

use super::*;
use crate::model::{AssetKind, GroupRole, Kind, Owner, Role};

/// Parses and builds inline files; returns the rendered diagnostics.
fn check(files: &[(&str, &str)]) -> Vec<String> {
    match desired_of(files) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics,
    }
}

fn desired_of(files: &[(&str, &str)]) -> Result<Desired, Vec<String>> {
    let files: Vec<SourceFile> = files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.to_string(),
            text: text.to_string(),
        })
        .collect();
    load_files(&files, Vec::new())
        .map_err(|diagnostics| diagnostics.iter().map(|d| d.to_string()).collect())
}

/// A valid account `acme` owned by alice, to which tests add lines.
const ACME: &str = "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n";

const CONTRACT_EXAMPLE: &str = r#"account: acme                   # required. id: lowercase [a-z0-9-], 1-63 chars
# --- account header: in exactly one fragment of the account
domains: [acme.com]             # required, non-empty: email domains of this account
hub: acme-hq                    # optional: this account is a satellite of account acme-hq
connections: [globex]           # optional: accounts it consents to exchange transfers with
invite_ttl: 48h                 # optional, default 48h
successor: alice@acme.com       # optional: who receives what a removed user leaves behind
# --- objects: in any fragment of the account
users:                          # email -> user. Emails are case-insensitive, stored lowercase.
  alice@acme.com: {role: owner, name: Alice Doe}
  bob@acme.com:   {role: admin}
  carol@acme.com: {}            # role defaults to member
  dave@acme.com:
    role: member
    move:                       # only used when dave arrives from another account (2.3)
      successor: erin@acme.com  # a user of the source account; default: its owner
      bring: [proof, file]      # asset kinds that move with him; default: none
      folder: From acme-eu      # folder on this account that receives them
groups:                         # name -> group; group ids are <account>/<name>
  analysts:
    members: {bob@acme.com: admin, carol@acme.com: member}
organizations:                  # org id (global) -> organization
  research:
    products:                   # product id (global) -> product
      prod-7: {name: kDrive 2TB, access: [carol@acme.com]}
licenses:                       # license id (global) -> license (one seat with a term)
  lic-42: {product: omiq-pro, assignee: carol@acme.com, expires: 2027-03-31}
assets:                         # pinned assets: "<kind>/<id>" -> ownership
  dataset/ds-1: {owner: "group:analysts", tags: {original-owner: bob@acme.com}}
reassign:                       # bulk ownership rules over the inventory (2.5)
  - from: user:dave@acme.com    # or group:NAME
    to: group:analysts          # or user:EMAIL (a bare email means user:)
    kinds: [dataset, workflow]  # default: every kind
    tag: {original-owner: dave@acme.com}
"#;

const OTHERS: &str = "account: acme-hq\ndomains: [acme.com]\nusers:\n  hank@acme.com: {role: owner}\n---\naccount: globex\ndomains: [globex.com]\nconnections: [acme]\nusers:\n  gus@globex.com: {role: owner}\n";

#[test]
fn the_contract_example_builds_the_desired_model() {
    let desired = desired_of(&[("acme.yaml", CONTRACT_EXAMPLE), ("others.yaml", OTHERS)]).unwrap();
    let acme = &desired.accounts["acme"];
    assert_eq!(acme.owner.as_deref(), Some("alice@acme.com"));
    assert_eq!(acme.domains, vec!["acme.com"]);
    assert_eq!(acme.hub.as_deref(), Some("acme-hq"));
    assert_eq!(acme.connections, vec!["globex"]);
    assert_eq!(acme.invite_ttl.seconds, 48 * 3600);
    assert_eq!(acme.successor.as_deref(), Some("alice@acme.com"));
    assert_eq!(
        desired.accounts["globex"].owner.as_deref(),
        Some("gus@globex.com")
    );

    assert_eq!(
        desired.users["alice@acme.com"].name.as_deref(),
        Some("Alice Doe")
    );
    assert_eq!(desired.users["bob@acme.com"].role, Role::Admin);
    assert_eq!(desired.users["carol@acme.com"].role, Role::Member);
    let dave = desired.users["dave@acme.com"].move_rule.clone().unwrap();
    assert_eq!(dave.successor.as_deref(), Some("erin@acme.com"));
    assert_eq!(dave.bring, vec![AssetKind::Proof, AssetKind::File]);
    assert_eq!(dave.folder.as_deref(), Some("From acme-eu"));

    assert_eq!(desired.groups["acme/analysts"].name, "analysts");
    assert_eq!(
        desired.memberships["acme/analysts/bob@acme.com"].role,
        GroupRole::Admin
    );
    assert_eq!(
        desired.memberships["acme/analysts/carol@acme.com"].user,
        "carol@acme.com"
    );
    assert_eq!(desired.organizations["research"].account, "acme");
    assert_eq!(desired.products["prod-7"].organization, "research");
    assert_eq!(desired.products["prod-7"].access, vec!["carol@acme.com"]);
    let license = &desired.licenses["lic-42"];
    assert_eq!(license.product, "omiq-pro");
    assert_eq!(license.assignee.as_deref(), Some("carol@acme.com"));
    assert_eq!(license.expires.unwrap().to_string(), "2027-03-31");
    let pin = &desired.pins["dataset/ds-1"];
    assert_eq!(pin.owner, Owner::Group("analysts".into()));
    assert_eq!(pin.tags["original-owner"], "bob@acme.com");
    let rule = &desired.reassign["acme"][0];
    assert_eq!(
        (rule.number, &rule.from, &rule.to),
        (
            1,
            &Owner::User("dave@acme.com".into()),
            &Owner::Group("analysts".into())
        )
    );
    assert_eq!(rule.kinds, vec![AssetKind::Dataset, AssetKind::Workflow]);
    assert_eq!(rule.tag["original-owner"], "dave@acme.com");

    let at = |kind: Kind, id: &str| {
        desired
            .origin(kind, id)
            .map(|o| format!("{}:{}:{}", o.path, o.line, o.column))
    };
    assert_eq!(at(Kind::Account, "acme").as_deref(), Some("acme.yaml:1:1"));
    assert_eq!(
        at(Kind::Account, "globex").as_deref(),
        Some("others.yaml:6:1")
    );
    assert_eq!(
        at(Kind::User, "bob@acme.com").as_deref(),
        Some("acme.yaml:11:3")
    );
    assert_eq!(
        at(Kind::Group, "acme/analysts").as_deref(),
        Some("acme.yaml:20:3")
    );
    assert_eq!(
        at(Kind::Membership, "acme/analysts/bob@acme.com").as_deref(),
        Some("acme.yaml:21:5")
    );
    assert_eq!(
        at(Kind::Organization, "research").as_deref(),
        Some("acme.yaml:23:3")
    );
    assert_eq!(
        at(Kind::Product, "prod-7").as_deref(),
        Some("acme.yaml:25:7")
    );
    assert_eq!(
        at(Kind::License, "lic-42").as_deref(),
        Some("acme.yaml:27:3")
    );
    assert_eq!(
        at(Kind::Asset, "dataset/ds-1").as_deref(),
        Some("acme.yaml:29:3")
    );
    assert_eq!(desired.account_files["acme"], vec!["acme.yaml"]);
    assert_eq!(desired.account_files["globex"], vec!["others.yaml"]);
}

#[test]
fn fragments_of_one_account_merge_across_files_and_rules_number_in_path_order() {
    let desired = desired_of(&[
        ("b/users.yaml", "account: acme\nusers:\n  bob@acme.com: {}\nreassign:\n  - {from: user:old@acme.com, to: bob@acme.com}\n"),
        ("a.yaml", "account: acme\ndomains: [acme.com]\nusers:\n  Alice@ACME.com: {role: owner}\nreassign:\n  - {from: group:gone, to: user:alice@acme.com}\n"),
    ])
    .unwrap();
    assert_eq!(
        desired.accounts["acme"].owner.as_deref(),
        Some("alice@acme.com")
    );
    assert_eq!(
        desired.account_files["acme"],
        vec!["a.yaml", "b/users.yaml"]
    );
    let rules = &desired.reassign["acme"];
    assert_eq!(rules[0].number, 1);
    assert_eq!(rules[0].from, Owner::Group("gone".into()));
    assert_eq!(rules[1].number, 2);
    assert_eq!(rules[1].to, Owner::User("bob@acme.com".into()));
    assert_eq!(desired.accounts["acme"].invite_ttl.seconds, 48 * 3600);
}

#[test]
fn empty_documents_and_empty_values_mean_defaults() {
    let desired = desired_of(&[("a.yaml", "# nothing\n---\n---\naccount: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n  bob@acme.com:\n  carol@acme.com: {}\ngroups:\n  empty:\n---\n")]).unwrap();
    assert_eq!(desired.users["bob@acme.com"].role, Role::Member);
    assert_eq!(desired.users["carol@acme.com"].role, Role::Member);
    assert!(desired.groups.contains_key("acme/empty"));
    assert_eq!(desired.origin(Kind::User, "bob@acme.com").unwrap().line, 8);
}

#[test]
fn syntax_errors_are_located_in_the_file() {
    assert_eq!(
        check(&[("a.yaml", "account: acme\nusers: [\n")]),
        vec![
            "a.yaml:2:8: users: invalid type: sequence, expected a mapping keyed by an email",
            "a.yaml:3:1: did not find expected node content, while parsing a flow node",
        ]
    );
    assert_eq!(
        check(&[("a.yaml", "account: acme\n  domains: x\n")]),
        vec![
            // What serde read before the syntax error is checked too.
            "a.yaml:1:10: account: bad account id `acme domains`: use 1-63 characters of lowercase a-z, 0-9 and -",
            "a.yaml:2:10: mapping values are not allowed in this context",
        ]
    );
}

#[test]
fn errors_in_later_documents_carry_the_file_line() {
    let text = format!("{ACME}---\naccount: acme\nusers:\n  bob@acme.com: {{role: boss}}\n");
    assert_eq!(
        check(&[("a.yaml", &text)]),
        vec!["a.yaml:8:24: users.bob@acme.com.role: unknown variant `boss`, expected one of `owner`, `admin`, `billing-admin`, `member`, `viewer`"]
    );
}

#[test]
fn unknown_fields_are_errors() {
    assert_eq!(
        check(&[("a.yaml", &format!("{ACME}  bob@acme.com:\n    rol: admin\n"))]),
        vec!["a.yaml:6:5: users.bob@acme.com: unknown field `rol`, expected one of `role`, `name`, `move`"]
    );
    assert_eq!(
        check(&[("a.yaml", &format!("{ACME}user:\n  x@acme.com: {{}}\n"))])[0],
        "a.yaml:5:1: unknown field `user`, expected one of `account`, `domains`, `hub`, `connections`, `invite_ttl`, `merged_into`, `successor`, `users`, `groups`, `organizations`, `licenses`, `assets`, `reassign`"
    );
}

#[test]
fn wrong_types_are_errors() {
    assert_eq!(
        check(&[("a.yaml", "account: acme\ndomains: acme.com\n")]),
        vec!["a.yaml:2:10: domains: invalid type: string \"acme.com\", expected a sequence"]
    );
    assert_eq!(
        check(&[("a.yaml", "just text\n")]),
        vec!["a.yaml:1:1: invalid type: string \"just text\", expected an account fragment: a mapping with `account:` and what it declares"]
    );
    assert_eq!(
        check(&[("a.yaml", "domains: [acme.com]\n")]),
        vec!["a.yaml:1:1: missing field `account`"]
    );
}

#[test]
fn duplicate_keys_are_errors_naming_the_key() {
    assert_eq!(
        check(&[("a.yaml", &format!("{ACME}  bob@acme.com: {{}}\n  Bob@Acme.com: {{}}\n"))]),
        vec!["a.yaml:6:3: users: duplicate key `Bob@Acme.com`: it is already declared in this mapping as `bob@acme.com` (case is ignored)"]
    );
    assert_eq!(
        check(&[("a.yaml", &format!("{ACME}users:\n  bob@acme.com: {{}}\n"))]),
        vec!["a.yaml:5:1: duplicate key `users`: it is already declared in this mapping"]
    );
    assert_eq!(
        check(&[("a.yaml", &format!("{ACME}  bob@acme.com:\n    role: admin\n    role: viewer\n"))]),
        vec!["a.yaml:7:5: users.bob@acme.com: duplicate key `role`: it is already declared in this mapping"]
    );
    assert_eq!(
        check(&[("a.yaml", &format!("{ACME}assets:\n  file/f-1: {{owner: alice@acme.com, tags: {{a: x, a: y}}}}\n"))]),
        vec!["a.yaml:6:50: assets.file/f-1.tags: duplicate key `a`: it is already declared in this mapping"]
    );
}

#[test]
fn bad_ids_emails_dates_and_durations_are_located_at_the_value() {
    let one = |text: &str| check(&[("a.yaml", text)]);
    assert_eq!(
        one("account: Acme\n"),
        vec!["a.yaml:1:10: account: bad account id `Acme`: use 1-63 characters of lowercase a-z, 0-9 and -"]
    );
    assert_eq!(
        one(&format!("{ACME}  bob-at-acme.com: {{}}\n")),
        vec!["a.yaml:5:3: users: bad email `bob-at-acme.com`: expected name@domain.tld"]
    );
    assert_eq!(
        one(&format!("{ACME}licenses:\n  lic-1: {{product: p, expires: 2027-02-30}}\n")),
        vec!["a.yaml:6:32: licenses.lic-1.expires: bad date `2027-02-30`: expected a calendar date YYYY-MM-DD, e.g. 2027-03-31"]
    );
    assert_eq!(
        one("account: acme\ndomains: [acme.com]\ninvite_ttl: 2 days\n"),
        vec!["a.yaml:3:13: invite_ttl: bad duration `2 days`: expected e.g. 48h, 30m, 2d or 1h30m"]
    );
    assert_eq!(
        one(&format!("{ACME}assets:\n  disk/d-1: {{owner: alice@acme.com}}\n")),
        vec!["a.yaml:6:3: assets: unknown asset kind `disk` (expected one of dataset, workflow, proof, file, folder, view)"]
    );
    assert_eq!(
        one(&format!("{ACME}assets:\n  file/f-1: {{owner: alice}}\n")),
        vec!["a.yaml:6:21: assets.file/f-1.owner: bad owner `alice`: expected user:EMAIL or group:NAME"]
    );
    assert_eq!(
        one(&format!("{ACME}groups:\n  -bad: {{}}\n")),
        vec!["a.yaml:6:3: groups: bad group name `-bad`: use 1-128 characters of a-z, A-Z, 0-9, '.', '_' and '-'"]
    );
    assert_eq!(
        one("account: acme\ndomains: [acme]\n"),
        vec!["a.yaml:2:11: domains[0]: bad domain `acme`: expected a domain name such as acme.com"]
    );
    assert_eq!(
        one(&format!("{ACME}organizations:\n  r&d: {{}}\n")),
        vec!["a.yaml:6:3: organizations: bad id `r&d`: use 1-128 characters of a-z, A-Z, 0-9, '.', '_' and '-', starting with a letter or digit"]
    );
}

#[test]
fn an_account_needs_exactly_one_header_with_domains() {
    assert_eq!(
        check(&[("a.yaml", "account: acme\nusers:\n  alice@acme.com: {role: owner}\n")]),
        vec!["a.yaml:1:1: account acme has no header: declare its domains (and hub, connections, invite_ttl, merged_into, successor if needed) in one of its fragments"]
    );
    assert_eq!(
        check(&[("a.yaml", ACME), ("b.yaml", "# header again\naccount: acme\ninvite_ttl: 24h\n")]),
        vec!["b.yaml:3:1: account acme: the header is declared twice: here and at a.yaml:1:1; declare domains, hub, connections, invite_ttl, merged_into and successor in one fragment only"]
    );
    assert_eq!(
        check(&[("a.yaml", "account: acme\nhub: acme\nusers:\n  alice@acme.com: {role: owner}\n")]),
        vec![
            "a.yaml:1:1: account acme: the header needs domains, the email domains of the account (e.g. domains: [acme.com])",
            "a.yaml:2:1: account acme cannot be its own hub; remove hub:",
        ]
    );
    assert_eq!(
        check(&[(
            "a.yaml",
            "account: acme\ndomains: []\nusers:\n  alice@acme.com: {role: owner}\n"
        )]),
        vec!["a.yaml:2:1: account acme: domains is empty; list at least one email domain"]
    );
}

#[test]
fn an_account_has_exactly_one_owner() {
    assert_eq!(
        check(&[(
            "a.yaml",
            "account: acme\ndomains: [acme.com]\nusers:\n  bob@acme.com: {}\n"
        )]),
        vec!["a.yaml:1:1: account acme has no owner: give exactly one of its users role: owner"]
    );
    assert_eq!(
        check(&[("a.yaml", ACME), ("b.yaml", "account: acme\nusers:\n  bob@acme.com:\n    role: owner\n")]),
        vec!["b.yaml:3:3: account acme has two owners, bob@acme.com here and alice@acme.com at a.yaml:4:3: an account has exactly one owner; give the others another role"]
    );
}

#[test]
fn the_same_object_declared_twice_names_both_places() {
    assert_eq!(
        check(&[
            ("a.yaml", &format!("{ACME}  bob@acme.com: {{}}\n")),
            ("b.yaml", "account: acme\nusers:\n  BOB@acme.com: {}\n")
        ]),
        vec!["b.yaml:3:3: user bob@acme.com is declared twice: here and at a.yaml:5:3"]
    );
    let globex = "account: globex\ndomains: [globex.com]\nusers:\n  gus@globex.com: {role: owner}\n  bob@acme.com: {}\norganizations:\n  research:\n    products:\n      prod-7: {}\nlicenses:\n  lic-1: {product: p}\nassets:\n  file/f-1: {owner: gus@globex.com}\n";
    let acme = format!("{ACME}  bob@acme.com: {{}}\norganizations:\n  research: {{}}\n  lab:\n    products:\n      prod-7:\nlicenses:\n  lic-1: {{product: p}}\nassets:\n  file/f-1: {{owner: bob@acme.com}}\n");
    assert_eq!(
        check(&[("a.yaml", &acme), ("g.yaml", globex)]),
        vec![
            "g.yaml:5:3: user bob@acme.com is declared in two accounts, globex here and acme at a.yaml:5:3: a user belongs to one account",
            "g.yaml:7:3: organization research is declared in two accounts, globex here and acme at a.yaml:7:3: its id is global, declare it once",
            "g.yaml:9:7: product prod-7 is declared in two accounts, globex here and acme at a.yaml:10:7: its id is global, declare it once",
            "g.yaml:11:3: license lic-1 is declared in two accounts, globex here and acme at a.yaml:12:3: its id is global, declare it once",
            "g.yaml:13:3: asset file/f-1 is pinned in two accounts, globex here and acme at a.yaml:14:3: an asset belongs to one account",
        ]
    );
    assert_eq!(
        check(&[
            ("a.yaml", &format!("{ACME}groups:\n  g: {{}}\n")),
            ("b.yaml", "account: acme\ngroups:\n  g: {}\n")
        ]),
        vec!["b.yaml:3:3: group g of account acme is declared twice: here and at a.yaml:6:3"]
    );
}

#[test]
fn references_must_name_users_and_groups_of_the_same_account() {
    let text = format!(
        "{ACME}groups:\n  analysts:\n    members:\n      zed@acme.com: admin\n      gus@globex.com: member\norganizations:\n  research:\n    products:\n      prod-7: {{access: [nobody@acme.com]}}\nlicenses:\n  lic-1: {{product: p, assignee: nobody@acme.com}}\nassets:\n  file/f-1: {{owner: group:nope}}\n  file/f-2: {{owner: user:nobody@acme.com}}\nreassign:\n  - from: user:gone@acme.com\n    to: group:nope\n"
    );
    let globex =
        "account: globex\ndomains: [globex.com]\nusers:\n  gus@globex.com: {role: owner}\n";
    assert_eq!(
        check(&[("a.yaml", &text), ("g.yaml", globex)]),
        vec![
            "a.yaml:8:7: group analysts: member zed@acme.com is not a user of account acme; declare it under users:",
            "a.yaml:9:7: group analysts: member gus@globex.com is not a user of account acme (it is a user of account globex)",
            "a.yaml:13:7: product prod-7: access user nobody@acme.com is not a user of account acme; declare it under users:",
            "a.yaml:15:3: license lic-1: assignee nobody@acme.com is not a user of account acme (nor of any other): a license is not left assigned to a removed user; reassign it to a user of acme, or leave assignee out to free the seat",
            "a.yaml:17:3: asset file/f-1: owner group:nope is not a group of account acme; declare it under groups:",
            "a.yaml:18:3: asset file/f-2: owner user:nobody@acme.com is not a user of account acme",
            "a.yaml:21:5: reassign rule 1 of account acme: to group:nope is not a group of account acme; declare it under groups:",
        ]
    );
}

#[test]
fn header_references_must_name_declared_accounts_and_hubs_do_not_chain() {
    let hq = "account: hq\ndomains: [acme.com]\nhub: top\nusers:\n  hank@acme.com: {role: owner}\n";
    let top = "account: top\ndomains: [acme.com]\nusers:\n  tom@acme.com: {role: owner}\n";
    let acme = "account: acme\ndomains: [acme.com]\nhub: hq\nconnections: [globex, acme]\nsuccessor: zed@acme.com\nusers:\n  alice@acme.com: {role: owner}\n";
    assert_eq!(
        check(&[("acme.yaml", acme), ("hq.yaml", hq), ("top.yaml", top)]),
        vec![
            "acme.yaml:3:1: account acme: hub hq is itself a satellite of top, and hubs do not chain; make top the hub of acme",
            "acme.yaml:4:1: account acme: connection globex is not a declared account",
            "acme.yaml:4:1: account acme cannot list itself in connections",
            "acme.yaml:5:1: account acme: successor zed@acme.com is not a user of account acme; declare it under users:",
        ]
    );
}

#[test]
fn a_merged_account_has_only_its_header_and_shares_a_domain() {
    let hq = "account: hq\ndomains: [acme.com]\nusers:\n  hank@acme.com: {role: owner}\n";
    let ok = "account: eu\ndomains: [acme.com, acme.eu]\nmerged_into: hq\n";
    let desired = desired_of(&[("eu.yaml", ok), ("hq.yaml", hq)]).unwrap();
    assert_eq!(desired.accounts["eu"].owner, None);
    assert_eq!(desired.accounts["eu"].merged_into.as_deref(), Some("hq"));

    let eu = "account: eu\ndomains: [acme.eu]\nmerged_into: hq\nusers:\n  erin@acme.eu: {role: owner}\n---\naccount: eu\ngroups:\n  g: {}\n";
    assert_eq!(
        check(&[("eu.yaml", eu), ("hq.yaml", hq)]),
        vec![
            "eu.yaml:3:1: account eu cannot be merged into hq: they share no domain (eu has acme.eu; hq has acme.com); add a common domain to both",
            "eu.yaml:4:1: account eu is merged into hq: it declares no users; declare them in hq",
            "eu.yaml:7:1: account eu is merged into hq: its header must be its only fragment; remove this fragment (declare its objects in hq)",
        ]
    );
    let chained = "account: eu\ndomains: [acme.com]\nmerged_into: us\n---\naccount: us\ndomains: [acme.com]\nmerged_into: hq\n---\naccount: x\ndomains: [acme.com]\nmerged_into: nowhere\n";
    assert_eq!(
        check(&[("m.yaml", chained), ("hq.yaml", hq)]),
        vec![
            "m.yaml:3:1: account eu cannot be merged into us, which is itself merged into hq; merge it into hq",
            "m.yaml:11:1: account x: merged_into nowhere is not a declared account",
        ]
    );
}

#[test]
fn a_broken_document_hides_what_its_account_seems_to_miss() {
    // The owner may be in the broken document: only the syntax error shows,
    // while another account's problems are still reported.
    let broken = "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner\n";
    let other = "account: globex\ndomains: [globex.com]\n";
    assert_eq!(
        check(&[("a.yaml", broken), ("g.yaml", other)]),
        vec![
            "a.yaml:5:1: did not find expected ',' or '}', while parsing a flow mapping at line 4 column 19",
            "g.yaml:1:1: account globex has no owner: give exactly one of its users role: owner",
        ]
    );
}

#[test]
fn diagnostics_are_deterministic_and_sorted() {
    let files = [
        ("b.yaml", "account: acme\nusers:\n  bob@acme.com: {role: owner}\n"),
        ("a.yaml", "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n  zed@acme.com: {role: owner}\n"),
    ];
    let first = check(&files);
    assert_eq!(first, check(&files));
    assert_eq!(
        first,
        vec![
            "a.yaml:5:3: account acme has two owners, zed@acme.com here and alice@acme.com at a.yaml:4:3: an account has exactly one owner; give the others another role",
            "b.yaml:3:3: account acme has two owners, bob@acme.com here and alice@acme.com at a.yaml:4:3: an account has exactly one owner; give the others another role",
        ]
    );
}

#[test]
fn read_tree_skips_hidden_files_and_editor_leftovers_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("teams/b")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    for name in [
        "z.yaml",
        "a.yml",
        "teams/b/c.yaml",
        "teams/a.yaml",
        ".git/x.yaml",
        ".#a.yaml",
        "a.yaml~",
        "a.yaml.swp",
        "b.tmp",
        "notes.txt",
    ] {
        std::fs::write(root.join(name), "account: acme\n").unwrap();
    }
    let (files, diagnostics) = read_tree(root);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["a.yml", "teams/a.yaml", "teams/b/c.yaml", "z.yaml"]
    );
}

#[test]
fn read_tree_refuses_large_and_non_utf8_files_and_a_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let big = std::fs::File::create(root.join("big.yaml")).unwrap();
    big.set_len(17 * 1024 * 1024).unwrap();
    std::fs::write(root.join("latin1.yaml"), b"account: acme\nname: caf\xe9\n").unwrap();
    std::fs::write(root.join("ok.yaml"), "account: acme\n").unwrap();
    let started = Instant::now();
    let (files, diagnostics) = read_tree(root);
    assert!(started.elapsed() < StdDuration::from_secs(1));
    assert_eq!(files.len(), 1);
    let rendered: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        rendered,
        vec![
            "big.yaml: file is 17.0 MiB, over the 16 MiB limit for a spec file: split it into several files",
            "latin1.yaml:2:10: file is not valid UTF-8: save it as UTF-8",
        ]
    );
    let missing = root.join("nope");
    let (files, diagnostics) = read_tree(&missing);
    assert!(files.is_empty());
    assert_eq!(diagnostics.len(), 1);
    assert!(
        diagnostics[0]
            .message
            .starts_with("cannot read the specs directory"),
        "{diagnostics:?}"
    );
    // load reports them, and nothing else.
    let errors = load(root).unwrap_err();
    assert_eq!(errors.len(), 2);
}

fn within_a_second(text: &str) -> Vec<String> {
    let started = Instant::now();
    let result = check(&[("h.yaml", text)]);
    assert!(
        started.elapsed() < StdDuration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    result
}

#[test]
fn an_alias_bomb_is_refused_quickly() {
    let mut text = String::from("account: acme\ndomains: [acme.com]\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        let list = [previous.as_str(); 10].join(", ");
        text.push_str(&format!("x{level}: &a{level} [{list}]\n"));
    }
    let errors = within_a_second(&text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "h.yaml:3:5: YAML anchors and aliases (&name, *name) are not accepted in specs"
        ),
        "{errors:?}"
    );

    // In a place that accepts a list, it is refused before it is parsed.
    let bomb =
        "account: acme\ndomains: &b [&c [&d [a.com, a.com], *d], *c]\nconnections: [*b, *b, *b]\n";
    let errors = within_a_second(bomb);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("h.yaml:2:10: YAML anchors and aliases"),
        "{errors:?}"
    );
}

#[test]
fn an_alias_bomb_in_an_ignored_place_hits_the_repetition_limit() {
    // Every key of a fragment is typed, so serde_yaml never expands a bomb;
    // its repetition limit is the safety net. Exercise it directly.
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..9 {
        let previous = format!("*a{}", level - 1);
        let list = [previous.as_str(); 10].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{list}]\n"));
    }
    let started = Instant::now();
    let value: Result<std::collections::BTreeMap<String, Vec<serde_json::Value>>, _> =
        serde_yaml::from_str(&text);
    assert!(value
        .unwrap_err()
        .to_string()
        .contains("repetition limit exceeded"));
    assert!(started.elapsed() < StdDuration::from_secs(1));
}

#[test]
fn deep_nesting_is_refused_quickly() {
    let deep_flow = format!(
        "account: acme\ndomains: {}{}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    assert_eq!(
        within_a_second(&deep_flow),
        vec![format!(
            "h.yaml:2:{}: nesting deeper than 64 levels: refusing this file",
            10 + 64
        )]
    );
    let mut deep_block = String::from("account: acme\nusers:\n");
    for level in 0..200 {
        deep_block.push_str(&format!("{}k{level}:\n", " ".repeat(2 * (level + 1))));
    }
    let errors = within_a_second(&deep_block);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("h.yaml:3:3: users: bad email `k0`"),
        "{errors:?}"
    );
    // A huge flat flow list is fine memory-wise up to the file limit; a deep
    // one never reaches libyaml.
    let huge = format!("account: acme\ndomains: {}\n", "[".repeat(8 * 1024 * 1024));
    let started = Instant::now();
    let errors = check(&[("h.yaml", &huge)]);
    assert!(started.elapsed() < StdDuration::from_secs(1));
    assert_eq!(errors.len(), 1);
}

#[test]
fn the_schema_is_draft_07_and_closed() {
    let schema = fragment_schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["account"]));
    assert!(schema["properties"]["users"].is_object());
    assert!(schema["properties"].get("path").is_none());
    let text = schema.to_string();
    assert!(text.contains("billing-admin"));
}

#[test]
#[ignore = "benchmark: cargo test --release --lib spec::tests::loads_a_large_tree -- --ignored --nocapture"]
fn loads_a_large_tree() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = 0;
    for account in 0..1000 {
        let mut text = format!("account: a{account}\ndomains: [a{account}.com]\nusers:\n  owner@a{account}.com: {{role: owner, name: The Owner}}\n");
        for user in 0..100 {
            text.push_str(&format!("  user{user}@a{account}.com: {{role: member, name: User Number {user} of the account}}\n"));
        }
        text.push_str("groups:\n  everyone:\n    members:\n");
        for user in 0..100 {
            text.push_str(&format!("      user{user}@a{account}.com: member\n"));
        }
        bytes += text.len();
        std::fs::write(dir.path().join(format!("a{account}.yaml")), text).unwrap();
    }
    let started = Instant::now();
    let (files, _) = read_tree(dir.path());
    let read = started.elapsed();
    let mut fragments = Vec::new();
    for file in &files {
        let lines: Vec<&str> = file.text.split('\n').collect();
        let _ = keys::index(
            &lines,
            &keys::Segment {
                start: 0,
                end: lines.len(),
            },
        );
    }
    let scanned = started.elapsed();
    for file in &files {
        fragments.extend(parse_file(file).0);
    }
    let parsed = started.elapsed();
    let desired = build_desired(&fragments).unwrap();
    let built = started.elapsed();
    println!(
        "{bytes} bytes, {} users: read {read:?}, key scan {:?}, parse {:?}, build {:?}",
        desired.users.len(),
        scanned - read,
        parsed - scanned,
        built - parsed
    );
    let started = Instant::now();
    load(dir.path()).unwrap();
    println!("load: {:?}", started.elapsed());
}

#[test]
fn windows_line_endings_keep_lines_and_columns() {
    let text = "account: acme\r\ndomains: [acme.com]\r\nusers:\r\n  alice@acme.com: {role: owner}\r\n  bob@acme.com: {}\r\n---\r\naccount: acme\r\nusers:\r\n  BOB@acme.com: {}\r\n";
    assert_eq!(
        check(&[("a.yaml", text)]),
        vec!["a.yaml:9:3: user bob@acme.com is declared twice: here and at a.yaml:5:3"]
    );
}

/// Everything a `Desired` holds, with its origins sorted, as text.
fn describe(desired: &Desired) -> String {
    let mut rest = desired.clone();
    let origins: std::collections::BTreeMap<_, _> =
        std::mem::take(&mut rest.origins).into_iter().collect();
    format!("{rest:?}\n{origins:?}")
}

#[test]
fn a_parallel_load_gives_what_a_one_thread_load_gives() {
    let valid = tempfile::tempdir().unwrap();
    let broken = tempfile::tempdir().unwrap();
    for account in 0..12 {
        let next = (account + 1) % 12;
        let mut text = format!(
            "account: a{account}\ndomains: [a{account}.com]\nconnections: [a{next}]\nusers:\n  owner@a{account}.com: {{role: owner, name: Owner}}\n"
        );
        for user in 0..20 {
            text.push_str(&format!(
                "  u{user}@a{account}.com: {{name: User {user}}}\n"
            ));
        }
        text.push_str(&format!(
            "organizations:\n  org-{account}:\n    products:\n      p-{account}: {{access: [u1@a{account}.com, u2@a{account}.com]}}\nlicenses:\n  l-{account}: {{product: pro, assignee: u3@a{account}.com}}\nassets:\n  dataset/d-{account}: {{owner: \"group:team\"}}\nreassign:\n- from: user:u4@a{account}.com\n  to: group:team\n"
        ));
        // The groups of the next account, in this account's file.
        text.push_str(&format!(
            "---\naccount: a{next}\ngroups:\n  team:\n    members:\n"
        ));
        for user in 0..10 {
            text.push_str(&format!("      u{user}@a{next}.com: member\n"));
        }
        let folder = format!("region-{}", account % 3);
        for dir in [&valid, &broken] {
            std::fs::create_dir_all(dir.path().join(&folder)).unwrap();
            std::fs::write(
                dir.path().join(&folder).join(format!("a{account:02}.yaml")),
                &text,
            )
            .unwrap();
        }
    }
    let bad_files: [(&str, &[u8]); 6] = [
        ("region-0/a00.yaml", b"account: a0\ndomains: [a0.com]\nusers:\n  owner@a0.com: {role: owner}\n  u1@a1.com: {}\n  u2@a0.com: {role: king}\n"),
        ("region-1/a01.yaml", b"account: a1\ndomains: [a1.com\nusers: {}\n"),
        ("region-2/a02.yaml", b"account: a2\ndomains: [a2.com]\ncolour: blue\n"),
        ("region-0/b.yaml", b"account: a4\nusers:\n  u1@a4.com: {}\n  U1@a4.com: {}\n---\naccount: a7\nlicenses:\n  l-7: {product: x, assignee: nobody@a7.com}\n"),
        ("region-1/c.yaml", b"account: a5\nusers:\n  bad\xff@a5.com: {}\n"),
        ("z.yaml", b"account: a9\nusers:\n  u1@a9.com: {}\nassets:\n  dataset/d-9: {owner: user:zed@a9.com}\n"),
    ];
    for (path, bytes) in bad_files {
        std::fs::write(broken.path().join(path), bytes).unwrap();
    }

    let one = load_with_threads(valid.path(), Some(1)).expect("the valid tree loads");
    assert_eq!(one.users.len(), 12 * 21);
    for threads in [2, 3, 8, 64] {
        let many = load_with_threads(valid.path(), Some(threads)).expect("valid");
        assert_eq!(describe(&one), describe(&many), "{threads} threads");
    }
    assert_eq!(describe(&one), describe(&load(valid.path()).unwrap()));
    let (files, read) = read_tree(valid.path());
    assert_eq!(describe(&one), describe(&load_files(&files, read).unwrap()));

    let one = load_with_threads(broken.path(), Some(1)).expect_err("the broken tree fails");
    assert!(one.len() >= 6, "{one:?}");
    for threads in [2, 3, 8, 64] {
        let many = load_with_threads(broken.path(), Some(threads)).expect_err("broken");
        assert_eq!(one, many, "{threads} threads");
    }
    let (files, read) = read_tree(broken.path());
    assert_eq!(one, load_files(&files, read).expect_err("broken"));
}

/// Copies the files directly in `from` into `to` (the corpus layout: one
/// level, a case's files laid over the baseline's).
fn copy_files(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn check_says_what_load_says_on_the_bundled_specs_and_every_corpus_tree() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut trees = vec![root.join("specs"), root.join("tests/corpus/baseline")];
    let corpus = root.join("tests/corpus");
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir() && !path.ends_with("baseline"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "{} corpus cases", cases.len());
    let laid = tempfile::tempdir().unwrap();
    for (n, case) in cases.iter().enumerate() {
        let tree = laid.path().join(n.to_string());
        std::fs::create_dir(&tree).unwrap();
        copy_files(&corpus.join("baseline"), &tree);
        copy_files(case, &tree);
        trees.push(tree);
    }
    let mut valid = 0;
    let mut invalid = 0;
    for tree in &trees {
        for threads in [1, 2] {
            let loaded = load_with_threads(tree, Some(threads));
            let checked = check_with_threads(tree, Some(threads));
            match (loaded, checked) {
                (Ok(desired), Ok(counts)) => {
                    assert_eq!(counts, SpecCounts::of(&desired), "{}", tree.display());
                    valid += 1;
                }
                (Err(loaded), Err(checked)) => {
                    assert_eq!(loaded, checked, "{}", tree.display());
                    invalid += 1;
                }
                (loaded, checked) => panic!(
                    "{}: load {:?}, check {:?}",
                    tree.display(),
                    loaded.map(|d| SpecCounts::of(&d)),
                    checked
                ),
            }
        }
    }
    // Both outcomes were compared, and the bundled specs declare memberships.
    assert!(
        valid >= 4 && invalid >= 80,
        "{valid} valid, {invalid} invalid"
    );
    let bundled = super::check(&root.join("specs")).unwrap();
    assert!(bundled.memberships > 0 && bundled.users > 0, "{bundled:?}");
}
