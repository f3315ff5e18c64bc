//! `sammen replay --message-id ID`: an operator sends every dead record of a message again (offline: the
//! broker must be stopped, one process holds the store). Each replay is a `replay` leaf in the audit log,
//! in the same durable batch as the record's move back to `accepted`.

use anyhow::{Context, Result};
use sammen_config::Config;
use sammen_outbox::{Outbox, OutboxConfig, OutboxError, State};
use std::process::ExitCode;

/// Replay every dead record of `message_id`; prints `{"record":N,"state":"accepted"}` per record (ids and
/// states only). Exit 0 replayed at least one, 1 nothing was dead (or no such message), 2 a dead record
/// could not be replayed (payload purged).
pub fn run(cfg: &Config, message_id: &str, note: &str) -> Result<ExitCode> {
    let store = crate::serve::open_store(cfg).with_context(|| {
        format!(
            "cannot open the store in {} (is `sammen serve` running on it? stop it first: one process holds the store)",
            cfg.outbox_dir().display()
        )
    })?;
    let audit_log = crate::audit::open_for_serve(cfg, store.clone())?;
    let outbox_cfg = OutboxConfig {
        max_attempts: cfg.limits.max_attempts,
        ttl: cfg.limits.message_ttl,
    };
    let outbox = match &audit_log {
        Some(log) => Outbox::open_with_audit(log.clone(), outbox_cfg)?,
        None => Outbox::open(store, outbox_cfg)?,
    };
    let mut replayed = 0u32;
    let mut refused = 0u32;
    let mut failed = None;
    for id in outbox.find(message_id)? {
        let dead = outbox.status(id)?.is_some_and(|s| s.state == State::Dead);
        if !dead {
            continue;
        }
        match outbox.replay(id, note) {
            Ok(s) => {
                replayed += 1;
                println!(
                    "{}",
                    serde_json::json!({"record": id.0, "state": s.state.as_str()})
                );
            }
            // Retention dropped the bytes: nothing to send; the others are still replayed.
            Err(e @ OutboxError::PayloadPurged(_)) => {
                refused += 1;
                eprintln!("sammen replay: {e}");
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Sign and export a checkpoint covering the replay leaves, as serve does at shutdown.
    if let Some(log) = &audit_log {
        crate::audit::final_checkpoint(log);
    }
    if let Some(e) = failed {
        return Err(e).context("replay");
    }
    if refused > 0 {
        return Ok(ExitCode::from(2));
    }
    if replayed == 0 {
        eprintln!("sammen replay: no dead record with this message id");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
