//! `sammen status ID`: state and timeline of a message, read from the data dir.

use anyhow::{Context, Result};
use sammen_config::Config;
use sammen_outbox::{Outbox, OutboxConfig};
use sammen_relay::SharedOutbox;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Print the status of `id`; exit 0 found, 1 not found.
pub fn run(cfg: &Config, id: &str, json: bool) -> Result<ExitCode> {
    let store = crate::serve::open_store(cfg).with_context(|| {
        "cannot open the data dir (is `sammen serve` running on it? then ask it: GET /v1/messages/ID)"
    })?;
    let outbox: SharedOutbox = Arc::new(Outbox::open(store, OutboxConfig::default())?);
    let Some(v) = sammen_ingress::status_view(&outbox, id)? else {
        eprintln!("no message with id {id}");
        return Ok(ExitCode::from(1));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("message {}: {}", v.message_id, v.state);
    for r in &v.records {
        println!(
            "  record {} ({} {}, {} -> {}, {} bytes{}): {}, {} attempts{}",
            r.record,
            r.family,
            r.event,
            r.sender_gln.as_deref().unwrap_or("?"),
            r.receiver_gln.as_deref().unwrap_or("?"),
            r.size,
            r.resend_of
                .map(|o| format!(", resend of {o}"))
                .unwrap_or_default(),
            r.state,
            r.attempts,
            r.last_error
                .as_deref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default(),
        );
        for s in &r.timeline {
            let t = UNIX_EPOCH + Duration::from_millis(s.at_ms);
            println!("    {:<24} {}", s.state, crate::serve_fmt::rfc3339(t));
        }
    }
    Ok(ExitCode::SUCCESS)
}
