//! Contract §1, validation: every class of error is reported as
//! `PATH:LINE:COL: message`, all at once, with exit 1, and nothing is written.

use std::time::{Duration, Instant};

use super::util::{Workspace, NO_CHANGES};

/// A valid account header with an owner, to build broken specs on.
const ACME: &str = "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n";

/// Writes `files`, runs `deed validate`, and asserts exit 1 and exactly the
/// `expected` diagnostics: each a `PATH:LINE:COL` location and a substring
/// of its message.
#[track_caller]
fn check_invalid(files: &[(&str, &str)], expected: &[(&str, &str)]) {
    let workspace = Workspace::with_specs(files);
    let run = workspace.deed(&["validate"]).fails();
    let diagnostics = run.diagnostics();
    assert_eq!(
        diagnostics.len(),
        expected.len(),
        "expected {} diagnostics:\n{run}",
        expected.len()
    );
    for (location, needle) in expected {
        let prefix = format!("{location}: ");
        assert!(
            diagnostics
                .iter()
                .any(|line| line.starts_with(&prefix) && line.contains(needle)),
            "no diagnostic `{prefix}...{needle}...`:\n{run}"
        );
    }
    assert!(!workspace.state().exists(), "validate created the state");
}

/// Like [`check_invalid`], and the run takes under a second.
#[track_caller]
fn check_refused_within_a_second(files: &[(&str, &str)], location: &str, needle: &str) {
    let workspace = Workspace::with_specs(files);
    let started = Instant::now();
    let run = workspace.deed(&["validate"]);
    let elapsed = started.elapsed();
    let run = run.fails();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}:\n{run}");
    let diagnostics = run.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{run}");
    assert!(
        diagnostics[0].starts_with(location) && diagnostics[0].contains(needle),
        "expected `{location}...{needle}...`:\n{run}"
    );
}

#[test]
fn a_yaml_syntax_error_is_reported_at_its_line_and_column() {
    check_invalid(
        &[(
            "acme.yaml",
            "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n   bob@acme.com: {}\n",
        )],
        &[("acme.yaml:5:4", "did not find expected key")],
    );
}

#[test]
fn an_unknown_field_is_reported_at_its_line_and_column() {
    check_invalid(
        &[("acme.yaml", &format!("{ACME}colour: blue\n"))],
        &[("acme.yaml:5:1", "unknown field `colour`")],
    );
    // Also inside an object.
    check_invalid(
        &[(
            "acme.yaml",
            "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner, rank: 1}\n",
        )],
        &[("acme.yaml:4:33", "unknown field `rank`")],
    );
}

#[test]
fn a_value_of_the_wrong_type_is_reported_at_its_line_and_column() {
    check_invalid(
        &[(
            "acme.yaml",
            "account: acme\ndomains: acme.com\nusers:\n  alice@acme.com: {role: owner}\n",
        )],
        &[(
            "acme.yaml:2:10",
            "domains: invalid type: string \"acme.com\", expected a sequence",
        )],
    );
}

#[test]
fn a_duplicate_key_is_reported_at_the_second_declaration() {
    check_invalid(
        &[(
            "acme.yaml",
            &format!("{ACME}  alice@acme.com: {{role: admin}}\n"),
        )],
        &[("acme.yaml:5:3", "duplicate key `alice@acme.com`")],
    );
}

#[test]
fn a_bad_account_id_is_reported_at_its_line_and_column() {
    check_invalid(
        &[(
            "acme.yaml",
            "account: Acme_Corp\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n",
        )],
        &[("acme.yaml:1:10", "bad account id `Acme_Corp`")],
    );
}

#[test]
fn a_bad_email_is_reported_at_its_line_and_column() {
    check_invalid(
        &[("acme.yaml", &format!("{ACME}  bob-at-acme.com: {{}}\n"))],
        &[("acme.yaml:5:3", "bad email `bob-at-acme.com`")],
    );
}

#[test]
fn a_bad_date_is_reported_at_its_line_and_column() {
    check_invalid(
        &[(
            "acme.yaml",
            &format!("{ACME}licenses:\n  lic-42: {{product: omiq-pro, assignee: alice@acme.com, expires: 2027-02-30}}\n"),
        )],
        &[("acme.yaml:6:66", "bad date `2027-02-30`")],
    );
}

#[test]
fn a_bad_duration_is_reported_at_its_line_and_column() {
    check_invalid(
        &[(
            "acme.yaml",
            "account: acme\ndomains: [acme.com]\ninvite_ttl: two days\nusers:\n  alice@acme.com: {role: owner}\n",
        )],
        &[("acme.yaml:3:13", "bad duration `two days`")],
    );
}

#[test]
fn an_account_without_an_owner_is_refused() {
    check_invalid(
        &[(
            "acme.yaml",
            "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: admin}\n",
        )],
        &[("acme.yaml:1:1", "account acme has no owner")],
    );
}

#[test]
fn an_account_with_two_owners_names_both() {
    check_invalid(
        &[(
            "acme.yaml",
            &format!("{ACME}  bob@acme.com: {{role: owner}}\n"),
        )],
        &[(
            "acme.yaml:5:3",
            "account acme has two owners, bob@acme.com here and alice@acme.com at acme.yaml:4:3",
        )],
    );
}

#[test]
fn a_user_declared_in_two_accounts_names_both_places() {
    check_invalid(
        &[
            ("acme.yaml", &format!("{ACME}  zed@acme.com: {{}}\n")),
            (
                "globex.yaml",
                "account: globex\ndomains: [globex.com]\nusers:\n  hank@globex.com: {role: owner}\n  zed@acme.com: {}\n",
            ),
        ],
        &[(
            "globex.yaml:5:3",
            "user zed@acme.com is declared in two accounts, globex here and acme at acme.yaml:5:3",
        )],
    );
}

#[test]
fn a_group_member_that_is_not_a_user_is_named_where_it_is_referred_to() {
    check_invalid(
        &[(
            "acme.yaml",
            &format!("{ACME}groups:\n  analysts:\n    members: {{zed@acme.com: member}}\n"),
        )],
        &[(
            "acme.yaml:7:5",
            "group analysts: member zed@acme.com is not a user of account acme",
        )],
    );
}

#[test]
fn a_product_access_that_is_not_a_user_is_named_where_it_is_referred_to() {
    check_invalid(
        &[(
            "acme.yaml",
            &format!(
                "{ACME}organizations:\n  research:\n    products:\n      prod-7: {{name: kDrive, access: [zed@acme.com]}}\n"
            ),
        )],
        &[("acme.yaml:8:7", "product prod-7: access user zed@acme.com is not a user of account acme")],
    );
}

#[test]
fn a_license_assignee_that_is_not_a_user_is_named_where_it_is_referred_to() {
    check_invalid(
        &[(
            "acme.yaml",
            &format!("{ACME}licenses:\n  lic-42: {{product: omiq-pro, assignee: zed@acme.com}}\n"),
        )],
        &[(
            "acme.yaml:6:3",
            "license lic-42: assignee zed@acme.com is not a user of account acme",
        )],
    );
}

#[test]
fn an_asset_owner_that_does_not_exist_is_named_where_it_is_referred_to() {
    check_invalid(
        &[(
            "acme.yaml",
            &format!(
                "{ACME}assets:\n  dataset/ds-1: {{owner: \"user:zed@acme.com\"}}\n  dataset/ds-2: {{owner: \"group:ghosts\"}}\n"
            ),
        )],
        &[
            ("acme.yaml:6:3", "asset dataset/ds-1: owner user:zed@acme.com is not a user of account acme"),
            ("acme.yaml:7:3", "asset dataset/ds-2: owner group:ghosts is not a group of account acme"),
        ],
    );
}

#[test]
fn a_hub_that_is_not_declared_is_refused() {
    check_invalid(
        &[(
            "eu.yaml",
            "account: acme-eu\ndomains: [acme.eu]\nhub: acme-hq\nusers:\n  erin@acme.eu: {role: owner}\n",
        )],
        &[("eu.yaml:3:1", "account acme-eu: hub acme-hq is not a declared account")],
    );
}

#[test]
fn hubs_do_not_chain() {
    check_invalid(
        &[(
            "all.yaml",
            "account: a\ndomains: [a.com]\nhub: b\nusers:\n  x@a.com: {role: owner}\n---\naccount: b\ndomains: [a.com]\nhub: c\nusers:\n  y@a.com: {role: owner}\n---\naccount: c\ndomains: [a.com]\nusers:\n  z@a.com: {role: owner}\n",
        )],
        &[("all.yaml:3:1", "account a: hub b is itself a satellite of c, and hubs do not chain")],
    );
}

#[test]
fn an_account_header_in_two_fragments_names_both() {
    check_invalid(
        &[
            ("acme/a.yaml", ACME),
            ("acme/b.yaml", "account: acme\ndomains: [acme.com]\n"),
        ],
        &[(
            "acme/b.yaml:2:1",
            "account acme: the header is declared twice: here and at acme/a.yaml:1:1",
        )],
    );
}

#[test]
fn an_account_without_a_header_is_refused() {
    check_invalid(
        &[(
            "acme.yaml",
            "account: acme\nusers:\n  alice@acme.com: {role: owner}\n",
        )],
        &[("acme.yaml:1:1", "account acme has no header")],
    );
}

#[test]
fn the_same_object_declared_in_two_fragments_names_both_places() {
    check_invalid(
        &[
            ("acme/a.yaml", ACME),
            (
                "acme/b.yaml",
                "account: acme\nusers:\n  alice@acme.com: {role: admin}\n",
            ),
        ],
        &[(
            "acme/b.yaml:3:3",
            "user alice@acme.com is declared twice: here and at acme/a.yaml:4:3",
        )],
    );
}

#[test]
fn a_successor_and_a_connection_that_do_not_exist_are_refused() {
    check_invalid(
        &[(
            "acme.yaml",
            "account: acme\ndomains: [acme.com]\nsuccessor: zed@acme.com\nconnections: [globex]\nusers:\n  alice@acme.com: {role: owner}\n",
        )],
        &[
            ("acme.yaml:3:1", "successor zed@acme.com is not a user of account acme"),
            ("acme.yaml:4:1", "connection globex is not a declared account"),
        ],
    );
}

#[test]
fn a_file_over_16_mib_is_refused_within_a_second() {
    let mut big = String::from(ACME);
    big.push_str("# ");
    big.push_str(&"x".repeat(17 * 1024 * 1024));
    big.push('\n');
    check_refused_within_a_second(&[("big.yaml", &big)], "big.yaml", "16 MiB");
}

#[test]
fn an_alias_bomb_is_refused_within_a_second() {
    let mut bomb = String::from(ACME);
    bomb.push_str("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..12 {
        let previous = format!("*a{}", level - 1);
        bomb.push_str(&format!(
            "a{level}: &a{level} [{}]\n",
            [previous.as_str(); 10].join(", ")
        ));
    }
    check_refused_within_a_second(
        &[("bomb.yaml", &bomb)],
        "bomb.yaml:5:5",
        "anchors and aliases",
    );
    // The same bomb where a list is expected.
    let mut bomb = String::from("account: acme\nusers:\n  alice@acme.com: {role: owner}\n");
    bomb.push_str("domains: &a0 [&a1 [&a2 [&a3 [a.com, a.com], *a3], *a2], *a1]\nconnections: [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]\n");
    check_refused_within_a_second(&[("bomb.yaml", &bomb)], "bomb.yaml:", "");
}

#[test]
fn nesting_200_levels_deep_is_refused_within_a_second() {
    let deep = format!("{ACME}groups: {}{}\n", "[".repeat(200), "]".repeat(200));
    // `groups: ` is 8 columns; the 65th `[` is where the limit is crossed.
    check_refused_within_a_second(&[("deep.yaml", &deep)], "deep.yaml:5:73", "nesting");
}

#[test]
fn all_errors_are_reported_at_once() {
    // Two files that do not parse: two diagnostics.
    check_invalid(
        &[
            ("a.yaml", "account: a\ndomains: [a.com\n"),
            (
                "b.yaml",
                &format!("{}colour: blue\n", ACME.replace("acme", "b")),
            ),
        ],
        &[
            ("a.yaml:3:1", "did not find expected ',' or ']'"),
            ("b.yaml:5:1", "unknown field `colour`"),
        ],
    );
    // Two files with broken rules: both reported.
    check_invalid(
        &[
            ("a.yaml", "account: a\ndomains: [a.com]\nusers:\n  x@a.com: {role: admin}\n"),
            (
                "b.yaml",
                "account: b\ndomains: [b.com]\nusers:\n  x@b.com: {role: owner}\nlicenses:\n  lic-1: {product: p, assignee: zed@b.com}\n",
            ),
        ],
        &[("a.yaml:1:1", "account a has no owner"), ("b.yaml:6:3", "assignee zed@b.com is not a user")],
    );
    // A file that does not parse does not hide a broken rule in another.
    check_invalid(
        &[
            ("a.yaml", "account: a\ndomains: [a.com\n"),
            (
                "b.yaml",
                "account: b\ndomains: [b.com]\nusers:\n  x@b.com: {role: admin}\n",
            ),
        ],
        &[
            ("a.yaml:3:1", "did not find expected ',' or ']'"),
            ("b.yaml:1:1", "account b has no owner"),
        ],
    );
}

#[test]
fn hidden_files_and_folders_and_editor_leftovers_are_skipped() {
    let broken = "account: [broken\n";
    let workspace = Workspace::with_specs(&[
        ("acme.yaml", ACME),
        (".hidden.yaml", broken),
        (".#acme.yaml", broken),
        (".git/config.yaml", broken),
        ("sub/.cache/x.yml", broken),
        ("acme.yaml~", broken),
        (".acme.yaml.swp", broken),
        ("acme.yaml.swp", broken),
        ("acme.yaml.tmp", broken),
        ("notes.txt", broken),
    ]);
    let run = workspace.deed(&["validate"]).ok();
    assert_eq!(run.stderr, "", "{run}");
    let plan = workspace.plan_json();
    assert_eq!(plan["summary"]["create"], 2, "{plan:#}");
}

#[test]
fn documents_and_fragments_of_one_account_merge_across_files() {
    let workspace = Workspace::with_specs(&[
        (
            "acme/account.yml",
            "# the header and the owner\naccount: acme\ndomains: [acme.com]\nusers:\n  Alice@Acme.com: {role: owner}\n---\n# a second document of the same account\naccount: acme\nusers:\n  bob@acme.com: {role: admin}\n---\n",
        ),
        (
            "acme/teams.yaml",
            "account: acme\ngroups:\n  analysts:\n    members: {bob@acme.com: admin, alice@acme.com: member}\n",
        ),
        ("globex.yaml", "account: globex\ndomains: [globex.com]\nusers:\n  hank@globex.com: {role: owner}\n"),
    ]);
    let run = workspace.deed(&["validate"]).ok();
    assert_eq!(
        run.stdout.trim(),
        "The specs are valid: 2 accounts, 3 users, 1 group, 0 organizations, 0 products, 0 licenses.",
        "{run}"
    );
    workspace.apply();
    assert_eq!(workspace.show("alice@acme.com")["role"], "owner");
    assert_eq!(workspace.show("bob@acme.com")["role"], "admin");
    assert_eq!(
        workspace.show("acme/analysts/alice@acme.com")["role"],
        "member"
    );
    assert_eq!(workspace.show("acme")["owner"], "alice@acme.com");
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
}

#[test]
fn a_refused_apply_leaves_the_state_byte_for_byte_unchanged() {
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        &format!("{ACME}  bob@acme.com: {{role: admin}}\n"),
    )]);
    workspace.apply();
    let before = workspace.dump_bytes();
    // Invalid: bob's role is changed, and a member refers to nobody.
    workspace.write(
        "acme.yaml",
        &format!("{ACME}  bob@acme.com: {{role: viewer}}\ngroups:\n  g:\n    members: {{zed@acme.com: member}}\n"),
    );
    let run = workspace.deed(&["apply"]).fails();
    assert!(
        run.stderr
            .contains("acme.yaml:8:5: group g: member zed@acme.com"),
        "{run}"
    );
    assert_eq!(
        String::from_utf8(workspace.dump_bytes()).unwrap(),
        String::from_utf8(before).unwrap()
    );
}

#[test]
fn validate_and_plan_never_write_and_plan_against_an_empty_state() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let missing = workspace.root().join("no-such-state");
    workspace.deed_on(&missing, &["validate"]).ok();
    let plan = workspace
        .deed_on(&missing, &["plan", "--format", "json"])
        .ok()
        .json();
    assert_eq!(
        plan["summary"],
        serde_json::json!({"create": 2, "update": 0, "transfer": 0, "remove": 0})
    );
    let text = workspace.deed_on(&missing, &["plan"]).ok();
    assert!(
        text.stdout
            .ends_with("Plan: 2 to create, 0 to update, 0 to transfer, 0 to remove.\n"),
        "{text}"
    );
    workspace
        .deed_on(&missing, &["state", "show", "--format", "json"])
        .ok();
    assert!(
        !missing.exists(),
        "a read-only command created {}",
        missing.display()
    );
}

/// Spec errors are reported at once even when the state does not answer:
/// `plan` loads the state on another thread while it reads the specs, and
/// does not wait for it once the specs are refused. The state here is a
/// server that accepts the connection and never speaks (before the fix,
/// `plan` printed the errors and then hung).
#[test]
fn plan_reports_spec_errors_without_waiting_for_a_state_that_does_not_answer() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let address = silent.local_addr().expect("the local address");
    let url = format!("postgres://deed@{address}/deed");
    let workspace = Workspace::with_specs(&[("acme.yaml", "account: acme\nusers: [\n")]);
    let specs = workspace.specs().display().to_string();
    let started = Instant::now();
    let output = super::util::deed_command(workspace.root())
        .args(["--specs", &specs, "--state", &url, "plan"])
        .timeout(Duration::from_secs(20))
        .output()
        .expect("run deed");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("acme.yaml:2:"), "{stderr}");
    assert!(
        elapsed < Duration::from_secs(5),
        "took {elapsed:?}: {stderr}"
    );
    drop(silent);
}
