//! Keys and bytes per tree of a stopped broker's fjall store: what each part of the broker writes per
//! message (the audit log's leaves, node chunks and search index beside the outbox and the embedded bus).
//!
//! ```sh
//! cargo run --release --example store_bytes -- DATA_DIR/outbox [MESSAGES]
//! ```
//! With `MESSAGES` (as many as were accepted) it also prints bytes per message. Read-only in effect,
//! but it opens the store, so stop `sammen serve` first.

use anyhow::{Context, Result};
use sammen_store::Store;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .context("usage: store_bytes STORE_DIR [MESSAGES]")?;
    let messages: Option<u64> = args.next().map(|m| m.parse()).transpose()?;
    let mut trees: Vec<&'static str> = sammen_outbox::trees::AUDITED.to_vec();
    trees.extend(sammen_bus_store::TREES);
    let store = sammen_store::FjallStore::open(&dir, &trees)
        .with_context(|| format!("opening {dir} (is the broker stopped?)"))?;
    println!(
        "{:<20} {:>9} {:>12} {:>12} {:>10}",
        "tree", "keys", "key bytes", "value bytes", "B/message"
    );
    for tree in &trees {
        let (mut keys, mut key_bytes, mut value_bytes) = (0u64, 0u64, 0u64);
        // Page through the tree so a large store is not read into memory at once.
        let mut from: Vec<u8> = Vec::new();
        loop {
            let page = store.range(tree, &from, None, 4096)?;
            for (k, v) in &page {
                keys += 1;
                key_bytes += k.len() as u64;
                value_bytes += v.len() as u64;
            }
            match page.last() {
                Some((k, _)) if page.len() == 4096 => from = [&k[..], &[0]].concat(),
                _ => break,
            }
        }
        let per = messages
            .filter(|&m| m > 0)
            .map(|m| format!("{:.0}", (key_bytes + value_bytes) as f64 / m as f64))
            .unwrap_or_default();
        println!("{tree:<20} {keys:>9} {key_bytes:>12} {value_bytes:>12} {per:>10}");
    }
    Ok(())
}
