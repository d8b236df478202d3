//! Contract §1, inventory: `deed inventory import FILE` from JSON lines or a
//! YAML list, all or nothing, refusing unknown accounts, written to the
//! history, and picked up by the ownership rules on the next plan.

use serde_json::json;

use super::util::{actions, change_of, owned, Workspace, NO_CHANGES};

const ACME: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner}
  bob@acme.com: {role: admin}
  carol@acme.com: {}
groups:
  analysts:
    members: {bob@acme.com: admin}
organizations:
  research:
    products:
      prod-7: {name: kDrive, access: [carol@acme.com]}
";

fn applied() -> Workspace {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    workspace.apply();
    workspace
}

const JSON_LINES: &str = r#"{"type": "asset", "id": "file/f-9", "account": "acme", "owner": "user:bob@acme.com", "creator": "carol@acme.com", "folder": "folder/fo-1", "tags": {"project": "x"}}
{"id": "proof/p-3", "account": "acme", "owner": "user:bob@acme.com", "versions": ["bob@acme.com", "carol@acme.com"]}
{"type": "asset", "id": "folder/fo-1", "account": "acme", "owner": "group:analysts"}
{"type": "invoice", "id": "inv-2026-11", "product": "prod-7", "organization": "research"}
{"type": "credits", "account": "acme", "balance": 5000}
"#;

const YAML_LIST: &str = "\
- {type: asset, id: file/f-9, account: acme, owner: \"user:bob@acme.com\", creator: carol@acme.com, folder: folder/fo-1, tags: {project: x}}
- id: proof/p-3
  account: acme
  owner: user:bob@acme.com
  versions: [bob@acme.com, carol@acme.com]
- {type: asset, id: folder/fo-1, account: acme, owner: \"group:analysts\"}
- {type: invoice, id: inv-2026-11, product: prod-7, organization: research}
- {type: credits, account: acme, balance: 5000}
";

/// Imports `name` with `content` and checks what the state then holds.
#[track_caller]
fn check_import(name: &str, content: &str) {
    let workspace = applied();
    let file = workspace.file(name, content);
    let run = workspace
        .deed(&["inventory", "import", file.to_str().unwrap()])
        .ok();
    assert!(
        run.stdout.contains("3 assets, 1 invoice, 1 credit balance"),
        "{run}"
    );
    assert_eq!(
        workspace.show("file/f-9"),
        json!({"account": "acme", "owner": "user:bob@acme.com", "creator": "carol@acme.com",
               "folder": "folder/fo-1", "versions": [], "tags": {"project": "x"}})
    );
    assert_eq!(
        workspace.show("proof/p-3"),
        json!({"account": "acme", "owner": "user:bob@acme.com", "creator": "bob@acme.com",
               "folder": null, "versions": ["bob@acme.com", "carol@acme.com"], "tags": {}})
    );
    assert_eq!(workspace.show("folder/fo-1")["owner"], "group:analysts");
    assert_eq!(workspace.show("folder/fo-1")["creator"], json!(null));
    assert_eq!(workspace.show("prod-7")["invoices"], json!(["inv-2026-11"]));
    assert_eq!(workspace.show("acme")["credits"], 5000);
    // Imported assets are not declared, so they change no plan here.
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
    workspace.deed(&["state", "check"]).ok();
    // The import is in the history.
    let history = workspace.deed(&["history", "--format", "json"]).ok().stdout;
    assert!(history.contains("\"object\":\"file/f-9\""), "{history}");
    assert!(history.contains("\"object\":\"proof/p-3\""), "{history}");
    // An invoice is listed under its product: the import updates its list.
    let entries: Vec<serde_json::Value> = history
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let invoices: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|entry| {
            entry["plan_id"] == "inventory-import" && entry["change"]["kind"] == "product"
        })
        .collect();
    assert_eq!(invoices.len(), 1, "{history}");
    assert_eq!(invoices[0]["change"]["object"], "prod-7");
    assert_eq!(invoices[0]["change"]["account"], "acme");
    assert_eq!(invoices[0]["change"]["before"], json!({"invoices": []}));
    assert_eq!(
        invoices[0]["change"]["after"],
        json!({"invoices": ["inv-2026-11"]})
    );
    // Importing the same file again changes nothing but keeps working.
    let dump = workspace.dump_bytes();
    let run = workspace
        .deed(&["inventory", "import", file.to_str().unwrap()])
        .ok();
    assert!(run.stdout.contains("(0 changed)"), "{run}");
    assert_eq!(workspace.dump_bytes(), dump);
}

#[test]
fn json_lines_import_assets_invoices_and_credits() {
    check_import("inventory.jsonl", JSON_LINES);
}

#[test]
fn a_yaml_list_imports_the_same_records() {
    check_import("inventory.yaml", YAML_LIST);
}

#[test]
fn a_malformed_line_is_reported_with_its_number_and_nothing_is_imported() {
    let workspace = applied();
    let dump = workspace.dump_bytes();
    let lines: Vec<&str> = JSON_LINES.lines().collect();
    let broken = format!(
        "{}\n{}\n{{\"id\": \"file/f-10\", \"account\": \n{}\n",
        lines[0], lines[1], lines[2]
    );
    let file = workspace.file("inventory.jsonl", broken);
    let run = workspace
        .deed(&["inventory", "import", file.to_str().unwrap()])
        .fails();
    let diagnostics = run.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{run}");
    let location = format!("{}:3:", file.display());
    assert!(diagnostics[0].starts_with(&location), "{run}");
    assert_eq!(
        workspace.dump_bytes(),
        dump,
        "a refused import wrote something"
    );
    workspace.deed(&["state", "show", "file/f-9"]).fails();
}

#[test]
fn a_bad_record_is_reported_with_its_line_and_nothing_is_imported() {
    let workspace = applied();
    let dump = workspace.dump_bytes();
    let broken = JSON_LINES.replace("\"owner\": \"group:analysts\"", "\"owner\": \"nobody\"");
    let file = workspace.file("inventory.jsonl", broken);
    let run = workspace
        .deed(&["inventory", "import", file.to_str().unwrap()])
        .fails();
    assert!(run.stderr.contains("inventory.jsonl:3:"), "{run}");
    assert_eq!(workspace.dump_bytes(), dump);
}

#[test]
fn an_import_into_an_unknown_account_is_refused() {
    let workspace = applied();
    let dump = workspace.dump_bytes();
    let file = workspace.file(
        "inventory.jsonl",
        format!(
            "{}{{\"id\": \"file/f-1\", \"account\": \"globex\", \"owner\": \"user:hank@globex.com\"}}\n",
            JSON_LINES
        ),
    );
    let run = workspace
        .deed(&["inventory", "import", file.to_str().unwrap()])
        .fails();
    assert!(run.stderr.contains("inventory.jsonl:6:"), "{run}");
    assert!(run.stderr.contains("globex"), "names the account:\n{run}");
    assert_eq!(workspace.dump_bytes(), dump);
}

#[test]
fn reassign_rules_catch_imported_assets_on_the_next_plan() {
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        &format!(
            "{ACME}reassign:\n  - from: user:carol@acme.com\n    to: group:analysts\n    kinds: [dataset]\n    tag: {{original-owner: carol@acme.com}}\n"
        ),
    )]);
    workspace.apply();
    let file = workspace.file(
        "inventory.jsonl",
        "{\"id\": \"dataset/ds-9\", \"account\": \"acme\", \"owner\": \"user:carol@acme.com\"}\n{\"id\": \"workflow/wf-9\", \"account\": \"acme\", \"owner\": \"user:carol@acme.com\"}\n",
    );
    workspace
        .deed(&["inventory", "import", file.to_str().unwrap()])
        .ok();
    assert_eq!(
        workspace.show("dataset/ds-9")["owner"],
        "user:carol@acme.com",
        "import never applies rules"
    );
    let plan = workspace.plan_json();
    assert_eq!(
        actions(&plan),
        owned(&[("transfer", "asset", "dataset/ds-9")])
    );
    let change = change_of(&plan, "dataset/ds-9");
    assert_eq!(change["before"]["owner"], "user:carol@acme.com");
    assert_eq!(change["after"]["owner"], "group:analysts");
    assert_eq!(
        change["after"]["tags"],
        json!({"original-owner": "carol@acme.com"})
    );
    workspace.apply();
    assert_eq!(workspace.show("dataset/ds-9")["owner"], "group:analysts");
    assert_eq!(
        workspace.show("workflow/wf-9")["owner"],
        "user:carol@acme.com"
    );
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
}

/// An invoice imported again with another product moves between the two
/// products' lists: the history has the update of each, and nothing for an
/// invoice imported unchanged.
#[test]
fn an_invoice_moved_to_another_product_updates_both_lists_in_the_history() {
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        &ACME.replace(
            "      prod-7: {name: kDrive, access: [carol@acme.com]}\n",
            "      prod-7: {name: kDrive, access: [carol@acme.com]}\n      prod-8: {name: kMeet}\n",
        ),
    )]);
    workspace.apply();
    // Imports invoices given as (id, product), all of organization research.
    let import = |name: &str, invoices: &[(&str, &str)]| {
        let lines: String = invoices
            .iter()
            .map(|(id, product)| {
                format!("{{\"type\": \"invoice\", \"id\": \"{id}\", \"product\": \"{product}\", \"organization\": \"research\"}}\n")
            })
            .collect();
        let file = workspace.file(name, lines);
        workspace
            .deed(&["inventory", "import", file.to_str().unwrap()])
            .ok();
    };
    import("first.jsonl", &[("inv-1", "prod-7"), ("inv-2", "prod-7")]);
    import("second.jsonl", &[("inv-1", "prod-7"), ("inv-2", "prod-8")]);
    assert_eq!(workspace.show("prod-7")["invoices"], json!(["inv-1"]));
    assert_eq!(workspace.show("prod-8")["invoices"], json!(["inv-2"]));
    let history = workspace.deed(&["history", "--format", "json"]).ok().stdout;
    let lists: Vec<(String, serde_json::Value, serde_json::Value)> = history
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .filter(|entry| {
            entry["plan_id"] == "inventory-import" && entry["change"]["kind"] == "product"
        })
        .map(|entry| {
            let change = &entry["change"];
            (
                change["object"].as_str().unwrap_or_default().to_string(),
                change["before"]["invoices"].clone(),
                change["after"]["invoices"].clone(),
            )
        })
        .collect();
    assert_eq!(
        lists,
        [
            ("prod-7".to_string(), json!([]), json!(["inv-1", "inv-2"])),
            (
                "prod-7".to_string(),
                json!(["inv-1", "inv-2"]),
                json!(["inv-1"])
            ),
            ("prod-8".to_string(), json!([]), json!(["inv-2"])),
        ],
        "{history}"
    );
    workspace.deed(&["state", "check"]).ok();
}

/// Imported assets whose owner is not a user of their account pass to the
/// account's successor (here its owner) on the next plan, and the reason
/// says why without calling a user of another account removed.
#[test]
fn imported_assets_of_strangers_pass_to_the_successor_with_the_right_reason() {
    const ZETA: &str =
        "account: zeta\ndomains: [zeta.com]\nusers:\n  zed@zeta.com: {role: owner}\n";
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME), ("zeta.yaml", ZETA)]);
    workspace.apply();
    let file = workspace.file(
        "inventory.jsonl",
        "{\"id\": \"dataset/ds-1\", \"account\": \"acme\", \"owner\": \"user:zed@zeta.com\"}\n{\"id\": \"dataset/ds-2\", \"account\": \"acme\", \"owner\": \"user:nobody@acme.com\"}\n",
    );
    workspace
        .deed(&["inventory", "import", file.to_str().unwrap()])
        .ok();
    let plan = workspace.plan_json();
    assert_eq!(
        actions(&plan),
        owned(&[
            ("transfer", "asset", "dataset/ds-1"),
            ("transfer", "asset", "dataset/ds-2")
        ])
    );
    let stranger = change_of(&plan, "dataset/ds-1");
    assert_eq!(stranger["after"]["owner"], "user:alice@acme.com");
    assert_eq!(
        stranger["reason"],
        "zed@zeta.com is a user of zeta, not of acme; passes to successor alice@acme.com"
    );
    assert_eq!(
        change_of(&plan, "dataset/ds-2")["reason"],
        "nobody@acme.com is not a user of acme; passes to successor alice@acme.com"
    );
    workspace.apply();
    assert_eq!(
        workspace.show("dataset/ds-1")["owner"],
        "user:alice@acme.com"
    );
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
    workspace.deed(&["state", "check"]).ok();
}
