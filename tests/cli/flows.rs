//! The ownership-transfer rules of contract §2, flow by flow, end to end:
//! plan text, plan JSON, apply, and the state afterwards. Each rule has a
//! test that it works and one that it refuses what it must refuse.

use serde_json::{json, Value};

use super::util::{actions, change_of, owned, Workspace, NO_CHANGES};

/// A hub with two satellites, and an unconnected account.
const HUB: &str =
    "account: acme-hq\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n";
const GLOBEX: &str =
    "account: globex\ndomains: [globex.com]\nusers:\n  gina@globex.com: {role: owner}\n";

fn eu(extra: &str) -> String {
    format!(
        "account: acme-eu\ndomains: [acme.com]\nhub: acme-hq\nusers:\n  erin@acme.com: {{role: owner}}\n{extra}"
    )
}

fn us(extra: &str) -> String {
    format!(
        "account: acme-us\ndomains: [acme.com]\nhub: acme-hq\nusers:\n  sam@acme.com: {{role: owner}}\n{extra}"
    )
}

/// `deed apply --allow-removals`, which must succeed.
#[track_caller]
fn apply(workspace: &Workspace) {
    workspace.deed(&["apply", "--allow-removals"]).ok();
}

#[track_caller]
fn accept(workspace: &Workspace, email: &str) {
    workspace.deed(&["invitations", "accept", email]).ok();
}

#[track_caller]
fn import(workspace: &Workspace, records: &str) {
    let file = workspace.file("inventory.jsonl", records);
    workspace
        .deed(&["inventory", "import", file.to_str().expect("utf-8")])
        .ok();
}

#[track_caller]
fn plan_text(workspace: &Workspace) -> String {
    workspace.deed(&["plan", "--allow-removals"]).ok().stdout
}

#[track_caller]
fn plan_json(workspace: &Workspace) -> Value {
    workspace
        .deed(&["plan", "--format", "json", "--allow-removals"])
        .ok()
        .json()
}

/// Applies, then checks that the plan is empty and the state consistent.
#[track_caller]
fn converge(workspace: &Workspace) {
    apply(workspace);
    let text = plan_text(workspace);
    assert!(text.ends_with(&format!("{NO_CHANGES}\n")), "{text}");
    workspace.deed(&["state", "check"]).ok();
}

/// The errors of a plan that must fail.
#[track_caller]
fn plan_errors(workspace: &Workspace) -> String {
    workspace.deed(&["plan", "--allow-removals"]).fails().stderr
}

fn asset(id: &str, account: &str, owner: &str) -> String {
    format!("{{\"id\": \"{id}\", \"account\": \"{account}\", \"owner\": \"{owner}\"}}\n")
}

fn drain(workspace: &Workspace) -> Vec<Value> {
    workspace
        .deed(&["outbox", "--drain"])
        .ok()
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

// --- 2.5 reassign rules and pins -------------------------------------------

const ACME: &str = "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n  bob@acme.com: {role: admin}\n  dave@acme.com: {}\ngroups:\n  analysts:\n    members: {bob@acme.com: admin}\n";
const RULE: &str = "reassign:\n  - from: user:dave@acme.com\n    to: group:analysts\n    kinds: [dataset, workflow]\n    tag: {original-owner: dave@acme.com}\n";

#[test]
fn a_reassign_rule_transfers_matching_assets_adds_its_tags_and_catches_later_imports() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    apply(&workspace);
    let mut records = String::new();
    for n in 0..6 {
        records.push_str(&asset(
            &format!("dataset/ds-{n}"),
            "acme",
            "user:dave@acme.com",
        ));
    }
    records.push_str(&asset("workflow/wf-1", "acme", "user:dave@acme.com"));
    import(&workspace, &records);
    workspace.write("acme.yaml", &format!("{ACME}{RULE}"));
    let text = plan_text(&workspace);
    assert!(
        text.contains("> 7 assets")
            && text.contains("user:dave@acme.com -> group:analysts, tags: {} -> {original-owner: dave@acme.com} (reassign rule 1 of account acme)"),
        "{text}"
    );
    let plan = plan_json(&workspace);
    assert_eq!(plan["summary"]["transfer"], 7, "{plan:#}");
    let change = change_of(&plan, "workflow/wf-1");
    assert_eq!(change["action"], "transfer");
    assert_eq!(
        change["before"],
        json!({"owner": "user:dave@acme.com", "tags": {}})
    );
    assert_eq!(
        change["after"],
        json!({"owner": "group:analysts", "tags": {"original-owner": "dave@acme.com"}})
    );
    converge(&workspace);
    // An asset created later is caught by the next reconcile.
    import(
        &workspace,
        &asset("dataset/ds-late", "acme", "user:dave@acme.com"),
    );
    let plan = plan_json(&workspace);
    assert_eq!(
        actions(&plan),
        owned(&[("transfer", "asset", "dataset/ds-late")])
    );
    converge(&workspace);
    assert_eq!(workspace.show("dataset/ds-late")["owner"], "group:analysts");
}

#[test]
fn a_reassign_rule_leaves_other_kinds_other_owners_and_pinned_assets_alone() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    apply(&workspace);
    import(
        &workspace,
        &[
            asset("view/v-1", "acme", "user:dave@acme.com"),
            asset("dataset/bob-1", "acme", "user:bob@acme.com"),
            asset("dataset/pinned", "acme", "user:dave@acme.com"),
        ]
        .concat(),
    );
    workspace.write(
        "acme.yaml",
        &format!("{ACME}{RULE}assets:\n  dataset/pinned: {{owner: user:alice@acme.com, tags: {{keep: \"yes\"}}}}\n"),
    );
    let plan = plan_json(&workspace);
    assert_eq!(
        actions(&plan),
        owned(&[("transfer", "asset", "dataset/pinned")]),
        "{plan:#}"
    );
    let change = change_of(&plan, "dataset/pinned");
    assert_eq!(
        change["after"],
        json!({"owner": "user:alice@acme.com", "tags": {"keep": "yes"}})
    );
    assert_eq!(change["reason"], "pinned in account acme");
    converge(&workspace);
}

#[test]
fn a_pin_creates_a_missing_asset_and_removing_it_deletes_nothing() {
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        &format!("{ACME}assets:\n  dataset/ds-1: {{owner: group:analysts}}\n"),
    )]);
    converge(&workspace);
    assert_eq!(workspace.show("dataset/ds-1")["owner"], "group:analysts");
    workspace.write("acme.yaml", ACME);
    let text = plan_text(&workspace);
    assert!(text.ends_with(&format!("{NO_CHANGES}\n")), "{text}");
    // Nor does removing its owner: the asset passes on.
    workspace.write(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n  bob@acme.com: {role: admin}\n  dave@acme.com: {}\n",
    );
    let plan = plan_json(&workspace);
    let change = change_of(&plan, "dataset/ds-1");
    assert_eq!(change["action"], "transfer");
    assert_eq!(change["after"], json!({"owner": "user:alice@acme.com"}));
    converge(&workspace);
    assert_eq!(workspace.show("dataset/ds-1")["account"], "acme");
}

// --- 2.6 licenses -------------------------------------------------------------

#[test]
fn a_new_assignee_is_a_transfer_that_keeps_the_term() {
    let license =
        "licenses:\n  lic-42: {product: omiq-pro, assignee: bob@acme.com, expires: 2027-03-31}\n";
    let workspace = Workspace::with_specs(&[("acme.yaml", &format!("{ACME}{license}"))]);
    apply(&workspace);
    workspace.write(
        "acme.yaml",
        &format!("{ACME}{}", license.replace("bob@", "dave@")),
    );
    let text = plan_text(&workspace);
    assert!(
        text.contains("> license lic-42")
            && text.contains("assignee: bob@acme.com -> dave@acme.com (term to 2027-03-31 kept)"),
        "{text}"
    );
    let plan = plan_json(&workspace);
    let change = change_of(&plan, "lic-42");
    assert_eq!(change["action"], "transfer");
    assert_eq!(change["after"], json!({"assignee": "dave@acme.com"}));
    converge(&workspace);
    assert_eq!(workspace.show("lic-42")["expires"], "2027-03-31");
    let notes = drain(&workspace);
    assert!(notes
        .iter()
        .any(|n| n["to"] == "dave@acme.com" && n["object"] == "lic-42"));
    assert!(notes
        .iter()
        .any(|n| n["to"] == "bob@acme.com" && n["object"] == "lic-42"));
}

#[test]
fn a_license_left_assigned_to_a_user_who_moves_is_an_error_naming_the_fix() {
    let license = "licenses:\n  lic-42: {product: omiq-pro, assignee: dave@acme.com}\n";
    let workspace = Workspace::with_specs(&[
        ("hq.yaml", HUB),
        ("eu.yaml", &eu(&format!("  dave@acme.com: {{}}\n{license}"))),
        ("us.yaml", &us("")),
    ]);
    apply(&workspace);
    workspace.write("eu.yaml", &eu(license));
    workspace.write("us.yaml", &us("  dave@acme.com: {}\n"));
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains("license lic-42: assignee dave@acme.com is not a user of account acme-eu (it is a user of account acme-us)")
            && stderr.contains("reassign it to a user of acme-eu, or move it with them (declare lic-42 in acme-us"),
        "{stderr}"
    );
}

#[test]
fn a_license_left_assigned_to_a_removed_user_is_an_error() {
    let license = "licenses:\n  lic-42: {product: omiq-pro, assignee: dave@acme.com}\n";
    let workspace = Workspace::with_specs(&[("acme.yaml", &format!("{ACME}{license}"))]);
    apply(&workspace);
    workspace.write(
        "acme.yaml",
        &format!("{}{license}", ACME.replace("  dave@acme.com: {}\n", "")),
    );
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains("license lic-42: assignee dave@acme.com is not a user of account acme (nor of any other)")
            && stderr.contains("leave assignee out"),
        "{stderr}"
    );
}

#[test]
fn moving_a_license_to_a_connected_account_is_a_transfer() {
    let license = "licenses:\n  lic-9: {product: omiq-pro, expires: 2027-01-31}\n";
    let workspace = Workspace::with_specs(&[
        ("hq.yaml", HUB),
        ("eu.yaml", &eu(license)),
        ("us.yaml", &us("")),
    ]);
    apply(&workspace);
    workspace.write("eu.yaml", &eu(""));
    workspace.write("us.yaml", &us(license));
    let plan = plan_json(&workspace);
    let change = change_of(&plan, "lic-9");
    assert_eq!(change["action"], "transfer");
    assert_eq!(change["before"], json!({"account": "acme-eu"}));
    assert_eq!(change["after"], json!({"account": "acme-us"}));
    assert_eq!(change["reason"], "both satellites of acme-hq");
    converge(&workspace);
}

#[test]
fn moving_a_license_to_an_unconnected_account_is_an_error() {
    let license = "licenses:\n  lic-9: {product: omiq-pro}\n";
    let workspace = Workspace::with_specs(&[
        ("hq.yaml", HUB),
        ("eu.yaml", &eu(license)),
        ("globex.yaml", GLOBEX),
    ]);
    apply(&workspace);
    workspace.write("eu.yaml", &eu(""));
    workspace.write("globex.yaml", &format!("{GLOBEX}{license}"));
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains(
            "license lic-9 cannot move from acme-eu to globex: the accounts are not connected"
        ),
        "{stderr}"
    );
}

// --- 2.2 account ownership ------------------------------------------------------

const OWNED: &str = "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n  bob@acme.com: {role: admin}\n";

#[test]
fn ownership_passes_to_an_active_user_and_both_parties_are_notified() {
    let workspace = Workspace::with_specs(&[("acme.yaml", OWNED)]);
    apply(&workspace);
    accept(&workspace, "bob@acme.com");
    drain(&workspace);
    workspace.write(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: admin}\n  bob@acme.com: {role: owner}\n",
    );
    let plan = plan_json(&workspace);
    let change = change_of(&plan, "acme");
    assert_eq!(change["action"], "transfer");
    assert_eq!(change["before"], json!({"owner": "alice@acme.com"}));
    assert_eq!(change["after"], json!({"owner": "bob@acme.com"}));
    assert_eq!(plan["pending"], json!([]));
    converge(&workspace);
    assert_eq!(workspace.show("alice@acme.com")["role"], "admin");
    assert_eq!(workspace.show("acme")["owner"], "bob@acme.com");
    let notes = drain(&workspace);
    let mut to: Vec<&str> = notes
        .iter()
        .filter(|n| n["event"] == "transfer")
        .map(|n| n["to"].as_str().unwrap())
        .collect();
    to.sort();
    assert_eq!(to, vec!["alice@acme.com", "bob@acme.com"], "{notes:#?}");
}

#[test]
fn ownership_cannot_pass_to_an_address_outside_the_account_domains() {
    let workspace = Workspace::with_specs(&[("acme.yaml", OWNED)]);
    apply(&workspace);
    workspace.write(
        "acme.yaml",
        "account: acme\ndomains: [acme.com, acme.de]\nusers:\n  alice@acme.com: {role: admin}\n  bob@acme.com: {}\n  frank@gmail.com: {role: owner}\n",
    );
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains("account acme: ownership cannot pass to frank@gmail.com")
            && stderr.contains("gmail.com is not (acme.com, acme.de)")
            && stderr.contains("or add gmail.com to domains"),
        "{stderr}"
    );
}

#[test]
fn ownership_passing_to_an_invited_user_is_pending_until_the_invitation_is_accepted() {
    let workspace = Workspace::with_specs(&[("acme.yaml", OWNED)]);
    apply(&workspace);
    accept(&workspace, "alice@acme.com");
    // frank is new (invited); alice leaves the specs altogether.
    workspace.write(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\nusers:\n  bob@acme.com: {role: admin}\n  frank@acme.com: {role: owner}\n",
    );
    let text = plan_text(&workspace);
    assert!(
        text.contains("+ user frank@acme.com")
            && text.contains("invited as member")
            && text.contains(
                "owner -> frank@acme.com waits for frank@acme.com to accept the invitation"
            )
            && text.contains("removal waits for the ownership transfer of account acme"),
        "{text}"
    );
    let plan = plan_json(&workspace);
    assert_eq!(
        actions(&plan),
        owned(&[("create", "user", "frank@acme.com")])
    );
    assert_eq!(plan["pending"].as_array().unwrap().len(), 2, "{plan:#}");
    apply(&workspace);
    assert_eq!(workspace.show("acme")["owner"], "alice@acme.com");
    assert_eq!(workspace.show("alice@acme.com")["role"], "owner");
    workspace.deed(&["state", "check"]).ok();
    // A later reconcile completes it.
    accept(&workspace, "frank@acme.com");
    let plan = plan_json(&workspace);
    assert_eq!(
        actions(&plan),
        owned(&[
            ("transfer", "account", "acme"),
            ("update", "user", "frank@acme.com"),
            ("remove", "user", "alice@acme.com"),
        ]),
        "{plan:#}"
    );
    converge(&workspace);
    assert_eq!(workspace.show("acme")["owner"], "frank@acme.com");
}

// --- 2.6 merges -------------------------------------------------------------------

const MERGE_BEFORE: &str = "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n---\naccount: acme-old\ndomains: [acme.com, old.acme.com]\nusers:\n  olga@acme.com: {role: owner}\n  oscar@old.acme.com: {}\norganizations:\n  research:\n    products:\n      prod-7: {name: kDrive, access: [oscar@old.acme.com]}\nlicenses:\n  lic-1: {product: omiq-pro, assignee: oscar@old.acme.com, expires: 2027-03-31}\n";
const MERGE_AFTER: &str = "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n  olga@acme.com: {role: admin}\n  oscar@old.acme.com: {}\norganizations:\n  research:\n    products:\n      prod-7: {name: kDrive, access: [oscar@old.acme.com]}\nlicenses:\n  lic-1: {product: omiq-pro, assignee: oscar@old.acme.com, expires: 2027-03-31}\n---\naccount: acme-old\ndomains: [acme.com, old.acme.com]\nmerged_into: acme\n";

fn merged_workspace() -> Workspace {
    let workspace = Workspace::with_specs(&[("acme.yaml", MERGE_BEFORE)]);
    apply(&workspace);
    import(
        &workspace,
        "{\"id\": \"dataset/d-1\", \"account\": \"acme-old\", \"owner\": \"user:oscar@old.acme.com\"}\n\
         {\"type\": \"invoice\", \"id\": \"inv-1\", \"product\": \"prod-7\", \"organization\": \"research\"}\n\
         {\"type\": \"credits\", \"account\": \"acme-old\", \"balance\": 300}\n\
         {\"type\": \"credits\", \"account\": \"acme\", \"balance\": 1000}\n",
    );
    workspace
}

#[test]
fn a_merge_moves_organizations_licenses_assets_and_credits_and_the_tombstone_resolves() {
    let workspace = merged_workspace();
    workspace.write("acme.yaml", MERGE_AFTER);
    let plan = plan_json(&workspace);
    assert_eq!(
        actions(&plan),
        owned(&[
            ("update", "account", "acme"),
            ("transfer", "user", "olga@acme.com"),
            ("transfer", "user", "oscar@old.acme.com"),
            ("transfer", "organization", "research"),
            ("transfer", "license", "lic-1"),
            ("transfer", "asset", "dataset/d-1"),
            ("transfer", "account", "acme-old"),
        ]),
        "{plan:#}"
    );
    assert_eq!(change_of(&plan, "acme")["after"], json!({"credits": 1300}));
    assert_eq!(
        change_of(&plan, "research")["reason"],
        "takes its product prod-7; acme-old merges into acme"
    );
    converge(&workspace);
    let old = workspace.show("acme-old");
    assert_eq!(old["merged_into"], "acme");
    assert_eq!(old["owner"], Value::Null);
    assert_eq!(old["credits"], 0);
    assert_eq!(workspace.show("research")["account"], "acme");
    assert_eq!(workspace.show("prod-7")["invoices"], json!(["inv-1"]));
    assert_eq!(workspace.show("lic-1")["account"], "acme");
    assert_eq!(workspace.show("dataset/d-1")["account"], "acme");
    // The tombstone still resolves: an import into acme-old lands in acme.
    import(
        &workspace,
        &asset("dataset/d-2", "acme-old", "user:oscar@old.acme.com"),
    );
    assert_eq!(workspace.show("dataset/d-2")["account"], "acme");
    let text = plan_text(&workspace);
    assert!(text.ends_with(&format!("{NO_CHANGES}\n")), "{text}");
}

#[test]
fn a_merge_whose_users_or_organizations_are_not_declared_in_the_target_is_an_error() {
    let workspace = merged_workspace();
    workspace.write(
        "acme.yaml",
        &MERGE_AFTER
            .replace("  oscar@old.acme.com: {}\n", "")
            .replace("assignee: oscar@old.acme.com, ", "")
            .replace(", access: [oscar@old.acme.com]", "")
            .replace(
                "organizations:\n  research:\n    products:\n      prod-7: {name: kDrive}\n",
                "",
            ),
    );
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains("user oscar@old.acme.com of account acme-old is not declared in acme: acme-old merges into acme, and a merge moves its users; declare oscar@old.acme.com under users: of acme"),
        "{stderr}"
    );
    assert!(
        stderr.contains("organization research of account acme-old is not declared in acme"),
        "{stderr}"
    );
}

#[test]
fn a_merge_of_accounts_without_a_shared_domain_is_refused() {
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n---\naccount: other\ndomains: [other.com]\nmerged_into: acme\n",
    )]);
    let run = workspace.deed(&["validate"]).fails();
    assert!(
        run.stderr
            .contains("account other cannot be merged into acme: they share no domain"),
        "{run}"
    );
}

// --- 2.6 products and organizations -------------------------------------------------

const ORGS: &str = "account: acme\ndomains: [acme.com]\nconnections: [globex]\nusers:\n  alice@acme.com: {role: owner}\n  carol@acme.com: {}\norganizations:\n  research:\n    products:\n      prod-7: {name: kDrive, access: [carol@acme.com]}\n      prod-8: {name: kMeet, access: [carol@acme.com]}\n  sales: {}\n  lab:\n    products:\n      prod-9: {name: kChat}\n---\naccount: globex\ndomains: [globex.com]\nconnections: [acme]\nusers:\n  gina@globex.com: {role: owner}\n";

#[test]
fn products_move_between_organizations_in_one_plan_without_their_access_or_invoices() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ORGS)]);
    apply(&workspace);
    import(
        &workspace,
        "{\"type\": \"invoice\", \"id\": \"inv-1\", \"product\": \"prod-7\", \"organization\": \"research\"}\n",
    );
    workspace.write(
        "acme.yaml",
        &ORGS.replace(
            "  research:\n    products:\n      prod-7: {name: kDrive, access: [carol@acme.com]}\n      prod-8: {name: kMeet, access: [carol@acme.com]}\n  sales: {}\n",
            "  research: {}\n  sales:\n    products:\n      prod-7: {name: kDrive}\n      prod-8: {name: kMeet}\n",
        ),
    );
    let text = plan_text(&workspace);
    assert!(
        text.contains("access: [carol@acme.com] -> [], organization: research -> sales (access of carol@acme.com is not carried over; invoices stay with research)"),
        "{text}"
    );
    let plan = plan_json(&workspace);
    assert_eq!(
        actions(&plan),
        owned(&[
            ("transfer", "product", "prod-7"),
            ("transfer", "product", "prod-8")
        ])
    );
    converge(&workspace);
    let product = workspace.show("prod-7");
    assert_eq!(product["organization"], "sales");
    assert_eq!(product["access"], json!([]));
    // The invoice stays with the source organization.
    let all = workspace.show_all(&workspace.state());
    assert!(
        all.to_string().contains("\"organization\":\"research\""),
        "{all:#}"
    );
}

#[test]
fn an_organization_moved_to_a_connected_account_takes_its_products() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ORGS)]);
    apply(&workspace);
    let lab = "  lab:\n    products:\n      prod-9: {name: kChat}\n";
    workspace.write(
        "acme.yaml",
        &format!("{}organizations:\n{lab}", ORGS.replace(lab, "")),
    );
    let text = plan_text(&workspace);
    assert!(
        text.contains("> organization lab")
            && text.contains("account: acme -> globex (takes its product prod-9; acme and globex list each other in connections)"),
        "{text}"
    );
    converge(&workspace);
    assert_eq!(workspace.show("lab")["account"], "globex");
    assert_eq!(workspace.show("prod-9")["organization"], "lab");
}

#[test]
fn an_organization_cannot_move_over_a_connection_only_one_side_lists() {
    let one_sided = ORGS.replace("connections: [acme]\n", "");
    let workspace = Workspace::with_specs(&[("acme.yaml", &one_sided)]);
    apply(&workspace);
    let text = plan_text(&workspace);
    assert!(
        text.contains("connection to globex waits for globex to list acme in connections"),
        "{text}"
    );
    let lab = "  lab:\n    products:\n      prod-9: {name: kChat}\n";
    workspace.write(
        "acme.yaml",
        &format!("{}organizations:\n{lab}", one_sided.replace(lab, "")),
    );
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains("organization lab cannot move from acme to globex: globex does not list acme in connections"),
        "{stderr}"
    );
}

// --- 2.3 moving users -----------------------------------------------------------------

fn move_workspace() -> Workspace {
    let workspace = Workspace::with_specs(&[
        ("hq.yaml", HUB),
        (
            "eu.yaml",
            &eu("  dave@acme.com: {}\ngroups:\n  team:\n    members: {dave@acme.com: member, erin@acme.com: admin}\n"),
        ),
        ("us.yaml", &us("")),
    ]);
    apply(&workspace);
    accept(&workspace, "dave@acme.com");
    let records = [
        "{\"id\": \"file/f-1\", \"account\": \"acme-eu\", \"owner\": \"user:dave@acme.com\", \"folder\": \"folder/fo-1\"}\n".to_string(),
        asset("file/f-2", "acme-eu", "user:dave@acme.com"),
        "{\"id\": \"proof/p-1\", \"account\": \"acme-eu\", \"owner\": \"user:dave@acme.com\", \"versions\": [\"dave@acme.com\"]}\n".to_string(),
        "{\"id\": \"proof/p-2\", \"account\": \"acme-eu\", \"owner\": \"user:dave@acme.com\", \"versions\": [\"dave@acme.com\", \"erin@acme.com\"]}\n".to_string(),
        asset("folder/fo-1", "acme-eu", "user:dave@acme.com"),
        asset("view/v-1", "acme-eu", "user:dave@acme.com"),
        asset("dataset/d-1", "acme-eu", "user:dave@acme.com"),
    ]
    .concat();
    import(&workspace, &records);
    drain(&workspace);
    workspace
}

const TEAM_WITHOUT_DAVE: &str = "groups:\n  team:\n    members: {erin@acme.com: admin}\n";

#[test]
fn a_moved_user_brings_what_move_bring_names_and_leaves_the_rest_to_the_successor() {
    let workspace = move_workspace();
    workspace.write(
        "eu.yaml",
        &eu(&format!("  bob@acme.com: {{}}\n{TEAM_WITHOUT_DAVE}")),
    );
    workspace.write(
        "us.yaml",
        &us("  dave@acme.com:\n    move: {successor: erin@acme.com, bring: [proof, file], folder: From EU}\n"),
    );
    let text = plan_text(&workspace);
    for line in [
        "> user dave@acme.com",
        "moves from acme-eu (both satellites of acme-hq)",
        "      brings  2 files into folder \"From EU\", 1 proof",
        "      leaves  1 dataset, 1 folder (dave@acme.com keeps read access), 1 proof with versions of others, 1 view -> erin@acme.com",
        "      keeps   read access to 1 folder in acme-eu",
        "- membership acme-eu/team/dave@acme.com  (dave@acme.com moves to acme-us; groups never move)",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let plan = plan_json(&workspace);
    let user = change_of(&plan, "dave@acme.com");
    assert_eq!(user["action"], "transfer");
    assert_eq!(user["account"], "acme-us");
    assert_eq!(user["before"], json!({"account": "acme-eu"}));
    converge(&workspace);
    assert_eq!(workspace.show("dave@acme.com")["account"], "acme-us");
    let file = workspace.show("file/f-1");
    assert_eq!(file["account"], "acme-us");
    let folder = file["folder"].as_str().unwrap().to_string();
    let moved_folder = workspace.show(&folder);
    assert_eq!(moved_folder["account"], "acme-us");
    assert_eq!(moved_folder["owner"], "user:dave@acme.com");
    assert_eq!(workspace.show("proof/p-1")["account"], "acme-us");
    let proof = workspace.show("proof/p-2");
    assert_eq!(proof["account"], "acme-eu");
    assert_eq!(proof["owner"], "user:erin@acme.com");
    assert_eq!(proof["versions"], json!(["erin@acme.com", "erin@acme.com"]));
    let old_folder = workspace.show("folder/fo-1");
    assert_eq!(old_folder["account"], "acme-eu");
    assert_eq!(old_folder["owner"], "user:erin@acme.com");
    assert_eq!(old_folder["creator"], "dave@acme.com");
    assert_eq!(workspace.show("folder/fo-1:dave@acme.com")["level"], "read");
    assert_eq!(workspace.show("view/v-1")["owner"], "user:erin@acme.com");
    assert_eq!(workspace.show("dataset/d-1")["owner"], "user:erin@acme.com");
    workspace
        .deed(&["state", "show", "acme-eu/team/dave@acme.com"])
        .fails();
    // Both parties hear of it.
    let notes = drain(&workspace);
    let mut moved: Vec<&str> = notes
        .iter()
        .filter(|n| n["event"] == "move")
        .map(|n| n["to"].as_str().unwrap())
        .collect();
    moved.sort();
    assert_eq!(
        moved,
        vec!["dave@acme.com", "erin@acme.com", "sam@acme.com"]
    );
}

#[test]
fn a_moved_user_without_move_rules_leaves_everything_to_the_source_owner() {
    let workspace = move_workspace();
    workspace.write("eu.yaml", &eu(TEAM_WITHOUT_DAVE));
    workspace.write("us.yaml", &us("  dave@acme.com: {}\n"));
    let plan = plan_json(&workspace);
    for id in ["file/f-1", "proof/p-1", "view/v-1"] {
        let change = change_of(&plan, id);
        assert_eq!(change["after"]["owner"], "user:erin@acme.com", "{change:#}");
        assert_eq!(change["account"], "acme-eu");
    }
    converge(&workspace);
}

#[test]
fn a_user_cannot_move_between_accounts_that_are_not_connected() {
    let workspace = move_workspace();
    workspace.write("eu.yaml", &eu(TEAM_WITHOUT_DAVE));
    workspace.write("globex.yaml", &format!("{GLOBEX}  dave@acme.com: {{}}\n"));
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains(
            "dave@acme.com cannot move from acme-eu to globex: the accounts are not connected"
        ),
        "{stderr}"
    );
}

#[test]
fn a_one_sided_connection_is_pending_and_a_move_over_it_names_the_missing_side() {
    let workspace = move_workspace();
    let eu_connected =
        eu(TEAM_WITHOUT_DAVE).replace("hub: acme-hq\n", "hub: acme-hq\nconnections: [globex]\n");
    workspace.write("eu.yaml", &eu_connected);
    workspace.write("globex.yaml", &format!("{GLOBEX}  dave@acme.com: {{}}\n"));
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains("dave@acme.com cannot move from acme-eu to globex: globex does not list acme-eu in connections"),
        "{stderr}"
    );
    // Once globex consents, the move goes through.
    workspace.write(
        "globex.yaml",
        &format!(
            "{}  dave@acme.com: {{}}\n",
            GLOBEX.replace(
                "domains: [globex.com]\n",
                "domains: [globex.com]\nconnections: [acme-eu]\n"
            )
        ),
    );
    let text = plan_text(&workspace);
    assert!(
        text.contains("moves from acme-eu (acme-eu and globex list each other in connections)"),
        "{text}"
    );
    converge(&workspace);
}

#[test]
fn a_move_successor_must_be_a_user_of_the_source_account() {
    let workspace = move_workspace();
    workspace.write("eu.yaml", &eu(TEAM_WITHOUT_DAVE));
    workspace.write(
        "us.yaml",
        &us("  dave@acme.com:\n    move: {successor: sam@acme.com}\n"),
    );
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains("move.successor sam@acme.com is not a user of acme-eu"),
        "{stderr}"
    );
}

// --- 2.4 invitations -------------------------------------------------------------------

const INVITE: &str = "account: acme\ndomains: [acme.com]\ninvite_ttl: 24h\nusers:\n  alice@acme.com: {role: owner}\n  frank@acme.com: {role: admin}\n  gus@acme.com: {}\n  hal@acme.com: {}\ngroups:\n  analysts:\n    members: {frank@acme.com: admin, alice@acme.com: member, hal@acme.com: member}\n";

#[test]
fn an_invitation_carries_role_and_memberships_and_is_reissued_after_it_expires() {
    let workspace = Workspace::with_specs(&[("acme.yaml", INVITE)]);
    let text = plan_text(&workspace);
    assert!(
        text.contains("+ user frank@acme.com")
            && text.contains("invited as admin, invitation expires 2026-11-24 12:00 UTC")
            && text.contains("+ membership acme/analysts/frank@acme.com  role: admin"),
        "{text}"
    );
    apply(&workspace);
    accept(&workspace, "alice@acme.com");
    let invited = drain(&workspace);
    assert_eq!(
        invited
            .iter()
            .filter(|n| n["event"] == "invitation")
            .count(),
        4
    );
    // Not yet expired: nothing to do.
    let later = |time: &str, args: &[&str]| {
        super::util::deed_command(workspace.root())
            .env("DEED_NOW", time)
            .arg("--specs")
            .arg(workspace.specs())
            .arg("--state")
            .arg(workspace.state())
            .args(args)
            .output()
            .expect("run deed")
    };
    let output = later("2026-11-24T11:00:00Z", &["plan"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains(NO_CHANGES));
    let output = later("2026-11-25T12:00:00Z", &["plan", "--format", "json"]);
    let plan: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        actions(&plan),
        owned(&[
            ("update", "user", "frank@acme.com"),
            ("update", "user", "gus@acme.com"),
            ("update", "user", "hal@acme.com"),
        ]),
        "{plan:#}"
    );
    let change = change_of(&plan, "frank@acme.com");
    assert_eq!(
        change["after"],
        json!({"invitation_expires": "2026-11-26T12:00:00Z"})
    );
    let output = later("2026-11-25T12:00:00Z", &["plan"]);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(
            "invitation expired 2026-11-24 12:00 UTC; re-issued, expires 2026-11-26 12:00 UTC"
        ),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(later("2026-11-25T12:00:00Z", &["apply"]).status.success());
    let reissued = drain(&workspace);
    assert_eq!(reissued.len(), 3, "{reissued:#?}");
    assert!(reissued[0]["message"]
        .as_str()
        .unwrap()
        .contains("was re-issued; it expires 2026-11-26T12:00:00Z"));
    // Accepting makes the user active; no more re-issues.
    accept(&workspace, "frank@acme.com");
    assert_eq!(workspace.show("frank@acme.com")["status"], "active");
}

#[test]
fn removing_an_invited_user_cancels_the_invitation() {
    let workspace = Workspace::with_specs(&[("acme.yaml", INVITE)]);
    apply(&workspace);
    drain(&workspace);
    workspace.write("acme.yaml", &INVITE.replace("  gus@acme.com: {}\n", ""));
    let text = plan_text(&workspace);
    assert!(
        text.contains("- user gus@acme.com")
            && text.contains("(invitation cancelled: no longer declared in account acme)"),
        "{text}"
    );
    converge(&workspace);
    let notes = drain(&workspace);
    assert!(
        notes.iter().any(|n| n["to"] == "gus@acme.com"
            && n["message"] == "your invitation to account acme was cancelled"),
        "{notes:#?}"
    );
}

// --- 2.7 removals ------------------------------------------------------------------------

const REMOVALS: &str = "account: acme\ndomains: [acme.com]\nsuccessor: bob@acme.com\nusers:\n  alice@acme.com: {role: owner}\n  bob@acme.com: {role: admin}\n  carol@acme.com: {}\n  dan@acme.com: {}\n  ed@acme.com: {}\n";

#[test]
fn what_a_removed_user_owns_and_their_versions_pass_to_the_successor() {
    let workspace = Workspace::with_specs(&[("acme.yaml", REMOVALS)]);
    apply(&workspace);
    accept(&workspace, "carol@acme.com");
    import(
        &workspace,
        &format!(
            "{}{{\"id\": \"proof/p-1\", \"account\": \"acme\", \"owner\": \"user:dan@acme.com\", \"versions\": [\"carol@acme.com\", \"dan@acme.com\"]}}\n",
            asset("dataset/d-1", "acme", "user:carol@acme.com")
        ),
    );
    drain(&workspace);
    workspace.write("acme.yaml", &REMOVALS.replace("  carol@acme.com: {}\n", ""));
    let text = plan_text(&workspace);
    assert!(
        text.contains("user:carol@acme.com -> user:bob@acme.com (carol@acme.com is removed; passes to successor bob@acme.com)")
            && text.contains("versions: [carol@acme.com, dan@acme.com] -> [bob@acme.com, dan@acme.com] (carol@acme.com is no longer in acme; versions pass to successor bob@acme.com)"),
        "{text}"
    );
    converge(&workspace);
    assert_eq!(workspace.show("dataset/d-1")["owner"], "user:bob@acme.com");
    let notes = drain(&workspace);
    let mut to: Vec<&str> = notes.iter().map(|n| n["to"].as_str().unwrap()).collect();
    to.sort();
    assert_eq!(to, vec!["bob@acme.com", "carol@acme.com"], "{notes:#?}");
}

/// From 50k assets, the versions of removed users are looked for on two
/// threads, each over half of the ids: every asset with such a version is
/// found, whichever half it is in, and no other.
#[test]
fn the_versions_of_a_removed_user_pass_on_in_every_part_of_a_large_state() {
    let workspace = Workspace::with_specs(&[("acme.yaml", REMOVALS)]);
    apply(&workspace);
    accept(&workspace, "carol@acme.com");
    let mut records = String::new();
    let mut expected = Vec::new();
    for n in 0..60_000 {
        let id = format!("proof/p-{n:05}");
        let versions = match n % 997 == 3 {
            true => {
                expected.push(id.clone());
                "[\"carol@acme.com\", \"dan@acme.com\"]"
            }
            false => "[\"dan@acme.com\"]",
        };
        records.push_str(&format!(
            "{{\"id\": \"{id}\", \"account\": \"acme\", \"owner\": \"user:dan@acme.com\", \"versions\": {versions}}}\n"
        ));
    }
    import(&workspace, &records);
    workspace.write("acme.yaml", &REMOVALS.replace("  carol@acme.com: {}\n", ""));
    let plan = plan_json(&workspace);
    let passed: Vec<&str> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|change| change["kind"] == "asset")
        .map(|change| {
            assert_eq!(
                change["after"]["versions"],
                serde_json::json!(["bob@acme.com", "dan@acme.com"]),
                "{change}"
            );
            change["object"].as_str().expect("object")
        })
        .collect();
    assert_eq!(passed, expected);
    assert!(expected.len() > 50, "{} assets", expected.len());
}

#[test]
fn an_account_that_still_holds_assets_or_licenses_is_not_removed() {
    let old = "account: old\ndomains: [acme.com]\nusers:\n  olaf@acme.com: {role: owner}\nlicenses:\n  lic-9: {product: p, assignee: olaf@acme.com}\n";
    let workspace = Workspace::with_specs(&[("acme.yaml", REMOVALS), ("old.yaml", old)]);
    apply(&workspace);
    import(
        &workspace,
        &asset("dataset/o-1", "old", "user:olaf@acme.com"),
    );
    workspace.remove("old.yaml");
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains("account old cannot be removed: it still holds 1 asset(s) (dataset/o-1), 1 license(s) (lic-9); merge it (merged_into) or move them to another account first"),
        "{stderr}"
    );
}

#[test]
fn an_organization_with_invoices_is_not_removed_and_one_without_is() {
    let org = "account: old\ndomains: [acme.com]\nusers:\n  olaf@acme.com: {role: owner}\norganizations:\n  billed: {products: {p-1: {}}}\n  unbilled: {products: {}}\n";
    let workspace = Workspace::with_specs(&[("acme.yaml", REMOVALS), ("old.yaml", org)]);
    apply(&workspace);
    import(
        &workspace,
        r#"{"type": "invoice", "id": "inv-1", "product": "p-1", "organization": "billed"}"#,
    );
    workspace.write(
        "old.yaml",
        "account: old\ndomains: [acme.com]\nusers:\n  olaf@acme.com: {role: owner}\n",
    );
    let stderr = plan_errors(&workspace);
    assert!(
        stderr.contains(
            "old.yaml:1:1: organization billed cannot be removed: it holds 1 invoice(s) (inv-1)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("unbilled"), "{stderr}");
    workspace.write("old.yaml", "account: old\ndomains: [acme.com]\nusers:\n  olaf@acme.com: {role: owner}\norganizations:\n  billed: {products: {p-1: {}}}\n");
    let plan = plan_json(&workspace);
    assert!(actions(&plan).contains(&("remove".into(), "organization".into(), "unbilled".into())));
    converge(&workspace);
}

#[test]
fn an_account_that_holds_nothing_is_removed_with_its_users() {
    let old = "account: old\ndomains: [acme.com]\nusers:\n  olaf@acme.com: {role: owner}\n";
    let workspace = Workspace::with_specs(&[("acme.yaml", REMOVALS), ("old.yaml", old)]);
    apply(&workspace);
    workspace.remove("old.yaml");
    let plan = plan_json(&workspace);
    assert!(actions(&plan).contains(&("remove".into(), "account".into(), "old".into())));
    converge(&workspace);
    workspace.deed(&["state", "show", "old"]).fails();
}

// --- 2.8 notifications -------------------------------------------------------------------

#[test]
fn notifications_have_stable_ids_and_drain_prints_them_once() {
    let first = Workspace::with_specs(&[("acme.yaml", OWNED)]);
    let second = Workspace::with_specs(&[("acme.yaml", OWNED)]);
    apply(&first);
    apply(&second);
    let ids = |workspace: &Workspace| -> Vec<String> {
        drain(workspace)
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    };
    let one = ids(&first);
    assert_eq!(one.len(), 2);
    assert_eq!(one, ids(&second), "the same change gives the same ids");
    assert!(drain(&first).is_empty(), "drained once");
    // Applying again queues nothing.
    apply(&first);
    assert!(drain(&first).is_empty());
}
