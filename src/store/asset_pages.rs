//! Assets in pages: how the sled backend keeps a state's assets, a million
//! in a large tenant, as a few tens of thousands of records instead of one
//! record each (sled layout 5).
//!
//! A page is one record, `o\0assets\0<id of its first asset>`, holding a
//! run of assets in id order: a format byte ([`PAGE_FORMAT`]), then per
//! asset its id (a text: a LEB128 length and the bytes) and its
//! [`PackedAsset`] bytes (a length and the bytes). Pages cover disjoint
//! ranges of ids: a page holds the ids from its own first id up to the
//! next page's first id, and the first page also any id before its own.
//! Pages are filled to about [`PAGE_BYTES`]; one that a commit grows is
//! split, one that loses all its assets is removed.
//!
//! Why: sled 0.34 spends most of a large write, and of a scan, per key (its
//! tree nodes and page cache), not per byte. Rewriting a million records of
//! 130 bytes took 3.9–6.0 s on one machine, and the same bytes in 4 KiB
//! pages 0.6–0.7 s; scanning them 2.7–3.2 s against 0.15–0.2 s. A commit
//! that changes one asset rewrites its page, about 4 KiB.
//!
//! This module owns the page format ([`PageEntries`] reads one,
//! [`PageEncoder`] cuts a stream of assets into pages) and the one way a
//! commit changes pages ([`PageRewriter`]: the commit's assets, in id
//! order, merged into the pages that hold their ids, each page read once).
//! The records it makes go to a sink (a commit's journal, a restore's
//! inserts); it reads only the committed pages of the tree.

use std::ops::Bound;

use super::codec::keys;
use super::sled_store::SledStore;
use super::StoreError;
use crate::model::packing::{write_length, write_text, Reader};
use crate::model::PackedAsset;

/// The first byte of a page: the version of its format.
pub(crate) const PAGE_FORMAT: u8 = 1;

/// The size a page is filled to. A commit's pages are between about half
/// and one and a half of it, except where a page holds fewer assets. Small
/// enough that sled's leaf nodes (16 records at most) stay well under the
/// size at which sled 0.34 moves a node out to a file of its own (128 KiB
/// with its default segments), large enough that a million assets are
/// about 35,000 records.
pub(crate) const PAGE_BYTES: usize = 4 << 10;

/// Where a record goes: `Some` to set the key, `None` to remove it.
pub(crate) type Sink<'s> = dyn FnMut(Vec<u8>, Option<Vec<u8>>) -> Result<(), StoreError> + 's;

/// The entries of a page, in order: (id, packed asset bytes). Reading stops
/// with an error at bytes no [`PageEncoder`] writes: a wrong format byte, a
/// cut entry, or ids that do not strictly ascend.
pub(crate) struct PageEntries<'a> {
    reader: Reader<'a>,
    last: Option<&'a str>,
}

impl<'a> PageEntries<'a> {
    pub(crate) fn new(page: &'a [u8]) -> Result<PageEntries<'a>, String> {
        match page.split_first() {
            Some((&PAGE_FORMAT, rest)) => Ok(PageEntries {
                reader: Reader::new(rest),
                last: None,
            }),
            Some((format, _)) => Err(format!("an asset page of unknown format {format}")),
            None => Err("an empty asset page".into()),
        }
    }
}

/// Reads one entry of a page from the front of `reader`: (id, packed
/// asset bytes); `None` at the end or on bytes a page never holds.
fn read_entry<'a>(reader: &mut Reader<'a>) -> Option<(&'a str, &'a [u8])> {
    let id = reader.text()?;
    let length = reader.length()?;
    if length > reader.bytes.len() {
        return None;
    }
    let (packed, rest) = reader.bytes.split_at(length);
    reader.bytes = rest;
    Some((id, packed))
}

impl<'a> Iterator for PageEntries<'a> {
    type Item = Result<(&'a str, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.reader.bytes.is_empty() {
            return None;
        }
        let Some((id, packed)) = read_entry(&mut self.reader) else {
            self.reader.bytes = &[];
            return Some(Err("an asset page that is cut or malformed".into()));
        };
        if self.last.is_some_and(|last| last >= id) {
            self.reader.bytes = &[];
            return Some(Err(format!("asset {id} out of order in its page")));
        }
        self.last = Some(id);
        Some(Ok((id, packed)))
    }
}

/// Every asset of the page at `key`, checked: the entries read, the first
/// one's id the key's, and each one a packed asset
/// ([`PackedAsset::from_bytes`]). A load reads pages through this.
pub(crate) fn decode_page(key: &[u8], page: &[u8]) -> Result<Vec<(String, PackedAsset)>, String> {
    let first = keys::parse_id(key, keys::ASSET_PAGES).ok_or("a page key that is not UTF-8")?;
    let mut assets = Vec::with_capacity(page.len() / 100);
    for entry in PageEntries::new(page)? {
        let (id, packed) = entry?;
        if assets.is_empty() && id != first {
            return Err(format!("a page whose first asset {id} is not its key's"));
        }
        let asset = PackedAsset::from_bytes(packed)
            .ok_or_else(|| format!("asset {id}: a packed asset that is cut or malformed"))?;
        assets.push((id.to_string(), asset));
    }
    if assets.is_empty() {
        return Err("an asset page with no asset".into());
    }
    Ok(assets)
}

/// Checks that the page at `key` reads (see [`PageEntries`]), holds at
/// least one asset and that its first asset's id is the key's; the assets'
/// bytes are not unpacked.
fn check_page(key: &[u8], page: &[u8]) -> Result<(), String> {
    let first = keys::parse_id(key, keys::ASSET_PAGES).ok_or("a page key that is not UTF-8")?;
    let mut entries = PageEntries::new(page)?;
    match entries.next().transpose()? {
        Some((id, _)) if id == first => {}
        Some((id, _)) => return Err(format!("a page whose first asset {id} is not its key's")),
        None => return Err("an asset page with no asset".into()),
    }
    entries.try_for_each(|entry| entry.map(|_| ()))
}

/// The id of a page's first asset (`None` for a page with none).
fn first_id(page: &[u8]) -> Option<&str> {
    PageEntries::new(page).ok()?.next()?.ok().map(|(id, _)| id)
}

/// Cuts a stream of assets, given in strictly ascending id order, into
/// pages of about [`PAGE_BYTES`], and gives each finished page to a sink
/// under its key. A full page is held back until the next one is full too,
/// so that a short last page can join it.
#[derive(Default)]
pub(crate) struct PageEncoder {
    /// A full page not yet given out.
    held: Option<Vec<u8>>,
    /// The page being filled (empty before its first asset).
    filling: Vec<u8>,
}

impl PageEncoder {
    /// Adds an asset after the last one.
    pub(crate) fn push(
        &mut self,
        id: &str,
        packed: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        if self.filling.len() >= PAGE_BYTES {
            let full = std::mem::take(&mut self.filling);
            if let Some(held) = self.held.replace(full) {
                give(held, sink)?;
            }
        }
        if self.filling.is_empty() {
            self.filling.reserve(PAGE_BYTES + PAGE_BYTES / 2);
            self.filling.push(PAGE_FORMAT);
        }
        write_text(&mut self.filling, id);
        write_length(&mut self.filling, packed.len());
        self.filling.extend_from_slice(packed);
        Ok(())
    }

    /// Gives out the pages still held and the one being filled; a short
    /// last page joins the one before it.
    pub(crate) fn finish(mut self, sink: &mut Sink<'_>) -> Result<(), StoreError> {
        let filling = std::mem::take(&mut self.filling);
        match self.held.take() {
            Some(mut held) if filling.len() < PAGE_BYTES / 2 => {
                held.extend_from_slice(filling.get(1..).unwrap_or_default());
                give(held, sink)
            }
            held => {
                if let Some(held) = held {
                    give(held, sink)?;
                }
                if filling.is_empty() {
                    return Ok(());
                }
                give(filling, sink)
            }
        }
    }
}

/// Gives a finished page to the sink under its key.
fn give(page: Vec<u8>, sink: &mut Sink<'_>) -> Result<(), StoreError> {
    // Only `PageEncoder::push` fills a page, never with no asset.
    let key = keys::asset_page(first_id(&page).unwrap_or_default());
    sink(key, Some(page))
}

/// A page a [`PageRewriter`] is merging the commit's assets into.
struct OpenPage {
    /// Its committed bytes, and how far they are merged.
    bytes: sled::IVec,
    merged: usize,
    /// The key of the next page in the tree: ids from there on are not
    /// this page's.
    next: Option<sled::IVec>,
    out: NewPages,
}

/// The pages an [`OpenPage`] becomes.
struct NewPages {
    /// The open page's key in the tree (`None`: the tree holds no page
    /// yet).
    old_key: Option<sled::IVec>,
    /// Whether one of the new pages has that key (and replaces it).
    kept_old_key: bool,
    encoder: PageEncoder,
}

impl NewPages {
    fn new(old_key: Option<sled::IVec>) -> NewPages {
        NewPages {
            old_key,
            kept_old_key: false,
            encoder: PageEncoder::default(),
        }
    }

    fn push(&mut self, id: &str, packed: &[u8], sink: &mut Sink<'_>) -> Result<(), StoreError> {
        let (old_key, kept) = (&self.old_key, &mut self.kept_old_key);
        self.encoder.push(id, packed, &mut |key, page| {
            *kept |= is_key(old_key, &key);
            sink(key, page)
        })
    }

    /// Gives out the last new pages, then removes the old key unless one
    /// of them has it.
    fn finish(self, sink: &mut Sink<'_>) -> Result<(), StoreError> {
        let (old_key, mut kept) = (self.old_key, self.kept_old_key);
        self.encoder.finish(&mut |key, page| {
            kept |= is_key(&old_key, &key);
            sink(key, page)
        })?;
        match old_key {
            Some(old_key) if !kept => sink(old_key.to_vec(), None),
            _ => Ok(()),
        }
    }
}

/// Whether `key` is the old page's key.
fn is_key(old_key: &Option<sled::IVec>, key: &[u8]) -> bool {
    old_key.as_ref().is_some_and(|old| old.as_ref() == key)
}

/// Merges a commit's assets, set or removed, given in strictly ascending
/// id order, into the pages of the tree: each page that holds some of
/// their ids is read once, from the committed tree, and written anew
/// (split when it grows, removed when it empties), through the sink. Pages
/// that hold none are not read.
pub(crate) struct PageRewriter<'s> {
    store: &'s SledStore,
    open: Option<OpenPage>,
    last: Option<String>,
}

impl<'s> PageRewriter<'s> {
    pub(crate) fn new(store: &'s SledStore) -> PageRewriter<'s> {
        PageRewriter {
            store,
            open: None,
            last: None,
        }
    }

    /// Sets asset `id` to `packed`, or removes it (`None`). Ids must come
    /// in strictly ascending order (every commit's parts give them so):
    /// an id at or before the last is refused, and nothing of the commit
    /// may then be written.
    pub(crate) fn put(
        &mut self,
        id: &str,
        packed: Option<&[u8]>,
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        if self.last.as_deref().is_some_and(|last| last >= id) {
            return Err(StoreError::Unsupported {
                location: format!("asset {id}"),
                message: "a commit that gives its assets out of id order".into(),
            });
        }
        // One buffer for every id (a million in a large apply).
        let last = self.last.get_or_insert_with(String::new);
        last.clear();
        last.push_str(id);
        let stays = self.open.as_ref().is_some_and(|open| {
            open.next.as_ref().is_none_or(|next| {
                // The next page's first id, after the prefix every page
                // key has.
                id.as_bytes() < &next[keys::ASSET_PAGES.len()..]
            })
        });
        if !stays {
            if let Some(open) = self.open.take() {
                self.close(open, sink)?;
            }
            self.open = Some(self.open_page(&keys::asset_page(id))?);
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        // The page's committed assets before `id` stay; `id`'s own is
        // replaced (or removed).
        loop {
            let rest = &open.bytes[open.merged..];
            let mut reader = Reader::new(rest);
            // `open_page` checked the page.
            let Some((old_id, old_packed)) = read_entry(&mut reader) else {
                break;
            };
            if old_id > id {
                break;
            }
            open.merged += rest.len() - reader.bytes.len();
            if old_id < id {
                open.out.push(old_id, old_packed, sink)?;
            }
        }
        if let Some(packed) = packed {
            open.out.push(id, packed, sink)?;
        }
        Ok(())
    }

    /// Writes the last page merged into.
    pub(crate) fn finish(mut self, sink: &mut Sink<'_>) -> Result<(), StoreError> {
        match self.open.take() {
            Some(open) => self.close(open, sink),
            None => Ok(()),
        }
    }

    /// The page whose range holds the page key `key`, read from the tree.
    fn open_page(&self, key: &[u8]) -> Result<OpenPage, StoreError> {
        let tree = self.store.tree();
        let sled_error = |source| self.store.sled_error(source);
        let at_or_before = tree
            .range(keys::ASSET_PAGES..=key)
            .next_back()
            .transpose()
            .map_err(sled_error)?;
        let page = match at_or_before {
            Some(page) => Some(page),
            // Before every page: the first one's range.
            None => tree
                .scan_prefix(keys::ASSET_PAGES)
                .next()
                .transpose()
                .map_err(sled_error)?,
        };
        let Some((page_key, bytes)) = page else {
            return Ok(OpenPage {
                bytes: sled::IVec::default(),
                merged: 0,
                next: None,
                out: NewPages::new(None),
            });
        };
        // Checked here, so that a merge never copies a page it cannot read.
        check_page(&page_key, &bytes).map_err(|message| self.store.corrupt(&page_key, message))?;
        let next = tree
            .range::<&[u8], _>((Bound::Excluded(page_key.as_ref()), Bound::Unbounded))
            .next()
            .transpose()
            .map_err(sled_error)?
            .map(|(next, _)| next)
            .filter(|next| next.starts_with(keys::ASSET_PAGES));
        Ok(OpenPage {
            merged: 1,
            bytes,
            next,
            out: NewPages::new(Some(page_key)),
        })
    }

    /// Copies the rest of the page's committed assets and writes what it
    /// became.
    fn close(&self, mut open: OpenPage, sink: &mut Sink<'_>) -> Result<(), StoreError> {
        let mut rest = Reader::new(&open.bytes[open.merged..]);
        while let Some((id, packed)) = read_entry(&mut rest) {
            open.out.push(id, packed, sink)?;
        }
        open.out.finish(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn packed(n: usize, owner: &str) -> PackedAsset {
        let asset = crate::model::Asset {
            account: format!("a{}", n % 7),
            owner: crate::model::Owner::User(owner.to_string()),
            creator: None,
            folder: n.is_multiple_of(3).then(|| format!("folder {n}")),
            versions: vec!["v1".into(); n % 4],
            tags: Default::default(),
        };
        PackedAsset::pack(&asset)
    }

    /// Every page the encoder gives out, decoded, in order.
    fn encode(assets: &[(String, PackedAsset)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut pages = Vec::new();
        let mut sink = |key: Vec<u8>, page: Option<Vec<u8>>| {
            pages.push((key, page.expect("a page")));
            Ok(())
        };
        let mut encoder = PageEncoder::default();
        for (id, asset) in assets {
            encoder.push(id, asset.as_bytes(), &mut sink).expect("push");
        }
        encoder.finish(&mut sink).expect("finish");
        pages
    }

    #[test]
    fn the_encoder_cuts_assets_into_pages_that_read_back_in_order() {
        for count in [0, 1, 2, 30, 31, 100, 3000] {
            let assets: Vec<(String, PackedAsset)> = (0..count)
                .map(|n| (format!("file/f-{n:05}"), packed(n, "someone@acme.com")))
                .collect();
            let pages = encode(&assets);
            let mut read = Vec::new();
            for (key, page) in &pages {
                assert!(
                    page.len() <= PAGE_BYTES * 3 / 2 + 200,
                    "{} bytes",
                    page.len()
                );
                read.extend(decode_page(key, page).expect("a page"));
            }
            assert_eq!(read, assets, "{count} assets");
            if count >= 100 {
                assert!(pages.iter().all(|(_, page)| page.len() >= PAGE_BYTES / 2));
            }
        }
    }

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % bound as u64) as usize
        }
    }

    /// The pages of the store, checked: each reads, is not empty and not
    /// far past [`PAGE_BYTES`], and the pages' ids ascend from one page to
    /// the next. Returns every asset in them, in order.
    fn pages_of(store: &SledStore) -> Vec<(String, PackedAsset)> {
        let mut assets: Vec<(String, PackedAsset)> = Vec::new();
        for item in store.scan(keys::ASSET_PAGES) {
            let (key, page) = item.expect("read");
            assert!(
                page.len() <= PAGE_BYTES * 3 / 2 + 500,
                "a page of {} bytes",
                page.len()
            );
            let in_page = decode_page(&key, &page).expect("a page");
            if let (Some(last), Some(first)) = (assets.last(), in_page.first()) {
                assert!(last.0 < first.0, "{} then page {}", last.0, first.0);
            }
            assets.extend(in_page);
        }
        assets
    }

    #[test]
    fn random_commits_keep_the_pages_equal_to_a_map_of_the_assets() {
        use crate::store::sled_store::tests::filled_store;
        use crate::store::{Commit, Store};
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let mut model: BTreeMap<String, PackedAsset> = store
            .load()
            .expect("load")
            .assets
            .packed_iter()
            .map(|(id, asset)| (id.to_string(), asset.clone()))
            .collect();
        let mut random = Random(0x5eed_2026_1201);
        // Ids of several lengths, so that a page's neighbours and split
        // points move; some before, between and after the sample's.
        let id = |n: usize| match n % 3 {
            0 => format!("a/{n:05}"),
            1 => format!("file/{}", n * 7919 % 100_003),
            _ => format!("zz/{n}"),
        };
        for round in 0..60 {
            let touched = match round % 4 {
                0 => 1 + random.below(3),
                1 => random.below(200),
                2 => random.below(3_000),
                _ => random.below(12_000),
            };
            let mut changes: BTreeMap<String, Option<PackedAsset>> = BTreeMap::new();
            for _ in 0..touched {
                let n = random.below(8_000);
                let change = match random.below(3) {
                    0 => None,
                    _ => Some(packed(n + round, &format!("u{round}@acme.com"))),
                };
                changes.insert(id(n), change);
            }
            let mut commit = Commit::default();
            for (id, change) in changes {
                match change {
                    Some(asset) => {
                        model.insert(id.clone(), asset.clone());
                        commit.packed_assets.push((id, asset));
                    }
                    None => {
                        model.remove(&id);
                        commit.objects.push((crate::model::Kind::Asset, id, None));
                    }
                }
            }
            store.commit(commit).expect("commit");
            let expected: Vec<(String, PackedAsset)> = model.clone().into_iter().collect();
            assert_eq!(pages_of(&store), expected, "round {round}");
            let loaded = store.load().expect("load");
            assert_eq!(loaded.assets.len(), model.len(), "round {round}");
        }
        assert!(
            pages_of(&store).len() > 1_000,
            "the rounds filled many pages"
        );
    }

    #[test]
    fn assets_out_of_id_order_are_refused() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        let mut rewriter = PageRewriter::new(&store);
        let mut sink = |_: Vec<u8>, _: Option<Vec<u8>>| Ok(());
        let asset = packed(1, "someone@acme.com");
        rewriter
            .put("b", Some(asset.as_bytes()), &mut sink)
            .expect("first");
        for id in ["b", "a"] {
            let refused = rewriter.put(id, None, &mut sink);
            assert!(
                matches!(refused, Err(StoreError::Unsupported { .. })),
                "{id}"
            );
        }
    }
}
