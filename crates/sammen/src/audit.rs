//! `sammen keygen` and `sammen audit …` (offline: the broker must not be running on the data dir), and
//! the audit log's start-up, timer and shutdown checkpoints for `sammen serve`.
//!
//! Exit codes of `sammen audit …`: 0 everything agrees, 1 the log, proof or checkpoint does not (the
//! first bad leaf or checkpoint is named), 2 usage or I/O. Nothing printed ever holds a CPR number:
//! `search --cpr` hashes it with the patient key and prints leaves, which hold only that hash.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sammen_config::Config;
use sammen_outbox::sammen_audit::{
    self, export, keys, ops, AuditConfig, AuditError, AuditLog, PatientKey, ProofDocument, Search,
    SignedCheckpoint,
};
use sammen_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// `sammen audit …`.
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Recompute every leaf, node and checkpoint signature offline. Exit 0 all agree, 1 naming the first
    /// bad leaf or checkpoint, 2 usage/I/O.
    Verify {
        #[command(flatten)]
        dir: DataDir,
        /// The log's public key (SPKI PEM, from `sammen keygen`).
        #[arg(long)]
        public_key: PathBuf,
        /// Exported checkpoint directory (default: `<data dir>/outbox.audit-checkpoints`).
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
    },
    /// Print a message's leaves with inclusion proofs against the latest checkpoint (JSON).
    Prove {
        #[command(flatten)]
        dir: DataDir,
        /// Message id.
        #[arg(long)]
        message_id: String,
    },
    /// Check a proof document with the public key alone (no data dir).
    CheckProof {
        /// The proof document (`-`: stdin).
        proof: PathBuf,
        /// The log's public key (SPKI PEM).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Prove the log only grew since OLD_CHECKPOINT (prints the consistency proof, JSON).
    Consistency {
        #[command(flatten)]
        dir: DataDir,
        /// An earlier checkpoint note (e.g. a copy of the exported `checkpoint`).
        old_checkpoint: PathBuf,
        /// Also check both checkpoints' signatures against this public key.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Print matching leaves as JSON lines `{"index":N,"leaf":{…}}`.
    Search {
        #[command(flatten)]
        dir: DataDir,
        /// Every leaf of one message id.
        #[arg(long, group = "q")]
        message_id: Option<String>,
        /// Every leaf whose sender or receiver has this GLN.
        #[arg(long, group = "q")]
        gln: Option<String>,
        /// Every leaf whose sender or receiver has this SOR code.
        #[arg(long, group = "q")]
        sor: Option<String>,
        /// Every leaf of one patient; the number is hashed with the patient key, never printed.
        #[arg(long, group = "q")]
        cpr: Option<String>,
        /// Patient HMAC secret file (as in `[audit] patient_key_file`).
        #[arg(long)]
        patient_key_file: Option<PathBuf>,
        /// Leaves at or after this time (unix ms, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`).
        #[arg(long, group = "q")]
        from: Option<String>,
        /// Leaves before this time (default: now).
        #[arg(long)]
        to: Option<String>,
    },
}

/// `--data-dir`: the broker's data dir (holding `outbox/`) or the outbox store itself.
#[derive(clap::Args)]
pub struct DataDir {
    /// Data directory.
    #[arg(long)]
    data_dir: PathBuf,
}

impl DataDir {
    fn store(&self) -> PathBuf {
        store_dir(&self.data_dir)
    }
}

fn store_dir(dir: &Path) -> PathBuf {
    let outbox = dir.join("outbox");
    if outbox.is_dir() {
        outbox
    } else {
        dir.to_path_buf()
    }
}

/// The log, proof or checkpoint disagrees (exit 1), as opposed to usage or I/O (exit 2).
fn is_finding(e: &AuditError) -> bool {
    matches!(
        e,
        AuditError::Tampered(_)
            | AuditError::Rollback { .. }
            | AuditError::Inconsistent { .. }
            | AuditError::Gap(_)
            | AuditError::Proof(_)
            | AuditError::Checkpoint(_)
            | AuditError::NotFound(_)
    )
}

fn fail(cmd: &str, e: &AuditError) -> ExitCode {
    if is_finding(e) {
        eprintln!("sammen audit {cmd}: FAILED: {e}");
        ExitCode::from(1)
    } else {
        eprintln!("sammen audit {cmd}: {e}");
        ExitCode::from(2)
    }
}

/// `sammen keygen --out DIR`.
pub fn keygen(out: &Path) -> ExitCode {
    match sammen_audit::keygen(out) {
        Ok(k) => {
            println!("{}", k.fingerprint);
            eprintln!(
                "wrote {} (keep secret) and {}",
                k.private_key.display(),
                k.public_key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sammen keygen: {e}");
            ExitCode::from(2)
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sammen audit: {e}");
            ExitCode::from(2)
        }
    }
}

/// Run one `sammen audit` subcommand.
pub fn run(cmd: AuditCmd) -> ExitCode {
    match cmd {
        AuditCmd::Verify {
            dir,
            public_key,
            checkpoint_dir,
        } => verify(&dir, &public_key, checkpoint_dir.as_deref()),
        AuditCmd::Prove { dir, message_id } => match ops::prove(&dir.store(), &message_id) {
            Ok(doc) => print_json(&doc),
            Err(e) => fail("prove", &e),
        },
        AuditCmd::CheckProof { proof, public_key } => check_proof(&proof, &public_key),
        AuditCmd::Consistency {
            dir,
            old_checkpoint,
            public_key,
        } => consistency(&dir, &old_checkpoint, public_key.as_deref()),
        AuditCmd::Search {
            dir,
            message_id,
            gln,
            sor,
            cpr,
            patient_key_file,
            from,
            to,
        } => {
            let query = match (message_id, gln, sor, cpr, from) {
                (Some(m), ..) => Search::MessageId(m),
                (_, Some(g), ..) => Search::Gln(g),
                (_, _, Some(s), ..) => Search::Sor(s),
                (_, _, _, Some(cpr), _) => {
                    let key = match patient_key_from_file(patient_key_file.as_deref()) {
                        Ok(k) => k,
                        Err(e) => {
                            eprintln!("sammen audit search: {e:#}");
                            return ExitCode::from(2);
                        }
                    };
                    Search::Cpr { cpr, key }
                }
                (_, _, _, _, Some(from)) => {
                    let range = parse_time(&from).and_then(|f| {
                        let t = to
                            .as_deref()
                            .map_or(Some(now_ms().saturating_add(1)), parse_time);
                        t.map(|t| (f, t))
                    });
                    let Some((from_ms, to_ms)) = range else {
                        eprintln!("sammen audit search: --from/--to: unix ms, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
                        return ExitCode::from(2);
                    };
                    Search::TimeRange { from_ms, to_ms }
                }
                _ => {
                    eprintln!("sammen audit search: give one of --message-id, --gln, --sor, --cpr, --from");
                    return ExitCode::from(2);
                }
            };
            search(&dir, &query)
        }
    }
}

fn verify(dir: &DataDir, public_key: &Path, checkpoint_dir: Option<&Path>) -> ExitCode {
    let run = || -> Result<ops::VerifyReport, AuditError> {
        let key = keys::load_public_key(public_key)?;
        let store_dir = dir.store();
        let cp_dir = checkpoint_dir
            .map_or_else(|| export::default_export_dir(&store_dir), Path::to_path_buf);
        let exported = export::read_exported(&cp_dir)?;
        let store = ops::open_data_dir(&store_dir)?;
        ops::verify_store(&store, &key, exported.as_ref())
    };
    match run() {
        Ok(r) => {
            let latest = r.latest.as_ref().map_or_else(
                || "none".to_owned(),
                |c| format!("size {} root {}", c.size, sammen_audit::leaf::hex(&c.root)),
            );
            println!(
                "ok: {} leaves, {} checkpoints (latest {latest}), keys {}",
                r.leaves,
                r.checkpoints,
                r.keys.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("verify", &e),
    }
}

fn check_proof(proof: &Path, public_key: &Path) -> ExitCode {
    let text = if proof == Path::new("-") {
        let mut s = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            Ok(_) => s,
            Err(e) => {
                eprintln!("sammen audit check-proof: stdin: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        match std::fs::read_to_string(proof) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sammen audit check-proof: {}: {e}", proof.display());
                return ExitCode::from(2);
            }
        }
    };
    let key = match keys::load_public_key(public_key) {
        Ok(k) => k,
        Err(e) => return fail("check-proof", &AuditError::Config(e.to_string())),
    };
    let doc: ProofDocument = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sammen audit check-proof: FAILED: not a proof document: {e}");
            return ExitCode::from(1);
        }
    };
    match ops::check_proof(&doc, &key) {
        Ok(leaves) => {
            let size = SignedCheckpoint::parse(&doc.checkpoint)
                .map(|c| c.checkpoint.size)
                .unwrap_or_default();
            let kinds: Vec<String> = leaves
                .iter()
                .map(|(i, l)| format!("{}@{}", l.event.kind(), i.0))
                .collect();
            println!(
                "ok: message {}: {} leaves in the signed tree of size {size}: {}{}",
                doc.message_id,
                leaves.len(),
                kinds.join(", "),
                if doc.pending.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} more after the checkpoint: prove again later)",
                        doc.pending.len()
                    )
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("check-proof", &e),
    }
}

fn consistency(dir: &DataDir, old: &Path, public_key: Option<&Path>) -> ExitCode {
    let run = || -> Result<ops::ConsistencyDocument, AuditError> {
        let doc = ops::consistency(&dir.store(), old)?;
        if let Some(pk) = public_key {
            ops::check_consistency(&doc, &[keys::load_public_key(pk)?])?;
        }
        Ok(doc)
    };
    match run() {
        Ok(doc) => print_json(&doc),
        Err(e) => fail("consistency", &e),
    }
}

fn search(dir: &DataDir, query: &Search) -> ExitCode {
    match ops::search(&dir.store(), query) {
        Ok(hits) => {
            let mut out = std::io::stdout().lock();
            for (i, leaf) in hits {
                let line = serde_json::json!({ "index": i.0, "leaf": leaf });
                if writeln!(out, "{line}").is_err() {
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail("search", &e),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix ms, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn parse_time(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let secs_of_day = match time {
        None => 0,
        Some(t) => {
            let mut p = t.splitn(3, ':').map(str::parse::<i64>);
            let (h, mi, se) = (p.next()?.ok()?, p.next()?.ok()?, p.next()?.ok()?);
            if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&se) {
                return None;
            }
            h * 3600 + mi * 60 + se
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((days * 86_400 + secs_of_day) * 1000).ok()
}

/// The secret as configured: trailing newline ignored, at least 16 bytes.
fn patient_key_bytes(mut bytes: Vec<u8>) -> Result<PatientKey> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    PatientKey::new(&bytes).context("patient HMAC key")
}

fn patient_key_from_file(path: Option<&Path>) -> Result<PatientKey> {
    if let Ok(v) = std::env::var(sammen_config::audit::PATIENT_KEY_ENV) {
        return patient_key_bytes(v.into_bytes());
    }
    let Some(path) = path else {
        bail!(
            "--patient-key-file (or {}) is required",
            sammen_config::audit::PATIENT_KEY_ENV
        );
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    patient_key_bytes(bytes)
}

// ---- serve ----

/// The audit log as `sammen serve` shares it with the outbox.
pub type SharedLog = Arc<AuditLog<Arc<dyn Store>>>;

/// Trees the broker's store is opened with: the outbox's (plus the audit log's when it is on).
pub fn store_trees(cfg: &Config) -> &'static [&'static str] {
    if cfg.audit.enabled {
        sammen_outbox::trees::AUDITED
    } else {
        sammen_outbox::trees::ALL
    }
}

/// Development keys, generated once when the config names none.
fn dev_key_dir(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("audit-dev-keys")
}

const DEV_PATIENT_KEY_FILE: &str = "patient-hmac.key";

fn signing_key(cfg: &Config) -> Result<sammen_audit::SigningKey> {
    if let Some(path) = &cfg.audit.signing_key {
        return keys::load_signing_key(path).context("audit.signing_key");
    }
    let dir = dev_key_dir(cfg);
    let private = dir.join(keys::PRIVATE_KEY_FILE);
    if private.is_file() {
        return keys::load_signing_key(&private).context("development audit key");
    }
    let written = keys::keygen(&dir).context("generating a development audit key")?;
    warn!(
        key = %written.private_key.display(),
        fingerprint = %written.fingerprint,
        "audit.signing_key not configured: generated a development signing key (use `sammen keygen` for production)"
    );
    keys::load_signing_key(&written.private_key).context("development audit key")
}

fn patient_key(cfg: &Config) -> Result<PatientKey> {
    if std::env::var_os(sammen_config::audit::PATIENT_KEY_ENV).is_some()
        || cfg.audit.patient_key_file.is_some()
    {
        return patient_key_from_file(cfg.audit.patient_key_file.as_deref())
            .context("audit.patient_key_file");
    }
    let path = dev_key_dir(cfg).join(DEV_PATIENT_KEY_FILE);
    if !path.is_file() {
        // 32 bytes from the OS generator (an Ed25519 seed is exactly that), hex encoded.
        let seed = keys::generate()
            .context("generating a patient key")?
            .to_bytes();
        let mut f = {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                o.mode(0o600);
            }
            std::fs::create_dir_all(dev_key_dir(cfg))?;
            o.open(&path)
                .with_context(|| format!("creating {}", path.display()))?
        };
        f.write_all(sammen_audit::leaf::hex(&seed).as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        warn!(file = %path.display(), "audit.patient_key_file not configured: generated a development patient key");
    }
    patient_key_from_file(Some(&path))
}

/// Open the audit log on the broker's store (opened with [`store_trees`]); `None` when disabled.
///
/// Refuses to start when the stored log is shorter than, or inconsistent with, its last stored or
/// exported checkpoint (a data dir rolled back to an earlier copy, or rewritten).
pub fn open_for_serve(cfg: &Config, store: Arc<dyn Store>) -> Result<Option<SharedLog>> {
    if !cfg.audit.enabled {
        return Ok(None);
    }
    let export_dir = cfg.audit.export_dir_for(&cfg.data_dir);
    let ac = AuditConfig {
        origin: cfg.audit.origin.clone(),
        checkpoint_every: cfg.audit.checkpoint_every,
        checkpoint_interval_ms: u64::try_from(cfg.audit.checkpoint_interval.as_millis())
            .unwrap_or(u64::MAX),
        export_dir: Some(export_dir.clone()),
        patient_key: patient_key(cfg)?,
    };
    let log = match AuditLog::open(store, ac, signing_key(cfg)?) {
        Ok(l) => l,
        Err(e @ (AuditError::Rollback { .. } | AuditError::Inconsistent { .. } | AuditError::Gap(_))) => bail!(
            "refusing to start: the audit log in {} does not extend its last checkpoint ({e}); the data dir \
             was rolled back or altered. Compare with the exported checkpoint in {} and run \
             `sammen audit verify`",
            cfg.outbox_dir().display(),
            export_dir.display()
        ),
        Err(e) => return Err(e).context("opening the audit log"),
    };
    info!(
        leaves = log.size(),
        export = %export_dir.display(),
        fingerprint = %keys::fingerprint(&log.public_key()),
        "audit log open"
    );
    Ok(Some(Arc::new(log)))
}

/// Checkpoint every `checkpoint_every` leaves or `checkpoint_interval` until `stop` (checked at least
/// once a second). The shutdown checkpoint is [`final_checkpoint`], after the relay stopped.
pub async fn run_checkpointer(log: SharedLog, interval: Duration, stop: CancellationToken) {
    let tick = interval.min(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let l = log.clone();
        match tokio::task::spawn_blocking(move || l.maybe_checkpoint(now_ms())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "audit checkpoint failed; retrying"),
            Err(e) => warn!(error = %e, "audit checkpoint task failed"),
        }
    }
}

/// Sign and export the last checkpoint at shutdown.
pub fn final_checkpoint(log: &SharedLog) {
    match log.checkpoint_now() {
        Ok(Some(cp)) => info!(size = cp.checkpoint.size, "audit checkpoint at shutdown"),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "audit checkpoint at shutdown failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sammen_model::{Family, Party};
    use sammen_outbox::{AcceptRequest, MessageMeta, Outbox, OutboxConfig};

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            let dest = to.join(p.file_name().unwrap());
            if p.is_dir() {
                copy_dir(&p, &dest);
            } else {
                std::fs::copy(&p, &dest).unwrap();
            }
        }
    }

    /// Serve's open path: accept `n` messages from `first`, checkpoint as at shutdown.
    fn run_broker(cfg: &Config, first: u32, n: u32) -> Result<u64> {
        let store = crate::serve::open_store(cfg)?;
        let log = open_for_serve(cfg, store)?.unwrap();
        let ob = Outbox::open_with_audit(log.clone(), OutboxConfig::default())?;
        for i in first..first + n {
            let party = |g: &str| Party {
                gln: Some(g.into()),
                sor: None,
            };
            ob.accept(AcceptRequest {
                bytes: b"x".to_vec(),
                meta: MessageMeta {
                    message_id: format!("m{i}"),
                    envelope_id: format!("e{i}"),
                    family: Family::CareCommunication,
                    event: "new-message".into(),
                    sender: party("5790001348120"),
                    receiver: party("5790000209354"),
                    received: SystemTime::now(),
                },
            })?;
        }
        final_checkpoint(&log);
        Ok(log.size())
    }

    #[test]
    fn serve_refuses_a_rolled_back_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: tmp.path().join("data"),
            ..Config::default()
        };
        assert_eq!(run_broker(&cfg, 0, 2).unwrap(), 3);
        // Zero config: development keys in the data dir, checkpoint exported beside the store.
        assert!(dev_key_dir(&cfg).join(keys::PRIVATE_KEY_FILE).is_file());
        assert!(dev_key_dir(&cfg).join(DEV_PATIENT_KEY_FILE).is_file());
        let exported = cfg.audit.export_dir_for(&cfg.data_dir);
        assert_eq!(exported, export::default_export_dir(&cfg.outbox_dir()));
        assert!(exported.join(export::CHECKPOINT_FILE).is_file());
        let backup = tmp.path().join("backup");
        copy_dir(&cfg.outbox_dir(), &backup);
        assert_eq!(run_broker(&cfg, 2, 2).unwrap(), 5);
        // Restore the older copy: the exported checkpoint (size 5) exposes it.
        std::fs::remove_dir_all(cfg.outbox_dir()).unwrap();
        copy_dir(&backup, &cfg.outbox_dir());
        let e = run_broker(&cfg, 9, 0).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("refusing to start") && msg.contains("rollback"),
            "{msg}"
        );
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_time("2024-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
