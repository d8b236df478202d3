//! The PostgreSQL store against a real server, one fresh database per test
//! (see [`super::testing`]). Without a server each test returns at once,
//! after one line saying how to enable them.

use super::testing::TestDatabase;
use super::*;
use crate::model::{Fields, Kind, State};
use crate::store::sled_store::tests::{commit_of, entry, filled_store, notification, sample_state};
use crate::store::{open, Access};

/// A fresh database, or return from the test when there is no server.
macro_rules! database {
    () => {
        match TestDatabase::create() {
            Some(database) => database,
            None => return,
        }
    };
}

fn writer(database: &TestDatabase) -> PostgresStore {
    PostgresStore::open_for_writing(&database.url, false).expect("open for writing")
}

/// The same commits as the sled `filled_store`.
fn filled(database: &TestDatabase) -> PostgresStore {
    let store = writer(database);
    let mut commit = commit_of(&sample_state());
    commit.history = vec![entry("research"), entry("lab")];
    commit.notifications = vec![
        notification("n-2", "2026-11-23T12:00:00Z"),
        notification("n-1", "2026-11-23T13:00:00Z"),
    ];
    store.commit(commit).expect("commit");
    store
}

fn dump_bytes(store: &dyn Store) -> Vec<u8> {
    let mut bytes = Vec::new();
    store.dump(&mut bytes).expect("dump");
    bytes
}

#[test]
fn every_kind_and_invoices_round_trip_through_commit_and_load() {
    let database = database!();
    let store = writer(&database);
    assert_eq!(store.load().expect("load"), State::default());
    let state = sample_state();
    store.commit(commit_of(&state)).expect("commit");
    assert_eq!(store.load().expect("load"), state);
    drop(store);
    let store = writer(&database);
    assert_eq!(store.load().expect("load after reopen"), state);
}

#[test]
fn commits_delete_objects_and_invoices_and_the_last_write_of_a_key_wins() {
    let database = database!();
    let store = filled(&database);
    let mut commit = Commit::default();
    commit
        .objects
        .push((Kind::Grant, "folder/fo-1:bob@acme.com".into(), None));
    commit.invoices.push(("inv-2026-10".into(), None));
    let research = sample_state().fields(Kind::Organization, "research");
    commit
        .objects
        .push((Kind::Organization, "lab".into(), research.clone()));
    commit
        .objects
        .push((Kind::Organization, "lab".into(), None));
    store.commit(commit).expect("commit");
    let mut expected = sample_state();
    expected.grants.clear();
    expected.invoices.remove("inv-2026-10");
    assert_eq!(store.load().expect("load"), expected);
}

#[test]
fn history_seqs_are_contiguous_across_commits_and_limit_keeps_the_last() {
    let database = database!();
    let store = writer(&database);
    assert!(store.history(None).expect("history").is_empty());
    for round in 0..3 {
        let commit = Commit {
            history: (0..4).map(|n| entry(&format!("org-{round}-{n}"))).collect(),
            ..Commit::default()
        };
        store.commit(commit).expect("commit");
    }
    drop(store);
    let store = writer(&database);
    store
        .commit(Commit {
            history: vec![entry("last")],
            ..Commit::default()
        })
        .expect("commit after reopen");
    let all = store.history(None).expect("history");
    assert_eq!(
        all.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        (1..=13).collect::<Vec<_>>()
    );
    assert_eq!(&*all[0].change.object, "org-0-0");
    let last = store.history(Some(3)).expect("history");
    assert_eq!(
        last.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        vec![11, 12, 13]
    );
    assert_eq!(&*last[2].change.object, "last");
    assert!(store.history(Some(0)).expect("history").is_empty());
    assert_eq!(store.history(Some(100)).expect("history").len(), 13);
}

#[test]
fn notifications_are_upserted_by_id_and_marked_delivered() {
    let database = database!();
    let store = filled(&database);
    let ids = |store: &PostgresStore| {
        store
            .outbox()
            .expect("outbox")
            .into_iter()
            .map(|n| (n.id, n.delivered))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&store),
        vec![("n-2".to_string(), false), ("n-1".to_string(), false)]
    );
    let mut replaced = notification("n-2", "2026-11-24T12:00:00Z");
    replaced.message = "replaced".into();
    store
        .commit(Commit {
            notifications: vec![replaced],
            ..Commit::default()
        })
        .expect("commit");
    let outbox = store.outbox().expect("outbox");
    assert_eq!(outbox.len(), 2);
    assert_eq!(
        (outbox[1].id.as_str(), outbox[1].message.as_str()),
        ("n-2", "replaced")
    );

    store
        .mark_delivered(&["n-1".to_string(), "unknown".to_string()])
        .expect("mark");
    assert_eq!(
        ids(&store),
        vec![("n-1".to_string(), true), ("n-2".to_string(), false)]
    );
    store.mark_delivered(&["n-1".to_string()]).expect("again");
    // Marking delivered does not make the next commit a conflict.
    store
        .commit(Commit {
            history: vec![entry("after delivery")],
            ..Commit::default()
        })
        .expect("commit after delivery");
    drop(store);
    let store = writer(&database);
    assert_eq!(
        ids(&store),
        vec![("n-1".to_string(), true), ("n-2".to_string(), false)]
    );
}

#[test]
fn a_commit_with_an_invalid_object_writes_nothing() {
    let database = database!();
    let store = filled(&database);
    let before = dump_bytes(&store);
    let mut bad = Fields::new();
    bad.insert("account".into(), "acme".into());
    bad.insert("owner".into(), "nobody at all".into());
    let commit = Commit {
        objects: vec![
            (Kind::User, "alice@acme.com".into(), None),
            (Kind::Asset, "dataset/ds-9".into(), Some(bad)),
        ],
        packed_assets: Vec::new(),
        invoices: vec![("inv-2026-10".into(), None)],
        history: vec![entry("lab")],
        notifications: vec![notification("n-3", "2026-11-23T12:00:00Z")],
        rest: None,
    };
    match store.commit(commit) {
        Err(StoreError::InvalidObject { kind, id, .. }) => {
            assert_eq!((kind, id.as_str()), (Kind::Asset, "dataset/ds-9"))
        }
        other => panic!("expected InvalidObject, got {other:?}"),
    }
    assert_eq!(dump_bytes(&store), before);
}

#[test]
fn a_failure_inside_the_transaction_writes_nothing() {
    let database = database!();
    let store = filled(&database);
    let before = dump_bytes(&store);
    // A NUL character passes serde but not PostgreSQL: the failure comes
    // after the deletes of the same commit were sent.
    let mut notification = notification("n-3", "2026-11-23T12:00:00Z");
    notification.message = "nul \u{0} here".into();
    let commit = Commit {
        objects: vec![(Kind::Grant, "folder/fo-1:bob@acme.com".into(), None)],
        packed_assets: Vec::new(),
        invoices: vec![("inv-2026-10".into(), None)],
        history: vec![entry("lab")],
        notifications: vec![notification],
        rest: None,
    };
    assert!(matches!(
        store.commit(commit),
        Err(StoreError::Postgres { .. })
    ));
    assert_eq!(dump_bytes(&store), before);
    // The store still works, and the seq did not move.
    store
        .commit(Commit {
            history: vec![entry("next")],
            ..Commit::default()
        })
        .expect("commit");
    assert_eq!(store.history(Some(1)).expect("history")[0].seq, 3);
}

#[test]
fn a_commit_after_another_process_wrote_is_a_conflict_and_writes_nothing() {
    let database = database!();
    let store = filled(&database);
    let state = store.load().expect("load");
    // Someone else (a deed whose advisory lock was lost with its
    // connection) commits meanwhile.
    database
        .client()
        .batch_execute(
            "UPDATE deed_meta SET version = version + 1; \
             DELETE FROM deed_objects WHERE kind = 'grant'",
        )
        .expect("write behind the store's back");
    let before = dump_bytes(&store);
    match store.commit(Commit {
        history: vec![entry("late")],
        ..Commit::default()
    }) {
        Err(error @ StoreError::Conflict { .. }) => {
            assert!(error.to_string().contains("changed while this apply ran"))
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(dump_bytes(&store), before);
    assert_ne!(store.load().expect("reload"), state);
    // Once loaded again, the commit goes through.
    store
        .commit(Commit {
            history: vec![entry("late")],
            ..Commit::default()
        })
        .expect("commit after reload");
}

#[test]
fn a_database_of_a_newer_schema_is_refused_for_reading_and_writing() {
    let database = database!();
    drop(writer(&database));
    database
        .client()
        .execute(
            "INSERT INTO deed_schema_migrations (version, name) VALUES ($1, 'future')",
            &[&(POSTGRES_SCHEMA_VERSION as i32 + 1)],
        )
        .expect("insert");
    for result in [
        PostgresStore::open_for_writing(&database.url, false).map(drop),
        PostgresStore::open_for_reading(&database.url).map(drop),
    ] {
        match result {
            Err(StoreError::NewerSchema {
                found, supported, ..
            }) => assert_eq!(
                (found, supported),
                (POSTGRES_SCHEMA_VERSION + 1, POSTGRES_SCHEMA_VERSION)
            ),
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }
}

#[test]
fn a_second_writer_is_in_use_at_once_readers_are_not_and_wait_waits() {
    let database = database!();
    let store = filled(&database);
    let started = std::time::Instant::now();
    match PostgresStore::open_for_writing(&database.url, false) {
        Err(StoreError::InUse { .. }) => {}
        other => panic!("expected InUse, got {:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let reader = open(&database.url, Access::Read).expect("a reader takes no lock");
    assert_eq!(reader.load().expect("load"), sample_state());
    assert!(matches!(
        reader.commit(commit_of(&sample_state())),
        Err(StoreError::OpenedForReading { .. })
    ));
    assert!(matches!(
        reader.mark_delivered(&["n-1".to_string()]),
        Err(StoreError::OpenedForReading { .. })
    ));
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(store);
    });
    let started = std::time::Instant::now();
    let store = PostgresStore::open_for_writing(&database.url, true).expect("open with wait");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    holder.join().expect("holder");
    drop(store);
}

#[test]
fn reading_a_database_without_deed_tables_is_an_empty_state_and_creates_nothing() {
    let database = database!();
    let store = open(&database.url, Access::Read).expect("open");
    assert_eq!(store.load().expect("load"), State::default());
    assert!(store.history(None).expect("history").is_empty());
    let row = database
        .client()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'deed%'",
            &[],
        )
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 0);
}

#[test]
fn a_postgres_state_dumps_the_same_bytes_as_a_sled_state_with_the_same_data() {
    let database = database!();
    let folder = tempfile::tempdir().expect("tempdir");
    let sled = filled_store(&folder.path().join("sled"));
    let postgres = filled(&database);
    let bytes = dump_bytes(&sled);
    assert_eq!(dump_bytes(&postgres), bytes);
    assert_eq!(postgres.load().expect("load"), sled.load().expect("load"));
    assert_eq!(
        postgres.history(None).expect("history"),
        sled.history(None).expect("history")
    );
    assert_eq!(
        postgres.outbox().expect("outbox"),
        sled.outbox().expect("outbox")
    );

    // Restored from the sled dump into another database: the same bytes,
    // and the seq counter continues after the restored history.
    let other = database!();
    let dump_path = folder.path().join("state.dump");
    std::fs::write(&dump_path, &bytes).expect("write");
    crate::store::restore(&other.url, &dump_path, false).expect("restore");
    let restored = writer(&other);
    assert_eq!(dump_bytes(&restored), bytes);
    restored
        .commit(Commit {
            history: vec![entry("next")],
            ..Commit::default()
        })
        .expect("commit");
    assert_eq!(restored.history(Some(1)).expect("history")[0].seq, 3);
    // Restoring into it again is refused: it is not empty.
    assert!(matches!(
        restored.restore(&dump_path),
        Err(StoreError::NotEmpty { .. })
    ));
}

#[test]
fn a_bad_dump_line_restores_nothing() {
    let database = database!();
    let folder = tempfile::tempdir().expect("tempdir");
    let sled = filled_store(&folder.path().join("sled"));
    let text = String::from_utf8(dump_bytes(&sled)).expect("utf-8");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.push("not json");
    let dump_path = folder.path().join("bad.dump");
    std::fs::write(&dump_path, lines.join("\n")).expect("write");
    let store = writer(&database);
    match store.restore(&dump_path) {
        Err(StoreError::BadDump { line, .. }) => assert_eq!(line, lines.len()),
        other => panic!("expected BadDump, got {other:?}"),
    }
    assert_eq!(
        dump_bytes(&store),
        b"{\"deed_dump\":1,\"schema_version\":1}\n".to_vec()
    );
}

#[test]
fn migrate_copies_sled_to_postgres_and_back_with_equal_dumps() {
    let database = database!();
    let folder = tempfile::tempdir().expect("tempdir");
    let source = folder.path().join("sled");
    drop(filled_store(&source));
    let source = source.to_str().expect("utf-8");
    let migrated = crate::store::migrate(source, &database.url, false).expect("to postgres");
    assert_eq!(migrated.records, 18);
    let back = folder.path().join("back");
    let back = back.to_str().expect("utf-8");
    crate::store::migrate(&database.url, back, false).expect("back to sled");
    let dump = |location: &str| dump_bytes(open(location, Access::Read).expect("open").as_ref());
    assert_eq!(dump(&database.url), dump(source));
    assert_eq!(dump(back), dump(source));
    // A target that holds something is refused, and so is the source itself.
    assert!(matches!(
        crate::store::migrate(source, &database.url, false),
        Err(StoreError::NotEmpty { .. })
    ));
    assert!(matches!(
        crate::store::migrate(source, source, false),
        Err(StoreError::Unsupported { .. })
    ));
}

#[test]
fn a_read_only_role_reads_with_the_documented_grants_and_cannot_write() {
    let database = database!();
    drop(filled(&database));
    let role = format!("deed_reader_{}", std::process::id());
    let mut admin = database.client();
    // The grants the README documents.
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; \
             GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
        ))
        .expect("create role");
    let url = database.url.replacen("://root@", &format!("://{role}@"), 1);
    let result = std::panic::catch_unwind(|| {
        let reader = open(&url, Access::Read).expect("read as the reader");
        assert_eq!(reader.load().expect("load"), sample_state());
        assert_eq!(reader.history(None).expect("history").len(), 2);
        let mut bytes = Vec::new();
        reader.dump(&mut bytes).expect("dump");
        match PostgresStore::open_for_writing(&url, false) {
            // It may take the advisory lock, but not write the meta row.
            Ok(store) => assert!(matches!(
                store.commit(Commit {
                    history: vec![entry("x")],
                    ..Commit::default()
                }),
                Err(StoreError::Postgres { .. })
            )),
            Err(error) => assert!(matches!(error, StoreError::Postgres { .. }), "{error}"),
        }
    });
    let _ = admin.batch_execute(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}; \
         REVOKE ALL ON SCHEMA public FROM {role};"
    ));
    drop(admin);
    drop(database);
    if let Some(mut admin) = super::testing::server().and_then(|url| {
        url.parse::<::postgres::Config>()
            .ok()
            .and_then(|config| config.connect(NoTls).ok())
    }) {
        let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}"));
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn passwords_are_hidden_in_locations() {
    assert_eq!(
        redact("postgres://deed:s3cret@db:5432/deed?sslmode=disable"),
        "postgres://deed:***@db:5432/deed?sslmode=disable"
    );
    assert_eq!(
        redact("postgresql://db/deed?user=deed&password=s3cret"),
        "postgresql://db/deed?user=deed&password=***"
    );
    assert_eq!(redact("postgres://deed@db/deed"), "postgres://deed@db/deed");
    assert_eq!(
        super::testing::with_database("postgres://root@h:1/test?options=-cx", "other"),
        "postgres://root@h:1/other?options=-cx"
    );
}

#[test]
fn a_search_path_in_the_url_keeps_the_state_in_that_schema() {
    let database = database!();
    database
        .client()
        .batch_execute("CREATE SCHEMA deed_a; CREATE SCHEMA deed_b")
        .expect("schemas");
    let in_schema = |schema: &str| format!("{}?options=-csearch_path%3D{schema}", database.url);
    let a = PostgresStore::open_for_writing(&in_schema("deed_a"), false).expect("a");
    // Different schemas are different states, with their own lock.
    let b = PostgresStore::open_for_writing(&in_schema("deed_b"), false).expect("b");
    a.commit(commit_of(&sample_state())).expect("commit");
    assert_eq!(b.load().expect("load"), State::default());
    let row = database
        .client()
        .query_one("SELECT count(*) FROM deed_a.deed_objects", &[])
        .expect("count");
    assert!(row.get::<_, i64>(0) > 0);
}

/// A lease of `holder` on `database`, with a time-to-live of `ttl`.
fn lease_of(database: &TestDatabase, holder: &str, ttl: std::time::Duration) -> lease::Lease {
    lease::Lease::new(&database.url, lease::DAEMON_LEASE, holder, ttl)
}

fn generation(observed: &lease::Observed) -> Option<i64> {
    match observed.lease {
        lease::LeaseState::Held { generation, .. } => Some(generation),
        _ => None,
    }
}

#[test]
fn a_lease_is_held_by_one_process_renewed_by_it_and_taken_over_once_expired() {
    let database = database!();
    let short = std::time::Duration::from_millis(800);
    let mut a = lease_of(&database, "a", short);
    let mut b = lease_of(&database, "b", short);
    // The first tick creates deed's tables, as a writer would.
    let first = a.acquire_or_renew().expect("a acquires");
    assert_eq!(generation(&first), Some(1));
    assert_eq!(first.state_version, Some(0));
    let seen = b.acquire_or_renew().expect("b ticks");
    assert_eq!(
        seen.lease,
        lease::LeaseState::HeldBy {
            holder: "a".to_string(),
            generation: 1
        }
    );
    assert!(b.fence().is_none());
    // Renewals keep the generation and the lease.
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(generation(&a.acquire_or_renew().expect("renew")), Some(1));
        assert!(generation(&b.acquire_or_renew().expect("b ticks")).is_none());
    }
    // a stops renewing: once expired, b takes it at the next generation.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(
        generation(&b.acquire_or_renew().expect("b takes over")),
        Some(2)
    );
    // a cannot renew a lease that moved on.
    let late = a.acquire_or_renew().expect("a ticks");
    assert_eq!(
        late.lease,
        lease::LeaseState::HeldBy {
            holder: "b".to_string(),
            generation: 2
        }
    );
    assert!(a.fence().is_none());
    // A release hands it over at once.
    b.release().expect("release");
    assert_eq!(
        generation(&a.acquire_or_renew().expect("a takes it")),
        Some(3)
    );
    let mut watcher = lease_of(&database, "watcher", short);
    assert_eq!(
        watcher.observe().expect("observe").lease,
        lease::LeaseState::HeldBy {
            holder: "a".to_string(),
            generation: 3
        }
    );
}

#[test]
fn a_commit_fenced_by_a_stale_generation_is_refused_and_writes_nothing() {
    let database = database!();
    let long = std::time::Duration::from_secs(60);
    let mut a = lease_of(&database, "a", long);
    a.acquire_or_renew().expect("a acquires");
    let stale = a.fence().expect("a holds the lease");
    assert_eq!(stale.generation, 1);
    let store = filled(&database);
    store.set_fence(Some(stale.clone()));
    store.load().expect("load");
    store
        .commit(Commit {
            history: vec![entry("while-leading")],
            ..Commit::default()
        })
        .expect("a commit under a live lease goes through");

    // Another daemon takes over (a's lease expired meanwhile).
    database
        .client()
        .batch_execute(
            "UPDATE deed_leases SET holder = 'b', generation = generation + 1, \
             expires_at = now() + interval '1 minute'",
        )
        .expect("take over");
    let before = dump_bytes(&store);
    store.load().expect("load");
    match store.commit(Commit {
        history: vec![entry("stale")],
        ..commit_of(&State::default())
    }) {
        Err(error @ StoreError::Fenced { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("moved from generation 1 to 2, held by b"),
                "{message}"
            );
            assert!(message.contains("nothing was written"), "{message}");
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert!(matches!(
        store.mark_delivered(&["n-1".to_string()]),
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(dump_bytes(&store), before);

    // The current generation commits; an expired one does not.
    let current = Fence {
        holder: "b".to_string(),
        generation: 2,
        ..stale
    };
    store.set_fence(Some(current.clone()));
    store
        .commit(Commit {
            history: vec![entry("new-leader")],
            ..Commit::default()
        })
        .expect("the new leader commits");
    database
        .client()
        .batch_execute("UPDATE deed_leases SET expires_at = now() - interval '1 second'")
        .expect("expire");
    match store.commit(Commit {
        history: vec![entry("expired")],
        ..Commit::default()
    }) {
        Err(error @ StoreError::Fenced { .. }) => {
            assert!(error.to_string().contains("expired"), "{error}")
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    // Without a fence (a plain `deed apply`) the store commits as before.
    store.set_fence(None);
    store
        .commit(Commit {
            history: vec![entry("unfenced")],
            ..Commit::default()
        })
        .expect("unfenced commit");
    let objects: Vec<String> = store
        .history(None)
        .expect("history")
        .into_iter()
        .map(|entry| entry.change.object.into_string())
        .collect();
    assert_eq!(
        objects,
        ["research", "lab", "while-leading", "new-leader", "unfenced"]
    );
}

#[test]
fn a_takeover_waits_for_a_fenced_commit_in_progress() {
    let database = database!();
    let mut a = lease_of(&database, "a", std::time::Duration::from_millis(300));
    a.acquire_or_renew().expect("a acquires");
    let fence = a.fence().expect("held");
    drop(writer(&database));
    // A commit's transaction holds the lease row FOR SHARE, as commit does.
    let mut client = database.client();
    let mut tx = client.transaction().expect("begin");
    let row = tx
        .query_one(
            "SELECT generation FROM deed_leases WHERE name = $1 FOR SHARE",
            &[&fence.lease],
        )
        .expect("lock the lease");
    assert_eq!(row.get::<_, i64>(0), 1);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let url = database.url.clone();
    let taker = std::thread::spawn(move || {
        let mut b = lease::Lease::new(
            &url,
            lease::DAEMON_LEASE,
            "b",
            std::time::Duration::from_secs(60),
        );
        let started = std::time::Instant::now();
        let observed = b.acquire_or_renew().expect("b ticks");
        (generation(&observed), started.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    tx.commit().expect("end the commit");
    let (taken, waited) = taker.join().expect("taker");
    assert_eq!(taken, Some(2));
    assert!(
        waited >= std::time::Duration::from_millis(400),
        "{waited:?}"
    );
}

/// Parts of a commit, handed out in order (the last one may fail).
struct QueuedParts(std::collections::VecDeque<Result<Commit<'static>, StoreError>>);

impl crate::store::MakeParts for QueuedParts {
    fn next_part(
        &mut self,
        _changes: &[crate::plan::Change],
        _state: &State,
    ) -> Option<Result<Commit<'static>, StoreError>> {
        self.0.pop_front()
    }
}

/// A commit of `asset` tagged `part=0`, then parts tagging it `part=N`,
/// each with a history entry, then `last` (if any).
fn parted_commit<'a>(
    state: &'a State,
    asset: &str,
    parts: usize,
    last: Option<Result<Commit<'static>, StoreError>>,
) -> Commit<'a> {
    let tagged = |n: usize| {
        let mut object = state.assets.get(asset).expect("asset");
        object.tags.insert("part".into(), n.to_string());
        crate::model::to_fields(&object)
    };
    let mut queue: std::collections::VecDeque<_> = (1..=parts)
        .map(|n| {
            Ok(Commit {
                objects: vec![(Kind::Asset, asset.to_string(), Some(tagged(n)))],
                history: vec![entry(&format!("part {n}"))],
                ..Commit::default()
            })
        })
        .collect();
    queue.extend(last);
    Commit {
        objects: vec![(Kind::Asset, asset.to_string(), Some(tagged(0)))],
        history: vec![entry("part 0")],
        rest: Some(crate::store::Parts::new(
            2 * parts,
            &[],
            state,
            QueuedParts(queue),
        )),
        ..Commit::default()
    }
}

#[test]
fn a_commit_in_parts_is_written_in_one_transaction_and_its_last_write_wins() {
    let database = database!();
    let store = filled(&database);
    let state = store.load().expect("load");
    let asset = state.assets.keys().next().expect("an asset").clone();
    let history_before = store.history(None).expect("history").len();
    store
        .commit(parted_commit(&state, &asset, 3, None))
        .expect("commit");
    let after = store.load().expect("load");
    assert_eq!(
        after
            .assets
            .get(&asset)
            .expect("asset")
            .tags
            .get("part")
            .map(String::as_str),
        Some("3")
    );
    let history = store.history(None).expect("history");
    assert_eq!(history.len(), history_before + 4);
    assert_eq!(
        history.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        (1..=history.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(&*history[history_before + 3].change.object, "part 3");
}

#[test]
fn a_commit_whose_later_part_fails_writes_none_of_its_parts() {
    let database = database!();
    let store = filled(&database);
    let state = store.load().expect("load");
    let asset = state.assets.keys().next().expect("an asset").clone();
    let before = dump_bytes(&store);
    let mut bad = Fields::new();
    bad.insert("account".into(), "acme".into());
    bad.insert("owner".into(), "nobody at all".into());
    let invalid = Commit {
        objects: vec![(Kind::Asset, "dataset/ds-9".into(), Some(bad))],
        ..Commit::default()
    };
    match store.commit(parted_commit(&state, &asset, 2, Some(Ok(invalid)))) {
        Err(StoreError::InvalidObject { id, .. }) => assert_eq!(id, "dataset/ds-9"),
        other => panic!("expected InvalidObject, got {other:?}"),
    }
    assert_eq!(dump_bytes(&store), before);
    let failing = Err(StoreError::Unsupported {
        location: "test".into(),
        message: "a part failed".into(),
    });
    assert!(store
        .commit(parted_commit(&state, &asset, 2, Some(failing)))
        .is_err());
    assert_eq!(dump_bytes(&store), before);
    // The store is still usable, and nothing was left half-done.
    store
        .commit(parted_commit(&state, &asset, 1, None))
        .expect("commit");
    assert_eq!(
        store
            .load()
            .expect("load")
            .assets
            .get(&asset)
            .expect("asset")
            .tags
            .get("part")
            .map(String::as_str),
        Some("1")
    );
}
