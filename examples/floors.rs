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
//!                               the issue's floor is batched); with
//!                               `--grouped` (and `--history`), the entries
//!                               are what deed keeps of a transfer (the
//!                               change, not whole records) in deed's history
//!                               groups: about 8 KiB of JSON each, packed
//!                               with LZ4 (a reference for the records deed
//!                               writes, written with no plan, no checks and
//!                               no journal)
//! floors records STATE_DIR OUT  copy a deed sled state into a new sled
//!                               folder OUT with one record per object, as
//!                               deed kept them until its layout 5 put
//!                               assets in pages (`o\0asset\0<id>`): the
//!                               state the scan and rewrite floors run on,
//!                               so that they measure sled's work on the
//!                               issue's keys (a million assets are a
//!                               million keys there, about 35,000 pages
//!                               in deed's state); not timed
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
        Some("records") if args.len() == 3 => records(Path::new(&args[1]), Path::new(&args[2])),
        Some("rewrite") if args.len() >= 3 => {
            let n: usize = args[2].parse().unwrap_or_else(|_| usage());
            let (mut batch, mut history, mut grouped) = (250, false, false);
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
                    "--grouped" => grouped = true,
                    _ => usage(),
                }
            }
            let history = match (history, grouped) {
                (false, false) => History::None,
                (true, false) => History::PerEntry,
                (true, true) => History::Grouped,
                (false, true) => usage(),
            };
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
        "usage: floors parse SPECS_DIR | floors scan STATE_DIR | floors rewrite STATE_DIR N [--batch B] [--history [--grouped]] | floors records STATE_DIR OUT"
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

/// Copies the state into `out` with each page of assets
/// (`o\0assets\0<first id>`: a format byte 1, then per asset its id and
/// its packed bytes, each behind a LEB128 length) written as one record
/// per asset (`o\0asset\0<id>`: the byte 1, then the packed bytes), and
/// every other record as it is.
fn records(state: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(format!("{} exists already", out.display()).into());
    }
    let db = open(state)?;
    let copy = sled::Config::new().path(out).open()?;
    let (mut batch, mut in_batch, mut assets) = (sled::Batch::default(), 0usize, 0usize);
    let mut put = |key: Vec<u8>, value: Vec<u8>| -> Result<()> {
        batch.insert(key, value);
        in_batch += 1;
        if in_batch == 1_000 {
            copy.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
        Ok(())
    };
    for item in db.iter() {
        let (key, value) = item?;
        if !key.starts_with(b"o\0assets\0") {
            put(key.to_vec(), value.to_vec())?;
            continue;
        }
        let mut page = match value.split_first() {
            Some((1, rest)) => rest,
            _ => return Err(format!("a page of an unknown format at {key:?}").into()),
        };
        while !page.is_empty() {
            let id = take(&mut page)?;
            let packed = take(&mut page)?;
            put(
                [&b"o\0asset\0"[..], id].concat(),
                [&[1u8][..], packed].concat(),
            )?;
            assets += 1;
        }
    }
    copy.apply_batch(batch)?;
    copy.flush()?;
    println!("records assets={assets}");
    Ok(())
}

/// Takes a LEB128 length and that many bytes from the front of `bytes`.
fn take<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8]> {
    let mut length = 0usize;
    let mut shift = 0;
    loop {
        let (&byte, rest) = bytes.split_first().ok_or("a page cut short")?;
        *bytes = rest;
        length |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err("a length too long".into());
        }
    }
    if length > bytes.len() {
        return Err("a page cut short".into());
    }
    let (taken, rest) = bytes.split_at(length);
    *bytes = rest;
    Ok(taken)
}

/// The history a rewrite writes along (see the module documentation).
#[derive(Clone, Copy, PartialEq)]
enum History {
    None,
    /// A record per entry, the old and the new value inside.
    PerEntry,
    /// deed's groups of entries, packed.
    Grouped,
}

/// Rewrites the values of up to `n` asset records in batches of `batch`
/// (each value gets a changed tag), then flushes. With history, each
/// rewrite also adds a history entry of the transfer (deed's history keys,
/// after the last one in the state): a record shaped like a whole entry
/// with the old and the new value inside, or deed's groups.
fn rewrite(state: &Path, n: usize, batch_size: usize, history: History) -> Result<()> {
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
    let (mut group, mut group_first) = (Vec::new(), 0u64);
    for item in db.scan_prefix(prefix).take(n) {
        let (key, value) = item?;
        // The same record with one more byte, as a transfer would change it.
        let mut new_value = value.to_vec();
        new_value.push(b' ');
        if history == History::Grouped {
            seq += 1;
            if group.is_empty() {
                group_first = seq;
                group.extend_from_slice(
                    b"[{\"time\":\"2026-11-23T12:00:00Z\",\"plan_id\":\"p-0000000000000000\",\
                      \"actor\":null,\"revision\":null}",
                );
            }
            // A transfer's change as deed keeps it: the fields it changes.
            let change = format!(
                ",{{\"id\":\"c-{seq:016x}\",\"action\":\"transfer\",\"kind\":\"asset\",\
                 \"object\":{:?},\"account\":\"a0000\",\"before\":{{\"owner\":\"user:u00@a0000.ex.com\",\
                 \"tags\":{{\"project\":\"apollo\"}}}},\"after\":{{\"owner\":\"group:team-1\",\
                 \"tags\":{{\"original-owner\":\"u00@a0000.ex.com\",\"project\":\"apollo\"}}}},\
                 \"reason\":\"reassign rule 1 of account a0000\"}}",
                String::from_utf8_lossy(&key[prefix.len()..]),
            );
            group.extend_from_slice(change.as_bytes());
            if group.len() >= GROUP_BYTES {
                let (key, value) = close_group(group_first, &mut group);
                in_batch += put(&db, &mut batch, batch_size, key, value)?;
            }
        }
        if history == History::PerEntry {
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
            in_batch += put(&db, &mut batch, batch_size, history_key, entry.into_bytes())?;
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
        in_batch += 1;
        if in_batch >= batch_size {
            db.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    if !group.is_empty() {
        let (key, value) = close_group(group_first, &mut group);
        in_batch += put(&db, &mut batch, batch_size, key, value)?;
    }
    if in_batch > 0 {
        db.apply_batch(batch)?;
    }
    db.flush()?;
    let total = start.elapsed();
    println!(
        "floor=rewrite seconds={:.3} items={items} batch={batch_size} history={}",
        total.as_secs_f64(),
        match history {
            History::None => "false",
            History::PerEntry => "true",
            History::Grouped => "grouped",
        }
    );
    Ok(())
}

/// Sets a record on its own (`batch_size` 0) or adds it to `batch`;
/// how many records that adds to the batch.
fn put(
    db: &sled::Db,
    batch: &mut sled::Batch,
    batch_size: usize,
    key: Vec<u8>,
    value: Vec<u8>,
) -> Result<usize> {
    if batch_size == 0 {
        db.insert(key, value)?;
        return Ok(0);
    }
    batch.insert(key, value);
    Ok(1)
}

/// deed's history group size (`GROUP_BYTES` in `src/store/history_groups.rs`).
const GROUP_BYTES: usize = 8 << 10;

/// Closes a group of history entries as deed does: its key, and its JSON
/// behind the byte 0x01 and the JSON's length, packed with LZ4.
fn close_group(first_seq: u64, group: &mut Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    group.push(b']');
    let json = std::mem::take(group);
    let mut value = vec![0x01];
    value.extend_from_slice(&(json.len() as u32).to_le_bytes());
    value.extend_from_slice(&lz4_flex::block::compress(&json));
    (format!("h\0{first_seq:020}").into_bytes(), value)
}
