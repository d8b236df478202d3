//! Contract 3.1-3.3: the JSON plan field by field, the text and markdown
//! plans as snapshots, determinism, pending items, saved plans and the
//! removal guard.

use serde_json::json;

use super::util::{actions, owned, Workspace, NO_CHANGES};

/// A small account with one object of every declarable kind.
const SMALL: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner, name: Alice Doe}
  bob@acme.com: {role: admin}
groups:
  analysts:
    members: {bob@acme.com: member}
organizations:
  research:
    products:
      prod-7: {name: kDrive 2TB, access: [bob@acme.com]}
licenses:
  lic-42: {product: omiq-pro, assignee: bob@acme.com, expires: 2027-03-31}
assets:
  dataset/ds-1: {owner: \"group:analysts\", tags: {original-owner: bob@acme.com}}
";

#[test]
fn a_small_spec_plans_as_json_field_by_field() {
    let workspace = Workspace::with_specs(&[("acme.yaml", SMALL)]);
    let plan = workspace.plan_json();
    assert_eq!(plan["format_version"], 1);
    assert_eq!(
        plan["summary"],
        json!({"create": 9, "update": 0, "transfer": 0, "remove": 0})
    );
    assert_eq!(plan["pending"], json!([]));
    let expected = vec![
        json!({"action": "create", "kind": "account", "object": "acme", "account": "acme", "before": null,
               "after": {"connections": [], "credits": 0, "domains": ["acme.com"], "hub": null, "invite_ttl": "48h",
                         "merged_into": null, "owner": "alice@acme.com", "successor": null},
               "reason": "declared in acme.yaml"}),
        json!({"action": "create", "kind": "user", "object": "alice@acme.com", "account": "acme", "before": null,
               "after": {"account": "acme", "invitation_expires": "2026-11-25T12:00:00Z", "name": "Alice Doe",
                         "role": "owner", "status": "invited"},
               "reason": "invited to acme"}),
        json!({"action": "create", "kind": "user", "object": "bob@acme.com", "account": "acme", "before": null,
               "after": {"account": "acme", "invitation_expires": "2026-11-25T12:00:00Z", "name": null,
                         "role": "admin", "status": "invited"},
               "reason": "invited to acme"}),
        json!({"action": "create", "kind": "group", "object": "acme/analysts", "account": "acme", "before": null,
               "after": {"account": "acme", "name": "analysts"}, "reason": "declared in acme.yaml"}),
        json!({"action": "create", "kind": "membership", "object": "acme/analysts/bob@acme.com", "account": "acme",
               "before": null, "after": {"account": "acme", "group": "analysts", "role": "member", "user": "bob@acme.com"},
               "reason": "declared in acme.yaml"}),
        json!({"action": "create", "kind": "organization", "object": "research", "account": "acme", "before": null,
               "after": {"account": "acme"}, "reason": "declared in acme.yaml"}),
        json!({"action": "create", "kind": "product", "object": "prod-7", "account": "acme", "before": null,
               "after": {"access": ["bob@acme.com"], "name": "kDrive 2TB", "organization": "research"},
               "reason": "declared in acme.yaml"}),
        json!({"action": "create", "kind": "license", "object": "lic-42", "account": "acme", "before": null,
               "after": {"account": "acme", "assignee": "bob@acme.com", "expires": "2027-03-31", "product": "omiq-pro"},
               "reason": "declared in acme.yaml"}),
        json!({"action": "create", "kind": "asset", "object": "dataset/ds-1", "account": "acme", "before": null,
               "after": {"account": "acme", "creator": null, "folder": null, "owner": "group:analysts",
                         "tags": {"original-owner": "bob@acme.com"}, "versions": []},
               "reason": "pinned in account acme"}),
    ];
    let changes = plan["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), expected.len(), "{plan:#}");
    for (change, expected) in changes.iter().zip(&expected) {
        let mut without_id = change.clone();
        let id = without_id
            .as_object_mut()
            .unwrap()
            .remove("id")
            .expect("an id");
        let id = id.as_str().expect("id is a string");
        assert!(
            id.len() == 18
                && id.starts_with("c-")
                && id[2..].chars().all(|c| c.is_ascii_hexdigit()),
            "id {id}"
        );
        assert_eq!(&without_id, expected);
    }
    // `--out` writes the same JSON plan as `--format json` prints.
    let out = workspace.root().join("plan.json");
    let run = workspace
        .deed(&["plan", "--format", "json", "--out", out.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), run.stdout);
}

#[test]
fn the_text_plan_of_a_small_spec_matches_its_snapshot() {
    let workspace = Workspace::with_specs(&[("acme.yaml", SMALL)]);
    let run = workspace.deed(&["plan"]).ok();
    assert_eq!(run.stderr, "");
    insta::assert_snapshot!("small_spec_text_plan", run.stdout);
}

#[test]
fn the_markdown_plan_of_a_small_spec_matches_its_snapshot() {
    let workspace = Workspace::with_specs(&[("acme.yaml", SMALL)]);
    let run = workspace.deed(&["plan", "--format", "markdown"]).ok();
    assert!(
        run.stdout
            .starts_with("Plan: 9 to create, 0 to update, 0 to transfer, 0 to remove."),
        "the summary line comes first:\n{run}"
    );
    insta::assert_snapshot!("small_spec_markdown_plan", run.stdout);
}

#[test]
fn the_text_plan_of_transfers_and_removals_matches_its_snapshot() {
    let workspace = Workspace::with_specs(&[("acme.yaml", SMALL)]);
    workspace.apply();
    workspace.write(
        "acme.yaml",
        "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner, name: Alice Doe}
  bob@acme.com: {role: member}
  carol@acme.com: {}
groups:
  analysts:
    members: {carol@acme.com: admin}
organizations:
  research: {}
  labs:
    products:
      prod-7: {name: kDrive 2TB, access: [bob@acme.com]}
licenses:
  lic-42: {product: omiq-pro, assignee: carol@acme.com, expires: 2027-03-31}
assets:
  dataset/ds-1: {owner: \"user:carol@acme.com\", tags: {original-owner: bob@acme.com}}
",
    );
    let run = workspace.deed(&["plan", "--allow-removals"]).ok();
    insta::assert_snapshot!("transfers_text_plan", run.stdout);
}

#[test]
fn plans_of_the_same_input_are_byte_identical() {
    let workspace = Workspace::with_specs(&[("acme.yaml", SMALL)]);
    let check = |when: &str| {
        for format in ["text", "json", "markdown"] {
            let first = workspace.deed(&["plan", "--format", format]).ok();
            let second = workspace.deed(&["plan", "--format", format]).ok();
            assert_eq!(first.stdout, second.stdout, "{format} plan {when}");
        }
        let first = workspace.deed(&["plan", "--diff", "--expand"]).ok();
        let second = workspace.deed(&["plan", "--diff", "--expand"]).ok();
        assert_eq!(first.stdout, second.stdout, "text plan with --diff {when}");
    };
    check("on an empty state");
    workspace.apply();
    workspace.write(
        "acme.yaml",
        &SMALL
            .replace(
                "bob@acme.com: {role: admin}",
                "bob@acme.com: {role: viewer}\n  carol@acme.com: {}\n  dave@acme.com: {}",
            )
            .replace("assignee: bob@acme.com", "assignee: carol@acme.com"),
    );
    check("after an apply");
    let plan = workspace.plan_json();
    assert_eq!(
        actions(&plan),
        owned(&[
            ("update", "user", "bob@acme.com"),
            ("create", "user", "carol@acme.com"),
            ("create", "user", "dave@acme.com"),
            ("transfer", "license", "lic-42"),
        ]),
        "{plan:#}"
    );
}

#[test]
fn an_ownership_transfer_to_an_invited_user_is_pending_until_the_invitation_is_accepted() {
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n  bob@acme.com: {role: admin}\n",
    )]);
    workspace.apply();
    workspace.write(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: admin}\n  bob@acme.com: {role: owner}\n",
    );
    let plan = workspace.plan_json();
    assert_eq!(plan["changes"], json!([]), "{plan:#}");
    let pending = plan["pending"].as_array().expect("pending");
    assert_eq!(pending.len(), 1, "{plan:#}");
    assert_eq!(pending[0]["kind"], "account");
    assert_eq!(pending[0]["object"], "acme");
    assert!(
        pending[0]["reason"]
            .as_str()
            .unwrap()
            .contains("bob@acme.com"),
        "{plan:#}"
    );
    let text = workspace.deed(&["plan"]).ok().stdout;
    assert!(text.contains("pending\n  account acme"), "{text}");
    // apply leaves the old owner in place.
    workspace.apply();
    assert_eq!(workspace.show("acme")["owner"], "alice@acme.com");
    assert_eq!(workspace.show("alice@acme.com")["role"], "owner");
    // Once bob accepts, the next reconcile completes the transfer.
    workspace
        .deed(&["invitations", "accept", "bob@acme.com"])
        .ok();
    let plan = workspace.plan_json();
    assert_eq!(plan["pending"], json!([]), "{plan:#}");
    assert_eq!(
        actions(&plan),
        owned(&[
            ("transfer", "account", "acme"),
            ("update", "user", "alice@acme.com"),
            ("update", "user", "bob@acme.com"),
        ])
    );
    assert_eq!(
        plan["changes"][0]["before"],
        json!({"owner": "alice@acme.com"})
    );
    assert_eq!(
        plan["changes"][0]["after"],
        json!({"owner": "bob@acme.com"})
    );
    workspace.apply();
    assert_eq!(workspace.show("acme")["owner"], "bob@acme.com");
    assert_eq!(workspace.show("alice@acme.com")["role"], "admin");
    workspace.deed(&["state", "check"]).ok();
}

#[test]
fn detailed_exitcode_is_2_with_changes_and_0_without() {
    let workspace = Workspace::with_specs(&[("acme.yaml", SMALL)]);
    let run = workspace.deed(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "{run}");
    workspace.apply();
    let run = workspace.deed(&["plan", "--detailed-exitcode"]).ok();
    assert_eq!(run.stdout.trim(), NO_CHANGES);
    workspace.write("acme.yaml", "account: acme\n");
    let run = workspace.deed(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        run.code, 1,
        "invalid specs are an error, not changes:\n{run}"
    );
}

#[test]
fn a_saved_plan_is_applied_exactly_and_a_second_time_changes_nothing() {
    let workspace = Workspace::with_specs(&[("acme.yaml", SMALL)]);
    workspace.apply();
    workspace.write(
        "acme.yaml",
        &SMALL.replace(
            "bob@acme.com: {role: admin}",
            "bob@acme.com: {role: viewer}",
        ),
    );
    let plan_file = workspace.root().join("plan.json");
    let plan_path = plan_file.to_str().unwrap();
    workspace.deed(&["plan", "--out", plan_path]).ok();
    // The specs change again after the plan was saved: apply PLANFILE
    // applies the saved plan, not the specs.
    workspace.write(
        "acme.yaml",
        &SMALL.replace(
            "bob@acme.com: {role: admin}",
            "bob@acme.com: {role: member}",
        ),
    );
    let run = workspace.deed(&["apply", plan_path]).ok();
    assert!(run.stdout.contains("1 change applied"), "{run}");
    assert_eq!(workspace.show("bob@acme.com")["role"], "viewer");
    let dump = workspace.dump_bytes();
    let run = workspace.deed(&["apply", plan_path]).ok();
    assert!(run.stdout.contains("0 changes applied"), "{run}");
    assert_eq!(
        workspace.dump_bytes(),
        dump,
        "a second apply of the same plan wrote something"
    );
}

#[test]
fn a_saved_plan_whose_objects_changed_meanwhile_is_a_conflict_and_writes_nothing() {
    let workspace = Workspace::with_specs(&[("acme.yaml", SMALL)]);
    workspace.apply();
    workspace.write(
        "acme.yaml",
        &SMALL.replace(
            "bob@acme.com: {role: admin}",
            "bob@acme.com: {role: viewer}",
        ),
    );
    let plan_file = workspace.root().join("plan.json");
    let plan_path = plan_file.to_str().unwrap();
    workspace.deed(&["plan", "--out", plan_path]).ok();
    // Meanwhile bob became a member: he is at neither `before` nor `after`.
    workspace.write(
        "acme.yaml",
        &SMALL.replace(
            "bob@acme.com: {role: admin}",
            "bob@acme.com: {role: member}",
        ),
    );
    workspace.apply();
    let dump = workspace.dump_bytes();
    let run = workspace.deed(&["apply", plan_path]).fails();
    assert!(
        run.stderr.contains("bob@acme.com"),
        "the conflict names the object:\n{run}"
    );
    assert!(run.stderr.contains("conflict"), "{run}");
    assert_eq!(workspace.dump_bytes(), dump);
}

/// Five users in two groups, for the removal guard.
const TEAM: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner}
  bob@acme.com: {}
  carol@acme.com: {}
  dave@acme.com: {}
  erin@acme.com: {}
groups:
  all:
    members: {alice@acme.com: admin, bob@acme.com: member, carol@acme.com: member, dave@acme.com: member, erin@acme.com: member}
";

#[test]
fn the_removal_guard_refuses_a_plan_removing_over_a_quarter_of_the_users() {
    let workspace = Workspace::with_specs(&[("acme.yaml", TEAM)]);
    workspace.apply();
    let dump = workspace.dump_bytes();
    // 2 of 5 users (40%) and 2 of 5 memberships.
    workspace.write(
        "acme.yaml",
        &TEAM
            .replace("  dave@acme.com: {}\n  erin@acme.com: {}\n", "")
            .replace(", dave@acme.com: member, erin@acme.com: member", ""),
    );
    let run = workspace.deed(&["plan"]).fails();
    assert!(
        run.stderr.contains('2') && run.stderr.contains('5'),
        "names the numbers:\n{run}"
    );
    workspace.deed(&["apply"]).fails();
    assert_eq!(
        workspace.dump_bytes(),
        dump,
        "a refused apply wrote something"
    );
    let plan = workspace
        .deed(&["plan", "--format", "json", "--max-removal", "50"])
        .ok()
        .json();
    assert_eq!(plan["summary"]["remove"], 4, "{plan:#}");
    workspace.deed(&["plan", "--allow-removals"]).ok();
    workspace.deed(&["apply", "--allow-removals"]).ok();
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
}

#[test]
fn the_removal_guard_lets_a_small_removal_through() {
    let workspace = Workspace::with_specs(&[("acme.yaml", TEAM)]);
    workspace.apply();
    // 1 of 5 users (20%), 1 of 5 memberships.
    workspace.write(
        "acme.yaml",
        &TEAM
            .replace("  erin@acme.com: {}\n", "")
            .replace(", erin@acme.com: member", ""),
    );
    let plan = workspace.plan_json();
    assert_eq!(
        actions(&plan),
        owned(&[
            ("remove", "membership", "acme/all/erin@acme.com"),
            ("remove", "user", "erin@acme.com")
        ])
    );
}
