//! The floors of the scale benchmark (`benches/scale.sh`): the least work
//! that a command of deed could possibly do on the same data, measured on
//! the same machine in the same run, so that deed's times can be given as
//! ratios.
//!
//! ```text
//! floors parse SPECS_DIR        serde_yaml over every document of every spec
//!                               file into deed's own `Fragment` structs, one
//!                               thread (no key index, no validation, no merge)
//! floors scan STATE_DIR         open a copy of a deed sled state and iterate
//!                               every object and invoice record, the records
//!                               a plan reads (no decoding; history and
//!                               outbox are not read)
//! floors rewrite STATE_DIR N    open a copy of a deed sled state and rewrite
//!                               the values of N asset records (fewer if the
//!                               state holds fewer), in batches of 250
//!                               (`--batch B`), then flush; with `--history`,
//!                               each batch also holds, per asset, a record
//!                               the size of the history entry the contract
//!                               asks deed to keep for each change (a
//!                               reference for what deed must write, not the
//!                               issue's floor); with `--batch 0`, no
//!                               batches: each record is set on its own,
//!                               sled's fastest way (a reference too, since
//!                               the issue's floor is batched)
//! ```
//!
//! Each prints one line `floor=NAME seconds=S items=N` (the time measured
//! inside the process, after start-up); the benchmark script times the
//! processes from outside as well.

use std::path::Path;
use std::time::Instant;

use serde::Deserialize;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("parse") if args.len() == 2 => parse(Path::new(&args[1])),
        Some("scan") if args.len() == 2 => scan(Path::new(&args[1])),
        Some("rewrite") if args.len() >= 3 => {
            let n: usize = args[2].parse().unwrap_or_else(|_| usage());
            let (mut batch, mut history) = (250, false);
            let mut options = args[3..].iter();
            while let Some(option) = options.next() {
                match option.as_str() {
                    "--batch" => {
                        batch = options
                            .next()
                            .and_then(|b| b.parse().ok())
                            .unwrap_or_else(|| usage())
                    }
                    "--history" => history = true,
                    _ => usage(),
                }
            }
            rewrite(Path::new(&args[1]), n, batch, history)
        }
        _ => usage(),
    };
    if let Err(error) = result {
        eprintln!("floors: {error}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: floors parse SPECS_DIR | floors scan STATE_DIR | floors rewrite STATE_DIR N [--batch B] [--history]"
    );
    std::process::exit(2)
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Reads the files as deed does (sorted, skipping what it skips), then
/// deserializes every document into `deed::spec::Fragment` on one thread.
fn parse(specs: &Path) -> Result<()> {
    let start = Instant::now();
    let (files, diagnostics) = deed::spec::read_tree(specs);
    if !diagnostics.is_empty() {
        return Err(format!("reading the specs: {:?}", diagnostics[0]).into());
    }
    let read = start.elapsed();
    let mut documents = 0usize;
    let mut bytes = 0usize;
    for file in &files {
        bytes += file.text.len();
        for document in serde_yaml::Deserializer::from_str(&file.text) {
            let fragment = Option::<deed::spec::Fragment>::deserialize(document)
                .map_err(|error| format!("{}: {error}", file.path))?;
            documents += usize::from(fragment.is_some());
        }
    }
    let total = start.elapsed();
    println!(
        "floor=parse seconds={:.3} items={documents} files={} bytes={bytes} read_seconds={:.3}",
        total.as_secs_f64(),
        files.len(),
        read.as_secs_f64()
    );
    Ok(())
}

fn open(state: &Path) -> Result<sled::Db> {
    if !state.join("db").is_file() {
        return Err(format!("{} is not a sled state", state.display()).into());
    }
    Ok(sled::Config::new().path(state).open()?)
}

/// Opens the database and iterates every object and invoice (the `o\0`
/// and `i\0` prefixes of deed's layout).
fn scan(state: &Path) -> Result<()> {
    let start = Instant::now();
    let db = open(state)?;
    let (mut items, mut bytes) = (0usize, 0usize);
    for prefix in [&b"o\0"[..], &b"i\0"[..]] {
        for item in db.scan_prefix(prefix) {
            let (key, value) = item?;
            items += 1;
            bytes += key.len() + value.len();
        }
    }
    let total = start.elapsed();
    println!(
        "floor=scan seconds={:.3} items={items} bytes={bytes}",
        total.as_secs_f64()
    );
    Ok(())
}

/// Rewrites the values of up to `n` asset records in batches of `batch`
/// (each value gets a changed tag), then flushes. With `history`, each
/// rewrite also adds a record shaped like deed's history entry of the
/// transfer (the old and the new value inside; deed's history keys, after
/// the last one in the state).
fn rewrite(state: &Path, n: usize, batch_size: usize, history: bool) -> Result<()> {
    let start = Instant::now();
    let db = open(state)?;
    let prefix: &[u8] = b"o\0asset\0";
    let mut seq = match db.scan_prefix(b"h\0").next_back() {
        Some(item) => {
            let (key, _) = item?;
            std::str::from_utf8(&key[2..])?.parse::<u64>()?
        }
        None => 0,
    };
    let mut batch = sled::Batch::default();
    let (mut in_batch, mut items) = (0usize, 0usize);
    for item in db.scan_prefix(prefix).take(n) {
        let (key, value) = item?;
        // The same record with one more byte, as a transfer would change it.
        let mut new_value = value.to_vec();
        new_value.push(b' ');
        if history {
            seq += 1;
            let entry = format!(
                "{{\"seq\":{seq},\"time\":\"2026-11-23T12:00:00Z\",\"plan_id\":\"p-0000000000000000\",\
                 \"actor\":null,\"revision\":null,\"change\":{{\"id\":\"c-{seq:016x}\",\
                 \"action\":\"transfer\",\"kind\":\"asset\",\"object\":{:?},\"account\":\"a0000\",\
                 \"before\":{},\"after\":{},\"reason\":\"reassigned by a rule\"}}}}",
                String::from_utf8_lossy(&key[prefix.len()..]),
                String::from_utf8_lossy(&value),
                String::from_utf8_lossy(&new_value),
            );
            let history_key = format!("h\0{seq:020}").into_bytes();
            if batch_size == 0 {
                db.insert(history_key, entry.into_bytes())?;
            } else {
                batch.insert(history_key, entry.into_bytes());
            }
        }
        items += 1;
        if batch_size == 0 {
            // No batches: each record set on its own, as deed's journal
            // replays them (from session 13).
            db.insert(key, new_value)?;
            continue;
        }
        batch.insert(key, new_value);
        // Batches of `batch` records, as deed's journal replayed them
        // until session 12.
        in_batch += 1 + usize::from(history);
        if in_batch >= batch_size {
            db.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        db.apply_batch(batch)?;
    }
    db.flush()?;
    let total = start.elapsed();
    println!(
        "floor=rewrite seconds={:.3} items={items} batch={batch_size} history={history}",
        total.as_secs_f64()
    );
    Ok(())
}
