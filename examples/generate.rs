//! Workload generator for the scale benchmark (`benches/scale.sh`) and the
//! crash-injection test.
//!
//! ```text
//! cargo run --release --example generate -- --scale L|M|S|XS --out DIR [--seed N]
//! ```
//!
//! Writes, deterministically for a given scale and seed:
//! - `DIR/specs/region-NN/aNNNN.yaml`: one file per account. The first
//!   document is the account's header, users (with roles and names),
//!   organizations with products and access, licenses with terms, two pinned
//!   assets and, in one account of a hundred, a `reassign` rule; the second
//!   document is the *groups and memberships of the next account*, so that
//!   every account is split over two files;
//! - `DIR/inventory.jsonl`: assets of every kind (files in folders, proofs
//!   with versions, tags), one invoice per product, one credit balance per
//!   account;
//! - `DIR/reassign.yaml`: an extra spec file with one fragment per account
//!   whose `reassign` rules cover every user-owned asset of the inventory
//!   (copy it into the specs folder for the reassign benchmark);
//! - `DIR/workload.json`: the counts.
//!
//! Workload L (`--scale L`) is the one of issue 6: 1,000 spec files
//! (~21 MB), 1,000 accounts, 100k users, 10k groups, 300k memberships, 50k
//! licenses and 1M assets. M is a tenth of it, S a hundredth, XS a
//! thousandth (one account, for CI). Every account has the same shape; the
//! scale is the number of accounts.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Per account: 100 users, 10 groups of 30 members, 2 organizations of 10
/// products, 50 licenses, 1,000 inventory assets, 2 pins.
const USERS: usize = 100;
const GROUPS: usize = 10;
const MEMBERS_PER_GROUP: usize = 30;
const ORGANIZATIONS: usize = 2;
const PRODUCTS_PER_ORGANIZATION: usize = 10;
const LICENSES: usize = 50;
const ASSETS: usize = 1_000;
const FOLDERS: usize = 20;
const PINS: usize = 2;
/// Users u00..u09 create the assets (the rest only read them).
const PRODUCERS: usize = 10;
/// Accounts per `region-NN` folder.
const ACCOUNTS_PER_FOLDER: usize = 50;

const GIVEN: [&str; 16] = [
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil",
];
const FAMILY: [&str; 16] = [
    "Doe", "Moe", "Smith", "Jones", "Garcia", "Martin", "Dubois", "Rossi", "Novak", "Kowalski",
    "Schmidt", "Jensen", "Silva", "Tanaka", "Nguyen", "Okafor",
];
const SKUS: [&str; 4] = ["omiq-pro", "omiq-basic", "kdrive-2tb", "kmeet-team"];
const PROJECTS: [&str; 8] = [
    "apollo", "borealis", "cassini", "dione", "europa", "fermi", "galileo", "hubble",
];

fn main() {
    let mut scale = String::from("XS");
    let mut out: Option<PathBuf> = None;
    let mut seed: u64 = 6;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scale" => {
                scale = args
                    .next()
                    .unwrap_or_else(|| usage("--scale needs a value"))
            }
            "--out" => {
                out = Some(PathBuf::from(
                    args.next().unwrap_or_else(|| usage("--out needs a value")),
                ))
            }
            "--seed" => {
                seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage("--seed needs a number"))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let accounts = match scale.to_ascii_uppercase().as_str() {
        "L" => 1_000,
        "M" => 100,
        "S" => 10,
        "XS" => 1,
        other => match other.strip_prefix("ACCOUNTS=").and_then(|n| n.parse().ok()) {
            Some(n) if n > 0 => n,
            _ => usage(&format!("unknown scale {other}")),
        },
    };
    let out = out.unwrap_or_else(|| usage("--out DIR is required"));
    let workload = Workload { accounts, seed };
    if let Err(error) = workload.write(&out) {
        eprintln!("generate: {error}");
        std::process::exit(1);
    }
}

fn usage(message: &str) -> ! {
    if !message.is_empty() {
        eprintln!("generate: {message}");
    }
    eprintln!(
        "usage: cargo run --release --example generate -- --scale L|M|S|XS|accounts=N --out DIR [--seed N]"
    );
    std::process::exit(2)
}

/// SplitMix64: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03)))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Workload {
    accounts: usize,
    seed: u64,
}

fn account(i: usize) -> String {
    format!("a{i:04}")
}

fn domain(i: usize) -> String {
    format!("a{i:04}.ex.com")
}

fn user(i: usize, u: usize) -> String {
    format!("u{u:02}@{}", domain(i))
}

/// The hub of account `i`, if it is a satellite: every 50th account is a hub
/// for the four after it.
fn hub_of(i: usize, accounts: usize) -> Option<usize> {
    let base = i - i % 50;
    (i % 50 >= 1 && i % 50 <= 4 && base < accounts && base != i).then_some(base)
}

/// Two accounts in each 50 that consent to each other.
fn partner_of(i: usize, accounts: usize) -> Option<usize> {
    match i % 50 {
        10 if i + 1 < accounts => Some(i + 1),
        11 => Some(i - 1),
        _ => None,
    }
}

/// The base spec has a reassign rule in one account of a hundred (from u09
/// to group team-1).
fn has_base_rule(i: usize) -> bool {
    i % 100 == 7
}

impl Workload {
    fn write(&self, out: &Path) -> std::io::Result<()> {
        let specs = out.join("specs");
        if specs.exists() {
            fs::remove_dir_all(&specs)?;
        }
        fs::create_dir_all(&specs)?;
        let mut spec_bytes = 0usize;
        for i in 0..self.accounts {
            let folder = specs.join(format!("region-{:02}", i / ACCOUNTS_PER_FOLDER));
            fs::create_dir_all(&folder)?;
            let mut text = self.main_fragment(i);
            // The groups of the next account (of account 0 in the last file).
            let next = (i + 1) % self.accounts;
            text.push_str("---\n");
            text.push_str(&self.groups_fragment(next));
            spec_bytes += text.len();
            fs::write(folder.join(format!("{}.yaml", account(i))), text)?;
        }
        let reassign = self.reassign_file();
        fs::write(out.join("reassign.yaml"), &reassign)?;
        let (assets, invoices) = self.write_inventory(&out.join("inventory.jsonl"))?;
        let summary = format!(
            "{{\"accounts\": {a}, \"spec_files\": {a}, \"spec_bytes\": {spec_bytes}, \"users\": {u}, \"groups\": {g}, \"memberships\": {m}, \"organizations\": {o}, \"products\": {p}, \"licenses\": {l}, \"pins\": {pins}, \"inventory_assets\": {assets}, \"invoices\": {invoices}, \"reassign_bytes\": {r}}}\n",
            a = self.accounts,
            u = self.accounts * USERS,
            g = self.accounts * GROUPS,
            m = self.accounts * GROUPS * MEMBERS_PER_GROUP,
            o = self.accounts * ORGANIZATIONS,
            p = self.accounts * ORGANIZATIONS * PRODUCTS_PER_ORGANIZATION,
            l = self.accounts * LICENSES,
            pins = self.accounts * PINS,
            r = reassign.len(),
        );
        fs::write(out.join("workload.json"), &summary)?;
        print!("{summary}");
        Ok(())
    }

    /// Header, users, organizations, licenses, pins (and a reassign rule).
    fn main_fragment(&self, i: usize) -> String {
        let mut rng = Rng::new(self.seed, i as u64);
        let mut s = String::with_capacity(24 * 1024);
        let id = account(i);
        let _ = writeln!(s, "# Account {id}: generated by examples/generate.rs");
        let _ = writeln!(s, "account: {id}");
        let _ = writeln!(s, "domains: [{}]", domain(i));
        if let Some(hub) = hub_of(i, self.accounts) {
            let _ = writeln!(s, "hub: {}", account(hub));
        }
        if let Some(partner) = partner_of(i, self.accounts) {
            let _ = writeln!(s, "connections: [{}]", account(partner));
        }
        if i.is_multiple_of(3) {
            let _ = writeln!(s, "invite_ttl: 72h");
        }
        if i.is_multiple_of(5) {
            let _ = writeln!(s, "successor: {}", user(i, 1));
        }
        s.push_str("users:\n");
        for u in 0..USERS {
            let role = match u {
                0 => "owner",
                1..=3 => "admin",
                4 => "billing-admin",
                90.. => "viewer",
                _ => "member",
            };
            let given = GIVEN[rng.below(GIVEN.len())];
            let family = FAMILY[rng.below(FAMILY.len())];
            let _ = writeln!(
                s,
                "  {}: {{role: {role}, name: {given} {family}}}",
                user(i, u)
            );
        }
        s.push_str("organizations:\n");
        for o in 0..ORGANIZATIONS {
            let _ = writeln!(s, "  org-{id}-{o}:");
            s.push_str("    products:\n");
            for p in 0..PRODUCTS_PER_ORGANIZATION {
                let a = (o * 31 + p * 7) % USERS;
                let b = (a + 13) % USERS;
                let _ = writeln!(
                    s,
                    "      prod-{id}-{o}-{p}: {{name: {} {p}, access: [{}, {}]}}",
                    SKUS[(o + p) % SKUS.len()],
                    user(i, a),
                    user(i, b)
                );
            }
        }
        s.push_str("licenses:\n");
        for l in 0..LICENSES {
            let sku = SKUS[l % SKUS.len()];
            let assignee = user(i, (l * 2 + 1) % USERS);
            if l % 5 == 4 {
                // A free seat, no term.
                let _ = writeln!(s, "  lic-{id}-{l:02}: {{product: {sku}}}");
            } else {
                let _ = writeln!(
                    s,
                    "  lic-{id}-{l:02}: {{product: {sku}, assignee: {assignee}, expires: 2027-{:02}-{:02}}}",
                    1 + rng.below(12),
                    1 + rng.below(28)
                );
            }
        }
        s.push_str("assets:\n");
        for p in 0..PINS {
            let _ = writeln!(
                s,
                "  dataset/pin-{id}-{p}: {{owner: \"group:team-{p}\", tags: {{pinned-by: {}, project: {}}}}}",
                user(i, 1),
                PROJECTS[rng.below(PROJECTS.len())]
            );
        }
        if has_base_rule(i) {
            s.push_str("reassign:\n");
            let _ = writeln!(s, "  - from: user:{}", user(i, 9));
            s.push_str("    to: group:team-1\n");
            s.push_str("    kinds: [dataset, workflow, file, proof, view]\n");
            let _ = writeln!(s, "    tag: {{original-owner: {}}}", user(i, 9));
        }
        s
    }

    /// Groups and memberships of account `i`.
    fn groups_fragment(&self, i: usize) -> String {
        let mut rng = Rng::new(self.seed ^ 0x5eed, i as u64);
        let mut s = String::with_capacity(16 * 1024);
        let id = account(i);
        let _ = writeln!(
            s,
            "# Teams of {id} (kept in the file of the previous account)"
        );
        let _ = writeln!(s, "account: {id}");
        s.push_str("groups:\n");
        for g in 0..GROUPS {
            let _ = writeln!(s, "  team-{g}:");
            s.push_str("    members:\n");
            let start = rng.below(USERS);
            for m in 0..MEMBERS_PER_GROUP {
                let u = (start + m * 3) % USERS;
                let role = if m < 2 { "admin" } else { "member" };
                let _ = writeln!(s, "      {}: {role}", user(i, u));
            }
        }
        s
    }

    /// One fragment per account, rules from every producer to team-0:
    /// covers every user-owned inventory asset (nearly all of them).
    fn reassign_file(&self) -> String {
        let mut s = String::new();
        s.push_str("# The reassign benchmark: every asset a producer owns goes to team-0.\n");
        for i in 0..self.accounts {
            if i > 0 {
                s.push_str("---\n");
            }
            let _ = writeln!(s, "account: {}", account(i));
            s.push_str("reassign:\n");
            for u in 0..PRODUCERS {
                if u == 9 && has_base_rule(i) {
                    continue;
                }
                let _ = writeln!(
                    s,
                    "  - {{from: \"user:{}\", to: \"group:team-0\", tag: {{reorg: \"2026\", original-owner: {}}}}}",
                    user(i, u),
                    user(i, u)
                );
            }
        }
        s
    }

    /// Assets, invoices, credits. Returns (assets, invoices).
    fn write_inventory(&self, path: &Path) -> std::io::Result<(usize, usize)> {
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
        let (mut assets, mut invoices) = (0, 0);
        for i in 0..self.accounts {
            let mut rng = Rng::new(self.seed ^ 0x1a7e, i as u64);
            let id = account(i);
            // Producers, skewed: u00 creates the most.
            let producer = |rng: &mut Rng| {
                let a = rng.below(PRODUCERS);
                let b = rng.below(PRODUCERS);
                a.min(b)
            };
            for f in 0..FOLDERS {
                let owner = user(i, producer(&mut rng));
                writeln!(
                    out,
                    r#"{{"type":"asset","id":"folder/{id}-f{f:02}","account":"{id}","owner":"user:{owner}","tags":{{"project":"{}"}}}}"#,
                    PROJECTS[f % PROJECTS.len()]
                )?;
                assets += 1;
            }
            for n in FOLDERS..ASSETS {
                let owner_index = producer(&mut rng);
                let owner = user(i, owner_index);
                let kind_roll = rng.below(100);
                let kind = match kind_roll {
                    0..=29 => "file",
                    30..=49 => "dataset",
                    50..=64 => "workflow",
                    65..=79 => "proof",
                    _ => "view",
                };
                let mut line = format!(
                    r#"{{"type":"asset","id":"{kind}/{id}-{n:04}","account":"{id}","owner":"user:{owner}""#
                );
                if kind == "file" {
                    let _ = write!(
                        line,
                        r#","folder":"folder/{id}-f{:02}""#,
                        rng.below(FOLDERS)
                    );
                }
                if kind == "proof" {
                    let other = user(i, rng.below(PRODUCERS));
                    let _ = write!(line, r#","versions":["{owner}","{other}","{owner}"]"#);
                }
                if rng.below(4) == 0 {
                    // Created by someone else, owned by the producer.
                    let _ = write!(line, r#","creator":"{}""#, user(i, 10 + rng.below(80)));
                }
                if rng.below(3) == 0 {
                    let _ = write!(
                        line,
                        r#","tags":{{"project":"{}","cost-center":"cc-{}"}}"#,
                        PROJECTS[rng.below(PROJECTS.len())],
                        rng.below(40)
                    );
                }
                line.push('}');
                writeln!(out, "{line}")?;
                assets += 1;
            }
            for o in 0..ORGANIZATIONS {
                for p in 0..PRODUCTS_PER_ORGANIZATION {
                    writeln!(
                        out,
                        r#"{{"type":"invoice","id":"inv-{id}-{o}-{p}","product":"prod-{id}-{o}-{p}","organization":"org-{id}-{o}"}}"#
                    )?;
                    invoices += 1;
                }
            }
            writeln!(
                out,
                r#"{{"type":"credits","account":"{id}","balance":{}}}"#,
                100 * rng.below(1000)
            )?;
        }
        out.flush()?;
        Ok((assets, invoices))
    }
}
