//! Contract 3.3 and section 2: apply converges, is idempotent, turns spec
//! edits into the right updates, transfers and removals, holds the writer's
//! lock, and refuses a state of a newer schema.

use std::time::{Duration, Instant};

use serde_json::json;

use super::util::{actions, change_of, deed_binary, open_sled, owned, Workspace, NOW, NO_CHANGES};

/// One account with people, a group, two organizations, a license and a
/// pinned asset.
const ACME: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner}
  bob@acme.com: {role: admin}
  carol@acme.com: {}
  dave@acme.com: {}
groups:
  analysts:
    members: {bob@acme.com: admin, carol@acme.com: member}
  finance:
    members: {dave@acme.com: admin, alice@acme.com: member}
organizations:
  research:
    products:
      prod-7: {name: kDrive, access: [carol@acme.com]}
  labs: {}
licenses:
  lic-42: {product: omiq-pro, assignee: carol@acme.com, expires: 2027-03-31}
assets:
  dataset/ds-1: {owner: \"user:carol@acme.com\"}
";

/// A workspace where [`ACME`] is applied.
fn applied() -> Workspace {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let run = workspace.apply();
    assert!(
        run.stdout
            .ends_with("Apply complete: 16 changes applied.\n"),
        "{run}"
    );
    workspace
}

#[test]
fn after_apply_the_plan_shows_no_changes() {
    let workspace = applied();
    let run = workspace.deed(&["plan"]).ok();
    assert_eq!(run.stdout, format!("{NO_CHANGES}\n"));
    let plan = workspace.plan_json();
    assert_eq!(plan["changes"], json!([]));
    assert_eq!(
        plan["summary"],
        json!({"create": 0, "update": 0, "transfer": 0, "remove": 0})
    );
    workspace.deed(&["state", "check"]).ok();
}

#[test]
fn a_second_apply_changes_nothing_and_does_not_grow_the_history() {
    let workspace = applied();
    let dump = workspace.dump_bytes();
    let history = workspace.deed(&["history", "--format", "json"]).ok().stdout;
    assert_eq!(history.lines().count(), 16);
    let run = workspace.apply();
    assert!(run.stdout.contains(NO_CHANGES), "{run}");
    assert!(
        run.stdout.ends_with("Apply complete: 0 changes applied.\n"),
        "{run}"
    );
    assert_eq!(
        workspace.deed(&["history", "--format", "json"]).ok().stdout,
        history
    );
    assert_eq!(
        String::from_utf8(workspace.dump_bytes()).unwrap(),
        String::from_utf8(dump).unwrap(),
        "a second apply wrote something"
    );
}

#[test]
fn changing_a_role_is_an_update_of_the_user() {
    let workspace = applied();
    workspace.write(
        "acme.yaml",
        &ACME.replace(
            "bob@acme.com: {role: admin}",
            "bob@acme.com: {role: billing-admin}",
        ),
    );
    let plan = workspace.plan_json();
    assert_eq!(actions(&plan), owned(&[("update", "user", "bob@acme.com")]));
    let change = change_of(&plan, "bob@acme.com");
    assert_eq!(change["before"], json!({"role": "admin"}));
    assert_eq!(change["after"], json!({"role": "billing-admin"}));
    assert_eq!(change["account"], "acme");
    workspace.apply();
    assert_eq!(workspace.show("bob@acme.com")["role"], "billing-admin");
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
}

#[test]
fn changing_a_license_assignee_is_a_transfer_that_keeps_its_term() {
    let workspace = applied();
    workspace.write(
        "acme.yaml",
        &ACME.replace(
            "assignee: carol@acme.com, expires: 2027-03-31",
            "assignee: dave@acme.com, expires: 2027-03-31",
        ),
    );
    let plan = workspace.plan_json();
    assert_eq!(actions(&plan), owned(&[("transfer", "license", "lic-42")]));
    let change = change_of(&plan, "lic-42");
    assert_eq!(change["before"], json!({"assignee": "carol@acme.com"}));
    assert_eq!(change["after"], json!({"assignee": "dave@acme.com"}));
    workspace.apply();
    assert_eq!(
        workspace.show("lic-42"),
        json!({"account": "acme", "product": "omiq-pro", "assignee": "dave@acme.com", "expires": "2027-03-31"})
    );
}

#[test]
fn moving_a_product_to_another_organization_is_a_transfer_and_access_is_not_carried_over() {
    let workspace = applied();
    workspace.write(
        "acme.yaml",
        &ACME
            .replace(
                "    products:\n      prod-7: {name: kDrive, access: [carol@acme.com]}\n",
                "",
            )
            .replace(
                "  labs: {}\n",
                "  labs:\n    products:\n      prod-7: {name: kDrive, access: [dave@acme.com]}\n",
            ),
    );
    let plan = workspace.plan_json();
    assert_eq!(
        actions(&plan),
        owned(&[("transfer", "product", "prod-7")]),
        "{plan:#}"
    );
    let change = change_of(&plan, "prod-7");
    assert_eq!(change["before"]["organization"], "research");
    assert_eq!(change["after"]["organization"], "labs");
    workspace.apply();
    let product = workspace.show("prod-7");
    assert_eq!(product["organization"], "labs");
    assert_eq!(product["access"], json!(["dave@acme.com"]));
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
}

#[test]
fn removing_a_user_passes_their_pinned_asset_to_the_owner() {
    let workspace = applied();
    // carol goes; her pin is removed too (a removed pin never deletes).
    workspace.write(
        "acme.yaml",
        &ACME
            .replace("  carol@acme.com: {}\n", "")
            .replace(", carol@acme.com: member", "")
            .replace("access: [carol@acme.com]", "access: []")
            .replace("assignee: carol@acme.com", "assignee: bob@acme.com")
            .replace("  dataset/ds-1: {owner: \"user:carol@acme.com\"}\n", ""),
    );
    let plan = workspace
        .deed(&["plan", "--format", "json", "--allow-removals"])
        .ok()
        .json();
    let change = change_of(&plan, "dataset/ds-1");
    assert_eq!(change["action"], "transfer");
    assert_eq!(change["before"], json!({"owner": "user:carol@acme.com"}));
    assert_eq!(change["after"], json!({"owner": "user:alice@acme.com"}));
    assert_eq!(change_of(&plan, "carol@acme.com")["action"], "remove");
    assert_eq!(
        change_of(&plan, "acme/analysts/carol@acme.com")["action"],
        "remove"
    );
    let objects: Vec<String> = actions(&plan)
        .into_iter()
        .map(|(_, _, object)| object)
        .collect();
    let position = |object: &str| objects.iter().position(|o| o == object).unwrap();
    assert!(
        position("dataset/ds-1") < position("carol@acme.com"),
        "the asset passes on before its owner is removed: {objects:?}"
    );
    workspace.deed(&["apply", "--allow-removals"]).ok();
    assert_eq!(
        workspace.show("dataset/ds-1")["owner"],
        "user:alice@acme.com"
    );
    workspace.deed(&["state", "show", "carol@acme.com"]).fails();
    workspace.deed(&["state", "check"]).ok();
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
}

#[test]
fn removing_a_user_passes_their_asset_to_the_declared_successor() {
    let workspace = applied();
    let with_successor = ACME.replace(
        "domains: [acme.com]\n",
        "domains: [acme.com]\nsuccessor: bob@acme.com\n",
    );
    workspace.write("acme.yaml", &with_successor);
    workspace.apply();
    workspace.write(
        "acme.yaml",
        &with_successor
            .replace("  carol@acme.com: {}\n", "")
            .replace(", carol@acme.com: member", "")
            .replace("access: [carol@acme.com]", "access: []")
            .replace("assignee: carol@acme.com", "assignee: bob@acme.com")
            .replace("  dataset/ds-1: {owner: \"user:carol@acme.com\"}\n", ""),
    );
    workspace.deed(&["apply", "--allow-removals"]).ok();
    assert_eq!(workspace.show("dataset/ds-1")["owner"], "user:bob@acme.com");
    workspace.deed(&["state", "check"]).ok();
}

#[test]
fn removing_a_group_removes_its_memberships_first() {
    let workspace = applied();
    workspace.write(
        "acme.yaml",
        &ACME.replace(
            "  analysts:\n    members: {bob@acme.com: admin, carol@acme.com: member}\n",
            "",
        ),
    );
    let plan = workspace
        .deed(&["plan", "--format", "json", "--allow-removals"])
        .ok()
        .json();
    assert_eq!(
        actions(&plan),
        owned(&[
            ("remove", "membership", "acme/analysts/bob@acme.com"),
            ("remove", "membership", "acme/analysts/carol@acme.com"),
            ("remove", "group", "acme/analysts"),
        ])
    );
    assert_eq!(
        change_of(&plan, "acme/analysts")["before"],
        json!({"account": "acme", "name": "analysts"})
    );
    assert_eq!(change_of(&plan, "acme/analysts")["after"], json!(null));
    workspace.deed(&["apply", "--allow-removals"]).ok();
    workspace.deed(&["state", "show", "acme/analysts"]).fails();
    workspace
        .deed(&["state", "show", "acme/analysts/bob@acme.com"])
        .fails();
    workspace.deed(&["state", "check"]).ok();
}

#[test]
fn a_user_moves_between_connected_accounts_and_keeps_read_access_to_a_folder() {
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        "account: hq\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n---\naccount: eu\ndomains: [acme.com]\nhub: hq\nusers:\n  erin@acme.com: {role: owner}\n  dave@acme.com: {}\n",
    )]);
    workspace.apply();
    let inventory = workspace.file(
        "inventory.jsonl",
        "{\"id\": \"folder/fo-1\", \"account\": \"eu\", \"owner\": \"user:dave@acme.com\"}\n",
    );
    workspace
        .deed(&["inventory", "import", inventory.to_str().unwrap()])
        .ok();
    workspace.write(
        "acme.yaml",
        "account: hq\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n  dave@acme.com: {}\n---\naccount: eu\ndomains: [acme.com]\nhub: hq\nusers:\n  erin@acme.com: {role: owner}\n",
    );
    let plan = workspace.plan_json();
    let mut found = actions(&plan);
    found.sort();
    assert_eq!(
        found,
        owned(&[
            ("create", "grant", "folder/fo-1:dave@acme.com"),
            ("transfer", "asset", "folder/fo-1"),
            ("transfer", "user", "dave@acme.com"),
        ])
    );
    assert_eq!(change_of(&plan, "dave@acme.com")["before"]["account"], "eu");
    assert_eq!(change_of(&plan, "dave@acme.com")["after"]["account"], "hq");
    workspace.apply();
    assert_eq!(workspace.show("dave@acme.com")["account"], "hq");
    let folder = workspace.show("folder/fo-1");
    assert_eq!(folder["account"], "eu");
    assert_eq!(folder["owner"], "user:erin@acme.com");
    assert_eq!(folder["creator"], "dave@acme.com");
    assert_eq!(workspace.show("folder/fo-1:dave@acme.com")["level"], "read");
    workspace.deed(&["state", "check"]).ok();
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
}

#[test]
fn a_state_in_use_is_refused_at_once_and_waited_for_with_wait() {
    let workspace = applied();
    workspace.write(
        "acme.yaml",
        &ACME.replace(
            "bob@acme.com: {role: admin}",
            "bob@acme.com: {role: viewer}",
        ),
    );
    let location = workspace.state().display().to_string();
    let holder = deed::store::open(&location, deed::store::Access::Write { wait: false })
        .expect("hold the state");

    let started = Instant::now();
    let run = workspace.deed(&["apply"]).fails();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not at once: {:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("in use"), "{run}");
    assert!(run.stderr.contains(&location), "names the state:\n{run}");
    for command in [
        &["outbox", "--drain"][..],
        &["invitations", "accept", "bob@acme.com"],
    ] {
        let run = workspace.deed(command).fails();
        assert!(run.stderr.contains("in use"), "{run}");
    }

    // With --wait it waits until the holder lets go, then applies.
    let started = Instant::now();
    let child = std::process::Command::new(deed_binary())
        .current_dir(workspace.root())
        .env("DEED_NOW", NOW)
        .env("NO_COLOR", "1")
        .arg("--specs")
        .arg(workspace.specs())
        .arg("--state")
        .arg(workspace.state())
        .args(["apply", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn deed apply --wait");
    std::thread::sleep(Duration::from_millis(500));
    drop(holder);
    let output = child.wait_with_output().expect("wait for deed");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "did not wait: {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.ends_with("Apply complete: 1 change applied.\n"),
        "{stdout}"
    );
    assert_eq!(workspace.show("bob@acme.com")["role"], "viewer");
}

#[test]
fn a_state_of_a_newer_schema_is_refused_naming_both_versions() {
    let workspace = applied();
    {
        let db = open_sled(&workspace.sled_folder());
        db.insert(b"m\0schema_version", b"7".as_slice())
            .expect("insert");
        db.flush().expect("flush");
    }
    for command in [
        &["plan"][..],
        &["apply"],
        &["state", "show"],
        &["state", "check"],
    ] {
        let run = workspace.deed(command).fails();
        assert!(
            run.stderr.contains("schema version 7") && run.stderr.contains("(5)"),
            "names the versions:\n{run}"
        );
    }
}

/// The JSON of a history record's value: a packed group (the byte 1, the
/// JSON's length as a little-endian u32, then the JSON compressed with
/// LZ4's block format) unpacked; any other value as it is.
fn unpacked(value: &[u8]) -> Vec<u8> {
    match value.split_first() {
        Some((1, rest)) => {
            let length = u32::from_le_bytes(rest[..4].try_into().expect("length"));
            lz4_flex::block::decompress(&rest[4..], length as usize).expect("unpack")
        }
        _ => value.to_vec(),
    }
}

/// Rewrites the history of the sled state at `state` as an older deed
/// wrote it: layout 1, one record per entry; layout 2, groups of plain
/// JSON; layout 3, packed groups as now. Returns how many history records
/// it holds then.
fn rewrite_history_as_layout(state: &std::path::Path, layout: u32) -> usize {
    let db = open_sled(state);
    let records: Vec<_> = db
        .scan_prefix(b"h\0")
        .map(|item| item.expect("read"))
        .collect();
    assert!(!records.is_empty());
    let mut batch = sled::Batch::default();
    for (key, value) in records {
        assert_eq!(value[0], 1, "this deed packs its groups");
        if layout == 3 {
            continue;
        }
        let json = unpacked(&value);
        if layout == 2 {
            batch.insert(key, json);
            continue;
        }
        // A group: what its entries share, then each entry's change; the
        // seqs count on from the key's.
        let group: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("a group");
        let first_seq: u64 = std::str::from_utf8(&key[2..])
            .expect("key")
            .parse()
            .expect("seq");
        batch.remove(key);
        let (head, changes) = group.split_first().expect("a head");
        for (seq, change) in (first_seq..).zip(changes) {
            let mut entry = head.clone();
            entry["seq"] = seq.into();
            entry["change"] = change.clone();
            let key = format!("h\0{seq:020}");
            batch.insert(key.as_bytes(), serde_json::to_vec(&entry).expect("encode"));
        }
    }
    batch.insert(
        b"m\0schema_version".as_slice(),
        layout.to_string().as_bytes(),
    );
    db.apply_batch(batch).expect("write");
    db.flush().expect("flush");
    db.scan_prefix(b"h\0").count()
}

#[test]
fn a_state_of_an_older_layout_keeps_its_history_and_continues_it() {
    for (layout, records) in [(1, 16), (2, 1), (3, 1)] {
        let workspace = applied();
        let history = workspace.deed(&["history", "--format", "json"]).ok().stdout;
        let dump = workspace.dump_bytes();
        assert_eq!(
            rewrite_history_as_layout(&workspace.sled_folder(), layout),
            records,
            "layout {layout}"
        );
        assert_eq!(rewrite_assets_as_json(&workspace.sled_folder(), &dump), 1);

        assert_eq!(
            workspace.deed(&["history", "--format", "json"]).ok().stdout,
            history
        );
        let last_two = workspace
            .deed(&["history", "--limit", "2", "--format", "json"])
            .ok()
            .stdout;
        assert_eq!(last_two.lines().count(), 2, "{last_two}");
        assert!(history.ends_with(&last_two));
        assert_eq!(workspace.dump_bytes(), dump, "layout {layout}");
        workspace.deed(&["state", "check"]).ok();
        let plan = workspace.deed(&["plan"]).ok();
        assert_eq!(plan.stdout, format!("{NO_CHANGES}\n"), "layout {layout}");

        workspace.write(
            "acme.yaml",
            &ACME
                .replace(
                    "bob@acme.com: {role: admin}",
                    "bob@acme.com: {role: viewer}",
                )
                .replace(
                    "dataset/ds-1: {owner: \"user:carol@acme.com\"}",
                    "dataset/ds-1: {owner: \"user:carol@acme.com\"}\n  dataset/ds-2: {owner: \"user:dave@acme.com\"}",
                ),
        );
        workspace.apply();
        let after = workspace.deed(&["history", "--format", "json"]).ok().stdout;
        assert_eq!(after.lines().count(), 18);
        assert!(after.starts_with(&history), "the old entries stay first");
        let new_entries: Vec<(u64, String)> = after
            .lines()
            .skip(16)
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).expect("json");
                let object = entry["change"]["object"].as_str().expect("object");
                (entry["seq"].as_u64().expect("seq"), object.to_string())
            })
            .collect();
        assert_eq!(
            new_entries,
            [
                (17, "bob@acme.com".to_string()),
                (18, "dataset/ds-2".to_string())
            ]
        );
        let db = open_sled(&workspace.sled_folder());
        assert_eq!(
            db.get(b"m\0schema_version").expect("get").as_deref(),
            Some(b"5".as_slice()),
            "a commit marks the state layout 5"
        );
        let (_, newest) = newest_history_record(&db);
        assert_eq!(newest[0], 1, "the new group is packed");
        assert_eq!(
            db.scan_prefix(b"o\0asset\0").count(),
            0,
            "the commit moved the old asset records into pages"
        );
        let paged: String = db
            .scan_prefix(b"o\0assets\0")
            .map(|item| String::from_utf8_lossy(&item.expect("read").1).into_owned())
            .collect();
        for id in ["dataset/ds-1", "dataset/ds-2"] {
            assert!(paged.contains(id), "{id} is in a page");
        }
        drop(db);
        workspace.deed(&["state", "check"]).ok();
        assert_eq!(
            workspace.deed(&["plan"]).ok().stdout,
            format!("{NO_CHANGES}\n")
        );
    }
}

/// Rewrites the assets of the sled state at `state` as one JSON record
/// each, as a deed before layout 4 kept them, from `dump`, a dump of that
/// state, and removes the pages this deed keeps them in. Returns how many
/// it rewrote.
fn rewrite_assets_as_json(state: &std::path::Path, dump: &[u8]) -> usize {
    let db = open_sled(state);
    let mut batch = sled::Batch::default();
    assert_eq!(
        db.scan_prefix(b"o\0asset\0").count(),
        0,
        "no record per asset"
    );
    let mut pages = 0;
    for item in db.scan_prefix(b"o\0assets\0") {
        let (key, page) = item.expect("read");
        assert_eq!(page[0], 1, "this deed keeps its assets in pages");
        batch.remove(key);
        pages += 1;
    }
    assert!(pages > 0, "a page of assets");
    let mut rewritten = 0;
    for line in dump
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
    {
        let record: serde_json::Value = serde_json::from_slice(line).expect("a dump line");
        if record["kind"] != "asset" {
            continue;
        }
        let key = format!("o\0asset\0{}", record["id"].as_str().expect("id"));
        batch.insert(
            key.as_bytes(),
            serde_json::to_vec(&record["value"]).expect("encode"),
        );
        rewritten += 1;
    }
    db.apply_batch(batch).expect("write");
    db.flush().expect("flush");
    rewritten
}

/// The last history record of a sled state: its key and value.
fn newest_history_record(db: &sled::Db) -> (sled::IVec, sled::IVec) {
    db.scan_prefix(b"h\0")
        .next_back()
        .expect("a record")
        .expect("read")
}

/// A packed history record that is damaged on disk is reported as a
/// corrupt record, with its key, by the commands that read the history;
/// the objects still load.
#[test]
fn a_damaged_history_record_is_reported_as_corrupt_by_what_reads_it() {
    let workspace = applied();
    let cut_key = {
        let db = open_sled(&workspace.sled_folder());
        let (key, value) = newest_history_record(&db);
        assert_eq!(value[0], 1, "packed");
        db.insert(&key, &value[..value.len() - 4]).expect("insert");
        db.flush().expect("flush");
        String::from_utf8_lossy(&key[2..]).into_owned()
    };
    for command in [&["history"][..], &["state", "dump", "out.jsonl"]] {
        let run = workspace.deed(command).fails();
        assert!(
            run.stderr.contains("corrupt record")
                && run.stderr.contains(&cut_key)
                && run.stderr.contains("packed history group"),
            "names the record:\n{run}"
        );
    }
    workspace.deed(&["state", "check"]).ok();
}

/// A page of packed assets damaged on disk (cut short, or one byte of an
/// asset changed into one no packer writes) is reported as a corrupt
/// record, with its key, by every command that loads the state; nothing is
/// written.
#[test]
fn a_damaged_asset_page_is_reported_as_corrupt_by_what_loads_it() {
    type Damage = fn(&[u8]) -> Vec<u8>;
    let id = b"dataset/ds-1";
    let damages: [Damage; 2] = [
        |page| page[..page.len() - 3].to_vec(),
        |page| {
            // The format byte, the id's length and bytes, the packed
            // asset's length, then its account ("acme" behind its length)
            // and the owner's tag.
            assert_eq!(&page[2..2 + 12], b"dataset/ds-1", "the page's first asset");
            assert!(page[2 + 12] < 0x80, "a one-byte length");
            let mut changed = page.to_vec();
            changed[2 + 12 + 1 + 1 + "acme".len()] = b'x';
            changed
        },
    ];
    for (damage, message) in damages.into_iter().zip(["asset page", "packed asset"]) {
        let workspace = applied();
        {
            let db = open_sled(&workspace.sled_folder());
            let key = [&b"o\0assets\0"[..], id].concat();
            let page = db
                .get(&key)
                .expect("get")
                .expect("the page of the first asset");
            assert_eq!(page[0], 1, "a page");
            db.insert(key, damage(&page)).expect("insert");
            db.flush().expect("flush");
        }
        let dump = workspace.root().join("out.jsonl");
        for command in [
            &["state", "check"][..],
            &["plan"],
            &["apply"],
            &["state", "dump", dump.to_str().unwrap()],
        ] {
            let run = workspace.deed(command).fails();
            assert!(
                run.stderr.contains("corrupt record")
                    && run.stderr.contains("dataset/ds-1")
                    && run.stderr.contains(message),
                "{command:?} names the record:\n{run}"
            );
        }
        assert!(!dump.exists(), "no dump is left behind");
    }
}

#[test]
fn a_dump_of_a_newer_schema_is_refused_naming_both_versions() {
    let workspace = applied();
    let text = String::from_utf8(workspace.dump_bytes()).unwrap();
    let newer = text.replacen("\"schema_version\":1", "\"schema_version\":2", 1);
    assert_ne!(newer, text);
    let dump = workspace.file("newer.dump", newer);
    let fresh = workspace.root().join("fresh");
    let run = workspace
        .deed_on(&fresh, &["state", "restore", dump.to_str().unwrap()])
        .fails();
    assert!(
        run.stderr.contains("schema version 2") && run.stderr.contains("(1)"),
        "{run}"
    );
    let run = workspace.deed_on(&dump, &["plan"]).fails();
    assert!(
        run.stderr.contains("schema version 2") && run.stderr.contains("(1)"),
        "{run}"
    );
}

#[test]
fn removing_a_user_passes_their_proof_versions_to_the_successor() {
    let workspace = applied();
    let inventory = workspace.file(
        "inventory.jsonl",
        "{\"id\": \"proof/p-3\", \"account\": \"acme\", \"owner\": \"user:bob@acme.com\", \"versions\": [\"bob@acme.com\", \"carol@acme.com\"]}\n",
    );
    workspace
        .deed(&["inventory", "import", inventory.to_str().unwrap()])
        .ok();
    workspace.write(
        "acme.yaml",
        &ACME
            .replace("  carol@acme.com: {}\n", "")
            .replace(", carol@acme.com: member", "")
            .replace("access: [carol@acme.com]", "access: []")
            .replace("assignee: carol@acme.com", "assignee: bob@acme.com")
            .replace("  dataset/ds-1: {owner: \"user:carol@acme.com\"}\n", ""),
    );
    workspace.deed(&["apply", "--allow-removals"]).ok();
    // No asset is left with an owner that does not exist (2.7): carol's
    // version passes to the successor, the account owner.
    assert_eq!(
        workspace.show("proof/p-3")["versions"],
        json!(["bob@acme.com", "alice@acme.com"])
    );
    workspace.deed(&["state", "check"]).ok();
}

#[test]
fn an_account_whose_last_fragment_is_deleted_is_removed_only_when_it_holds_nothing() {
    let workspace = Workspace::with_specs(&[
        ("acme.yaml", ACME),
        (
            "globex.yaml",
            "account: globex\ndomains: [globex.com]\nusers:\n  hank@globex.com: {role: owner}\norganizations:\n  globex-labs: {}\n",
        ),
    ]);
    workspace.apply();
    workspace.remove("globex.yaml");
    // It still holds an organization: the plan fails naming it.
    let dump = workspace.dump_bytes();
    let run = workspace.deed(&["plan", "--allow-removals"]).fails();
    assert!(
        run.stderr.contains("globex") && run.stderr.contains("globex-labs"),
        "{run}"
    );
    workspace.deed(&["apply", "--allow-removals"]).fails();
    assert_eq!(workspace.dump_bytes(), dump);
    // Once the organization is gone, the account is planned for removal.
    workspace.write(
        "globex.yaml",
        "account: globex\ndomains: [globex.com]\nusers:\n  hank@globex.com: {role: owner}\n",
    );
    workspace.deed(&["apply", "--allow-removals"]).ok();
    workspace.remove("globex.yaml");
    let plan = workspace
        .deed(&["plan", "--format", "json", "--allow-removals"])
        .ok()
        .json();
    assert_eq!(
        actions(&plan),
        owned(&[
            ("remove", "user", "hank@globex.com"),
            ("remove", "account", "globex")
        ])
    );
    workspace.deed(&["apply", "--allow-removals"]).ok();
    workspace.deed(&["state", "show", "globex"]).fails();
    workspace.deed(&["state", "check"]).ok();
    assert_eq!(workspace.deed(&["plan"]).ok().stdout.trim(), NO_CHANGES);
}

#[test]
fn plan_and_apply_log_how_long_each_step_took_at_debug_level() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let logged = |command: &str| {
        let output = super::util::deed_command(workspace.root())
            .arg("--specs")
            .arg(workspace.specs())
            .arg("--state")
            .arg(workspace.state())
            .arg(command)
            .env("DEED_LOG", "deed=debug")
            .output()
            .expect("run deed");
        assert!(output.status.success(), "deed {command} failed");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let planned = logged("plan");
    assert!(
        ["specs_ms=", "state_ms=", "plan_ms=", "changes=", "planned"]
            .iter()
            .all(|part| planned.contains(part)),
        "{planned}"
    );
    let applied = logged("apply");
    assert!(
        [
            "specs_ms=",
            "state_ms=",
            "plan_ms=",
            "commit_ms=",
            "applied"
        ]
        .iter()
        .all(|part| applied.contains(part)),
        "{applied}"
    );
    // Without DEED_LOG, nothing is logged.
    assert_eq!(workspace.deed(&["plan"]).ok().stderr, "");
}
