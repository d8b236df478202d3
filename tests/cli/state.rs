//! Contract §3, `deed state`: show, export, dump and restore round trips, a
//! dump opened read-only, and `state check` finding each kind of broken
//! invariant.

use serde_json::{json, Value};

use super::util::{Workspace, NO_CHANGES};

/// Two connected accounts, then an inventory and a moved user so that the
/// state holds every kind of object, invoices, credits, history and outbox.
const SPECS: &str = "\
account: acme
domains: [acme.com]
invite_ttl: 72h
users:
  alice@acme.com: {role: owner, name: Alice Doe}
  bob@acme.com: {role: admin}
  carol@acme.com: {}
  dave@acme.com: {}
groups:
  analysts:
    members: {bob@acme.com: admin, carol@acme.com: member}
organizations:
  research:
    products:
      prod-7: {name: kDrive 2TB, access: [carol@acme.com, bob@acme.com]}
licenses:
  lic-42: {product: omiq-pro, assignee: carol@acme.com, expires: 2027-03-31}
assets:
  dataset/ds-1: {owner: \"group:analysts\", tags: {original-owner: bob@acme.com}}
---
account: acme-eu
domains: [acme.com, acme.eu]
hub: acme
users:
  erin@acme.eu: {role: owner}
  frank@acme.com: {}
";

const INVENTORY: &str = r#"{"type": "asset", "id": "file/f-9", "account": "acme", "owner": "user:bob@acme.com", "creator": "bob@acme.com", "tags": {"project": "x"}}
{"type": "asset", "id": "proof/p-3", "account": "acme", "owner": "user:bob@acme.com", "versions": ["bob@acme.com", "carol@acme.com"]}
{"type": "asset", "id": "folder/fo-1", "account": "acme-eu", "owner": "user:frank@acme.com"}
{"type": "invoice", "id": "inv-2026-11", "product": "prod-7", "organization": "research"}
{"type": "credits", "account": "acme", "balance": 5000}
"#;

/// A workspace whose state holds accounts, users, groups, memberships, an
/// organization, a product, a license, assets, a grant, an invoice, credits,
/// history and notifications, and matches its specs.
fn filled() -> Workspace {
    let workspace = Workspace::with_specs(&[("all.yaml", SPECS)]);
    workspace.apply();
    let inventory = workspace.file("inventory.jsonl", INVENTORY);
    workspace
        .deed(&["inventory", "import", inventory.to_str().unwrap()])
        .ok();
    // frank moves to acme: his folder stays in acme-eu, he keeps read access.
    workspace.write(
        "all.yaml",
        &SPECS
            .replace(
                "  dave@acme.com: {}\n",
                "  dave@acme.com: {}\n  frank@acme.com: {}\n",
            )
            .replace(
                "  erin@acme.eu: {role: owner}\n  frank@acme.com: {}\n",
                "  erin@acme.eu: {role: owner}\n",
            ),
    );
    workspace.apply();
    workspace
        .deed(&["invitations", "accept", "bob@acme.com"])
        .ok();
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
    assert_eq!(
        workspace.show("folder/fo-1:frank@acme.com")["level"],
        "read"
    );
    workspace
}

#[test]
fn state_show_prints_an_object_with_the_names_of_the_specs() {
    let workspace = filled();
    assert_eq!(
        workspace.show("acme"),
        json!({"owner": "alice@acme.com", "domains": ["acme.com"], "hub": null, "connections": [],
               "credits": 5000, "merged_into": null, "invite_ttl": "72h", "successor": null})
    );
    assert_eq!(
        workspace.show("Bob@Acme.com"),
        json!({"account": "acme", "role": "admin", "name": null, "status": "active", "invitation_expires": null})
    );
    assert_eq!(
        workspace.show("carol@acme.com"),
        json!({"account": "acme", "role": "member", "name": null, "status": "invited",
               "invitation_expires": "2026-11-26T12:00:00Z"})
    );
    assert_eq!(
        workspace.show("prod-7"),
        json!({"organization": "research", "name": "kDrive 2TB", "access": ["bob@acme.com", "carol@acme.com"],
               "invoices": ["inv-2026-11"]})
    );
    assert_eq!(workspace.show("research"), json!({"account": "acme"}));
    assert_eq!(
        workspace.show("proof/p-3"),
        json!({"account": "acme", "owner": "user:bob@acme.com", "creator": "bob@acme.com", "folder": null,
               "versions": ["bob@acme.com", "carol@acme.com"], "tags": {}})
    );
    let yaml = workspace.deed(&["state", "show", "research"]).ok();
    assert_eq!(yaml.stdout, "account: acme\n");
    let run = workspace.deed(&["state", "show", "nothing-here"]).fails();
    assert!(run.stderr.contains("nothing-here"), "{run}");
}

#[test]
fn exported_specs_plan_no_changes_against_the_state() {
    let workspace = filled();
    let exported = workspace.root().join("exported");
    workspace
        .deed(&["state", "export", "--out", exported.to_str().unwrap()])
        .ok();
    let run = workspace
        .deed_with(&exported, &workspace.state(), &["validate"])
        .ok();
    assert!(run.stdout.contains("2 accounts"), "{run}");
    let run = workspace
        .deed_with(&exported, &workspace.state(), &["plan"])
        .ok();
    assert_eq!(run.stdout, format!("{NO_CHANGES}\n"), "{run}");
    let dump = workspace.dump_bytes();
    workspace
        .deed_with(&exported, &workspace.state(), &["apply"])
        .ok();
    assert_eq!(
        workspace.dump_bytes(),
        dump,
        "applying the exported specs wrote something"
    );
}

#[test]
fn a_dump_restored_into_an_empty_state_shows_and_dumps_the_same() {
    let workspace = filled();
    let bytes = workspace.dump_bytes();
    let dump = workspace.file("backup.jsonl", &bytes);
    let restored = workspace.root().join("restored");
    workspace
        .deed_on(&restored, &["state", "restore", dump.to_str().unwrap()])
        .ok();
    assert_eq!(
        workspace.show_all(&restored),
        workspace.show_all(&workspace.state())
    );
    assert_eq!(
        String::from_utf8(workspace.dump_bytes_of(&restored)).unwrap(),
        String::from_utf8(bytes.clone()).unwrap()
    );
    // History and outbox came along.
    assert_eq!(
        workspace
            .deed_on(&restored, &["history", "--format", "json"])
            .ok()
            .stdout,
        workspace.deed(&["history", "--format", "json"]).ok().stdout
    );
    assert_eq!(
        workspace.deed_on(&restored, &["outbox"]).ok().stdout,
        workspace.deed(&["outbox"]).ok().stdout
    );
    // `state dump -` writes the same bytes to standard output.
    let stdout = workspace.deed(&["state", "dump", "-"]).ok().stdout;
    assert_eq!(stdout.as_bytes(), &bytes[..]);
    // The restored state is a working state.
    assert_eq!(
        workspace.deed_on(&restored, &["plan"]).ok().stdout.trim(),
        NO_CHANGES
    );
    workspace.deed_on(&restored, &["state", "check"]).ok();
}

#[test]
fn restoring_into_a_state_that_is_not_empty_is_refused() {
    let workspace = filled();
    let bytes = workspace.dump_bytes();
    let dump = workspace.file("backup.jsonl", &bytes);
    let run = workspace
        .deed(&["state", "restore", dump.to_str().unwrap()])
        .fails();
    assert!(run.stderr.contains("not empty"), "{run}");
    assert_eq!(workspace.dump_bytes(), bytes);
}

#[test]
fn a_dump_file_as_state_is_planned_against_and_never_written() {
    let workspace = filled();
    let bytes = workspace.dump_bytes();
    let dump = workspace.file("backup.jsonl", &bytes);
    workspace.deed_on(&dump, &["validate"]).ok();
    assert_eq!(
        workspace.deed_on(&dump, &["plan"]).ok().stdout.trim(),
        NO_CHANGES
    );
    assert_eq!(
        workspace.show_all(&dump),
        workspace.show_all(&workspace.state())
    );
    workspace.deed_on(&dump, &["state", "check"]).ok();
    workspace.write(
        "extra.yaml",
        "account: initech\ndomains: [initech.com]\nusers:\n  bill@initech.com: {role: owner}\n",
    );
    let plan = workspace
        .deed_on(&dump, &["plan", "--format", "json"])
        .ok()
        .json();
    assert_eq!(plan["summary"]["create"], 2);
    let run = workspace.deed_on(&dump, &["apply"]).fails();
    assert!(run.stderr.contains("read-only"), "{run}");
    assert_eq!(std::fs::read(&dump).unwrap(), bytes);
}

/// Takes a dump of [`filled`], lets `edit` change its records (parsed JSON
/// lines), and runs `state check` on the edited dump, which must fail with
/// a violation containing each of `expected`.
#[track_caller]
fn check_broken(edit: impl FnOnce(&mut Vec<Value>), expected: &[&str]) {
    let workspace = filled();
    let text = String::from_utf8(workspace.dump_bytes()).unwrap();
    let mut records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    edit(&mut records);
    let edited: String = records.iter().map(|record| format!("{record}\n")).collect();
    let dump = workspace.file("broken.jsonl", edited);

    // The dump as a read-only state...
    let run = workspace.deed_on(&dump, &["state", "check"]).fails();
    for needle in expected {
        assert!(
            run.stderr
                .lines()
                .any(|line| line.starts_with("violation: ") && line.contains(needle)),
            "no violation naming `{needle}`:\n{run}"
        );
    }
    // ...and restored into a fresh sled state.
    let fresh = workspace.root().join("fresh");
    workspace
        .deed_on(&fresh, &["state", "restore", dump.to_str().unwrap()])
        .ok();
    let run = workspace.deed_on(&fresh, &["state", "check"]).fails();
    for needle in expected {
        assert!(
            run.stderr.contains(needle),
            "no violation naming `{needle}`:\n{run}"
        );
    }
}

/// The value of the object record `kind`/`id` of a dump.
fn object<'a>(records: &'a mut [Value], kind: &str, id: &str) -> &'a mut Value {
    records
        .iter_mut()
        .find(|record| record["kind"] == kind && record["id"] == id)
        .map(|record| &mut record["value"])
        .unwrap_or_else(|| panic!("no {kind} {id} in the dump"))
}

#[test]
fn the_filled_state_passes_the_check() {
    let workspace = filled();
    let run = workspace.deed(&["state", "check"]).ok();
    assert!(run.stdout.starts_with("The state is consistent"), "{run}");
}

#[test]
fn state_check_finds_an_account_owner_that_does_not_exist() {
    check_broken(
        |records| object(records, "account", "acme")["owner"] = json!("zed@acme.com"),
        &["account acme", "zed@acme.com"],
    );
}

#[test]
fn state_check_finds_an_account_with_two_owners() {
    check_broken(
        |records| object(records, "user", "bob@acme.com")["role"] = json!("owner"),
        &["account acme", "bob@acme.com"],
    );
}

#[test]
fn state_check_finds_a_membership_of_a_missing_user() {
    check_broken(
        |records| {
            object(records, "membership", "acme/analysts/carol@acme.com")["user"] =
                json!("zed@acme.com")
        },
        &["membership acme/analysts/carol@acme.com", "zed@acme.com"],
    );
}

#[test]
fn state_check_finds_a_license_assignee_that_does_not_exist() {
    check_broken(
        |records| object(records, "license", "lic-42")["assignee"] = json!("zed@acme.com"),
        &["license lic-42", "zed@acme.com"],
    );
}

#[test]
fn state_check_finds_an_asset_owner_that_does_not_exist() {
    check_broken(
        |records| object(records, "asset", "file/f-9")["owner"] = json!("user:zed@acme.com"),
        &["asset file/f-9", "user:zed@acme.com"],
    );
    check_broken(
        |records| object(records, "asset", "dataset/ds-1")["owner"] = json!("group:ghosts"),
        &["asset dataset/ds-1", "group:ghosts"],
    );
}

#[test]
fn state_check_finds_an_object_in_a_missing_account() {
    check_broken(
        |records| object(records, "organization", "research")["account"] = json!("nowhere"),
        &["organization research", "nowhere"],
    );
    check_broken(
        |records| object(records, "user", "carol@acme.com")["account"] = json!("nowhere"),
        &["user carol@acme.com", "nowhere"],
    );
}

#[test]
fn state_check_finds_a_grant_to_a_missing_user() {
    check_broken(
        |records| {
            object(records, "grant", "folder/fo-1:frank@acme.com")["user"] = json!("zed@acme.com")
        },
        &["grant folder/fo-1:frank@acme.com", "zed@acme.com"],
    );
}

#[test]
fn state_check_finds_a_product_access_of_a_missing_user() {
    check_broken(
        |records| object(records, "product", "prod-7")["access"] = json!(["zed@acme.com"]),
        &["product prod-7", "zed@acme.com"],
    );
}

#[test]
fn state_check_names_every_violation_at_once() {
    check_broken(
        |records| {
            object(records, "license", "lic-42")["assignee"] = json!("zed@acme.com");
            object(records, "organization", "research")["account"] = json!("nowhere");
        },
        &["license lic-42", "organization research"],
    );
}
