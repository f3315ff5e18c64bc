//! `sammen`: the broker's command line. It only wires crates together; every rule lives in a crate.
#![forbid(unsafe_code)]

mod audit;
mod bench;
mod config_cmd;
mod inbox_cmd;
mod replay_cmd;
mod send;
mod serve;
mod serve_fmt;
mod serve_tls;
mod status;
mod subscribe;
mod telemetry;
mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sammen", version, about = "Sammen: MedCom message broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate messages: files or folders (recursive, *.xml). Exit 0 all valid, 1 any invalid, 2 usage/I/O error.
    Validate {
        /// Output format.
        #[arg(long, value_enum, default_value_t = validate::Format::Text)]
        format: validate::Format,
        /// Largest accepted message in bytes.
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        max_bytes: usize,
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the conformance suite (manifests *.toml in DIR). Exit 0 when every case matches.
    Conformance {
        /// Suite directory.
        #[arg(default_value = "conformance")]
        dir: PathBuf,
        /// Print only failing cases and the summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the broker: HTTP ingress, durable outbox, relay and bus. Stops on SIGTERM or ctrl-c.
    Serve {
        #[command(flatten)]
        cfg: CfgArgs,
    },
    /// Show the state and timeline of a message (by message id) from the data dir.
    Status {
        /// Message id (MessageHeader id / letter id).
        id: String,
        #[command(flatten)]
        cfg: CfgArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Operator replay: every dead record of a message goes back to accepted, to be published again
    /// (an audited `replay` leaf each). Stop `sammen serve` first. Prints `{"record":N,"state":"accepted"}`
    /// lines. Exit 0 replayed, 1 nothing was dead, 2 usage or I/O error (e.g. the store is locked).
    Replay {
        /// Message id (MessageHeader id / letter id).
        #[arg(long)]
        message_id: String,
        /// Why (kept as the record's last error, never in the audit log).
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        cfg: CfgArgs,
    },
    /// Check a configuration file. Exit 0 valid, 1 invalid (each problem printed with its key).
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Reference municipal subscriber: write each message of GLN's inbox to DIR/<message_id>.xml (synced
    /// before ack), drop duplicates, send delivery receipts. Embedded bus: uses --data-dir while serve is stopped.
    Subscribe {
        /// Receiver GLN whose inbox to consume.
        #[arg(long)]
        receiver: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        cfg: CfgArgs,
    },
    /// Load generator: post conformance examples with fresh ids to a broker; accepted msgs/s, latency
    /// percentiles, accept → subscriber latency, broker CPU/memory, and a raw lapin baseline (--baseline).
    Bench(bench::BenchArgs),
    /// Write an audit signing key (PKCS#8 PEM) and its public key into DIR; print the fingerprint.
    Keygen {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Signed audit log: verify, prove, check-proof, consistency, search (offline; stop serve first).
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Post message files to a broker over mutual TLS; one JSON answer per file. Exit 0 all accepted or
    /// duplicate, 1 any refused or invalid, 2 any transport or usage error.
    Send {
        /// Broker URL.
        #[arg(long, default_value = "https://127.0.0.1:8443")]
        url: String,
        /// Client certificate (PEM), e.g. data/pki/hospital.crt.
        #[arg(long)]
        cert: PathBuf,
        /// Client private key (PEM), e.g. data/pki/hospital.key.
        #[arg(long)]
        key: PathBuf,
        /// CA bundle that signed the broker's certificate.
        #[arg(long, default_value = "data/pki/ca.crt")]
        ca: Vec<PathBuf>,
        /// Message files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Read GLN's inbox over mutual TLS (GET /v1/inbox/GLN): one JSON line per message. Without --ack one
    /// message is shown (it returns after the visibility timeout); with --ack --out DIR every message is
    /// stored as DIR/<message_id>.xml (synced) and acked, until the inbox is empty. Exit 0 done, 1 refused,
    /// 2 transport or usage error.
    Inbox {
        /// Broker URL.
        #[arg(long, default_value = "https://127.0.0.1:8443")]
        url: String,
        /// Client certificate (PEM), e.g. data/pki/municipality.crt.
        #[arg(long)]
        cert: PathBuf,
        /// Client private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// CA bundle that signed the broker's certificate.
        #[arg(long, default_value = "data/pki/ca.crt")]
        ca: Vec<PathBuf>,
        /// Seconds to wait for a message (long poll).
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Store each message here (needed for --ack).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Ack each stored message and go on until the inbox is empty.
        #[arg(long)]
        ack: bool,
        /// Receiver GLN.
        gln: String,
    },
}

/// Config file and the flags that override it.
#[derive(clap::Args)]
struct CfgArgs {
    /// TOML config file (deploy/sammen.example.toml documents it). Without it: defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve plain HTTP on this loopback address (implies --plain-http; without [tls] in the config, no HTTPS).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Also serve plain HTTP on http.listen (loopback only).
    #[arg(long)]
    plain_http: bool,
    /// Override tls.listen (HTTPS; default 127.0.0.1:8443).
    #[arg(long)]
    tls_listen: Option<std::net::SocketAddr>,
    /// Use RabbitMQ at this URL (sets bus.kind = "amqp").
    #[arg(long)]
    amqp_url: Option<String>,
    /// Serve GET /metrics on this address (overrides http.metrics_listen; port 0 picks a free port).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
}

impl CfgArgs {
    fn resolve(&self) -> Option<sammen_config::Config> {
        let o = sammen_config::Overrides {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            amqp_url: self.amqp_url.clone(),
        };
        match config_cmd::resolve(self.config.as_deref(), &o) {
            Ok(mut c) => {
                c.http.plain |= self.plain_http || self.listen.is_some();
                if let Some(a) = self.tls_listen {
                    c.tls.get_or_insert_with(Default::default).listen = a;
                }
                if let Some(a) = self.metrics_listen {
                    c.http.metrics_listen = Some(a);
                }
                Some(c)
            }
            Err(e) => {
                config_cmd::report(self.config.as_deref(), &e);
                None
            }
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SAMMEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn serve(cfg: &CfgArgs) -> ExitCode {
    let Some(cfg) = cfg.resolve() else {
        return ExitCode::from(2);
    };
    let telemetry =
        match telemetry::build(&cfg).and_then(|t| telemetry::init_logging(&cfg, &t).map(|()| t)) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sammen serve: {e:#}");
                return ExitCode::from(2);
            }
        };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sammen: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve::serve(cfg, telemetry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sammen serve: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn subscribe(cfg: &CfgArgs, receiver: &str, out: &std::path::Path) -> ExitCode {
    let Some(cfg) = cfg.resolve() else {
        return ExitCode::from(2);
    };
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sammen: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(subscribe::run(cfg, receiver, out)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sammen subscribe: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout with success, usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Validate {
            format,
            max_bytes,
            paths,
        } => validate::run(&paths, format, max_bytes),
        Command::Conformance { dir, quiet } => validate::conformance(&dir, quiet),
        Command::Serve { cfg } => serve(&cfg),
        Command::Status { id, cfg, json } => match cfg.resolve() {
            None => ExitCode::from(2),
            Some(c) => match status::run(&c, &id, json) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sammen status: {e:#}");
                    ExitCode::from(2)
                }
            },
        },
        Command::Replay {
            message_id,
            note,
            cfg,
        } => match cfg.resolve() {
            None => ExitCode::from(2),
            Some(c) => match replay_cmd::run(&c, &message_id, &note) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sammen replay: {e:#}");
                    ExitCode::from(2)
                }
            },
        },
        Command::CheckConfig { file } => config_cmd::check(&file),
        Command::Subscribe { receiver, out, cfg } => subscribe(&cfg, &receiver, &out),
        Command::Bench(args) => bench::main(args),
        Command::Keygen { out } => audit::keygen(&out),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Send {
            url,
            cert,
            key,
            ca,
            files,
        } => send::run(&url, &cert, &key, &ca, &files),
        Command::Inbox {
            url,
            cert,
            key,
            ca,
            wait,
            out,
            ack,
            gln,
        } => inbox_cmd::run(&inbox_cmd::Args {
            url: &url,
            cert: &cert,
            key: &key,
            ca: &ca,
            gln: &gln,
            wait,
            out: out.as_deref(),
            ack,
        }),
    }
}
