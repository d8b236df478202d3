//! Contract §3, the smaller commands: `invitations accept`, `history`,
//! `outbox`, and the `--help` of every command.

use serde_json::Value;

use super::util::{deed_command, Workspace};

const ACME: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner}
  bob@acme.com: {role: admin}
";

#[test]
fn accepting_an_invitation_makes_the_user_active() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    workspace.apply();
    let bob = workspace.show("bob@acme.com");
    assert_eq!(bob["status"], "invited");
    assert_eq!(bob["invitation_expires"], "2026-11-25T12:00:00Z");
    workspace
        .deed(&["invitations", "accept", "Bob@Acme.com"])
        .ok();
    let bob = workspace.show("bob@acme.com");
    assert_eq!(bob["status"], "active");
    assert_eq!(bob["invitation_expires"], Value::Null);
    assert_eq!(bob["role"], "admin");
    // Accepting twice is harmless; an unknown email is an error.
    let dump = workspace.dump_bytes();
    workspace
        .deed(&["invitations", "accept", "bob@acme.com"])
        .ok();
    assert_eq!(workspace.dump_bytes(), dump);
    let run = workspace
        .deed(&["invitations", "accept", "zed@acme.com"])
        .fails();
    assert!(run.stderr.contains("zed@acme.com"), "{run}");
    // The accepted user is not re-invited by the next plan.
    let plan = workspace.plan_json();
    assert_eq!(plan["changes"], serde_json::json!([]), "{plan:#}");
}

/// One history entry as the test reads it: seq, action, object, reason,
/// actor, revision.
type HistorySummary<'a> = (
    u64,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
);

#[test]
fn history_lists_applied_changes_with_actor_and_revision() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    workspace
        .deed(&[
            "apply",
            "--actor",
            "root@acme.com",
            "--revision",
            "0123456789abcdef",
        ])
        .ok();
    workspace.write(
        "acme.yaml",
        &ACME.replace("{role: admin}", "{role: viewer}"),
    );
    workspace.deed(&["apply"]).ok();
    let entries: Vec<Value> = workspace
        .deed(&["history", "--format", "json"])
        .ok()
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let summary: Vec<HistorySummary> = entries
        .iter()
        .map(|entry| {
            (
                entry["seq"].as_u64().unwrap(),
                entry["change"]["action"].as_str().unwrap(),
                entry["change"]["kind"].as_str().unwrap(),
                entry["change"]["object"].as_str().unwrap(),
                entry["actor"].as_str(),
                entry["revision"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                1,
                "create",
                "account",
                "acme",
                Some("root@acme.com"),
                Some("0123456789abcdef")
            ),
            (
                2,
                "create",
                "user",
                "alice@acme.com",
                Some("root@acme.com"),
                Some("0123456789abcdef")
            ),
            (
                3,
                "create",
                "user",
                "bob@acme.com",
                Some("root@acme.com"),
                Some("0123456789abcdef")
            ),
            (4, "update", "user", "bob@acme.com", None, None),
        ]
    );
    for entry in &entries {
        assert_eq!(entry["time"], "2026-11-23T12:00:00Z");
        assert!(
            entry["plan_id"].as_str().unwrap().starts_with("p-"),
            "{entry}"
        );
    }
    assert_eq!(entries[0]["plan_id"], entries[2]["plan_id"]);
    assert_ne!(entries[0]["plan_id"], entries[3]["plan_id"]);
    assert_eq!(
        entries[3]["change"]["before"],
        serde_json::json!({"role": "admin"})
    );
    assert_eq!(
        entries[3]["change"]["after"],
        serde_json::json!({"role": "viewer"})
    );

    let text = workspace.deed(&["history"]).ok().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains("create account acme") && lines[0].contains("root@acme.com"),
        "{text}"
    );
    assert!(lines[0].contains("0123456789ab"), "{text}");
    let last = workspace.deed(&["history", "--limit", "1"]).ok().stdout;
    assert_eq!(last.lines().count(), 1);
    assert!(last.contains("update user bob@acme.com"), "{last}");
}

#[test]
fn outbox_drain_prints_notifications_as_json_lines_once() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    workspace.apply();
    let listed = workspace.deed(&["outbox"]).ok().stdout;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let drained = workspace.deed(&["outbox", "--drain"]).ok().stdout;
    let notifications: Vec<Value> = drained
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let mut recipients: Vec<(&str, &str)> = notifications
        .iter()
        .map(|n| (n["to"].as_str().unwrap(), n["event"].as_str().unwrap()))
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        vec![
            ("alice@acme.com", "invitation"),
            ("bob@acme.com", "invitation")
        ]
    );
    for notification in &notifications {
        assert!(
            notification["id"].as_str().unwrap().starts_with("n-"),
            "{notification}"
        );
    }
    let again = workspace.deed(&["outbox", "--drain"]).ok();
    assert_eq!(again.stdout, "", "a second drain printed something");
    assert_eq!(
        workspace.deed(&["outbox"]).ok().stdout.trim(),
        "The outbox is empty."
    );
    // New events queue new notifications, drained once too.
    workspace.write("acme.yaml", &format!("{ACME}  carol@acme.com: {{}}\n"));
    workspace.apply();
    let drained = workspace.deed(&["outbox", "--drain"]).ok().stdout;
    assert_eq!(drained.lines().count(), 1, "{drained}");
    assert!(drained.contains("\"to\":\"carol@acme.com\""), "{drained}");
    assert_eq!(workspace.deed(&["outbox", "--drain"]).ok().stdout, "");
}

#[test]
fn the_help_of_every_command_has_an_example() {
    let commands: &[&[&str]] = &[
        &[],
        &["validate"],
        &["plan"],
        &["apply"],
        &["daemon"],
        &["state", "show"],
        &["state", "export"],
        &["state", "dump"],
        &["state", "restore"],
        &["state", "migrate"],
        &["state", "check"],
        &["inventory", "import"],
        &["invitations", "accept"],
        &["history"],
        &["outbox"],
        &["schema"],
        &["completions"],
    ];
    let folder = tempfile::tempdir().unwrap();
    let mut missing = Vec::new();
    for command in commands {
        let output = deed_command(folder.path())
            .args(*command)
            .arg("--help")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !stdout.contains("Example") {
            missing.push(format!(
                "deed {} --help (exit {:?})",
                command.join(" "),
                output.status.code()
            ));
        }
    }
    assert!(missing.is_empty(), "no example in:\n{}", missing.join("\n"));
}
