//! Reading, checking and overriding a configuration.

use crate::model::{BusKind, Config};
use sammen_model::ident::{check_gln, check_sor};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One thing wrong with a configuration, by key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`limits.max_message_bytes`, `receiver[2].gln`); empty for the whole file.
    pub key: String,
    /// Why it is wrong.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("{0}")]
    Syntax(Problem),
    /// Values that parse but cannot work (one entry per problem).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem, by key.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { path, source } => vec![Problem {
                key: String::new(),
                reason: format!("cannot read {}: {source}", path.display()),
            }],
            ConfigError::Syntax(p) => vec![p.clone()],
            ConfigError::Invalid(ps) => ps.clone(),
        }
    }
}

/// Command-line flags that override the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--amqp-url`: also switches the bus to AMQP.
    pub amqp_url: Option<String>,
}

/// Parse and check a configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        ConfigError::Syntax(Problem {
            key: String::new(),
            reason: reason(text, &e),
        })
    })?;
    let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Syntax(Problem {
            key: if key == "." { String::new() } else { key },
            reason: reason(text, &e.into_inner()),
        })
    })?;
    if cfg.receivers.is_empty() {
        cfg.receivers = crate::defaults::example_receivers();
    }
    cfg.check()?;
    Ok(cfg)
}

/// Read, parse and check a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text)
}

/// toml's own message (without its multi-line source excerpt) and the line it points at.
fn reason(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count())
                + 1;
            format!("{msg} (line {line})")
        }
        None => msg,
    }
}

impl Config {
    /// Apply command-line overrides, then check again.
    pub fn apply(mut self, o: &Overrides) -> Result<Config, ConfigError> {
        if let Some(d) = &o.data_dir {
            self.data_dir = d.clone();
        }
        if let Some(l) = o.listen {
            self.http.listen = l;
        }
        if let Some(u) = &o.amqp_url {
            self.bus.kind = BusKind::Amqp;
            self.bus.url = Some(u.clone());
        }
        self.check()?;
        Ok(self)
    }

    /// Every value that parses but cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut ps = Vec::new();
        let mut p = |key: String, reason: &str| {
            ps.push(Problem {
                key,
                reason: reason.to_string(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            p("data_dir".into(), "must not be empty");
        }
        if !self.http.listen.ip().is_loopback() {
            p(
                "http.listen".into(),
                "plain HTTP is only allowed on a loopback address (127.0.0.1 or ::1); TLS is not configured",
            );
        }
        match (self.bus.kind, &self.bus.url) {
            (BusKind::Amqp, None) => p("bus.url".into(), "required when bus.kind = \"amqp\""),
            (BusKind::Amqp, Some(u))
                if !(u.starts_with("amqp://") || u.starts_with("amqps://")) =>
            {
                p("bus.url".into(), "must start with amqp:// or amqps://")
            }
            _ => {}
        }
        if !self
            .bus
            .namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p("bus.namespace".into(), "only A-Z, a-z, 0-9, '-' and '_'");
        }
        if let Some(node) = &self.bus.node {
            if !valid_node_name(node) {
                p(
                    "bus.node".into(),
                    "1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
                );
            }
        }
        if check_gln(&self.bus.broker_gln).is_some() {
            p(
                "bus.broker_gln".into(),
                "not a GLN (13 digits with a valid check digit)",
            );
        }
        if self.bus.confirm_timeout.is_zero() {
            p("bus.confirm_timeout".into(), "must be positive");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            if check_gln(&r.gln).is_some() {
                p(
                    format!("receiver[{i}].gln"),
                    "not a GLN (13 digits with a valid check digit)",
                );
            } else if r.gln == self.bus.broker_gln {
                p(
                    format!("receiver[{i}].gln"),
                    "is the broker's own GLN (bus.broker_gln), which receives delivery receipts",
                );
            } else if !seen.insert(r.gln.clone()) {
                p(format!("receiver[{i}].gln"), "listed twice");
            }
            if let Some(sor) = &r.sor {
                if check_sor(sor).is_some() {
                    p(format!("receiver[{i}].sor"), "not a SOR code");
                }
            }
            if r.auto_acknowledge && r.sor.is_none() {
                p(
                    format!("receiver[{i}].auto_acknowledge"),
                    "needs receiver.sor (an acknowledgement's source endpoint is a SOR code)",
                );
            }
        }
        let l = &self.limits;
        if l.max_message_bytes == 0 {
            p("limits.max_message_bytes".into(), "must be positive");
        }
        if l.body_memory_bytes < l.max_message_bytes {
            p(
                "limits.body_memory_bytes".into(),
                "must be at least limits.max_message_bytes (one largest message must fit)",
            );
        }
        if l.in_flight == 0 || l.in_flight > 65_535 {
            p("limits.in_flight".into(), "must be 1..=65535");
        }
        if l.outbox_max_depth == 0 {
            p("limits.outbox_max_depth".into(), "must be positive");
        }
        if l.max_attempts == 0 {
            p("limits.max_attempts".into(), "must be positive");
        }
        for (i, partner) in self.partners.iter().enumerate() {
            for (key, reason) in crate::tls::check_partner(&format!("partner[{i}]"), partner) {
                p(key, &reason);
            }
        }
        if let Some(t) = &self.tls {
            if t.cert.is_some() != t.key.is_some() {
                p("tls.key".into(), "tls.cert and tls.key go together");
            }
            if t.cert.is_some() && t.client_ca.is_empty() {
                p(
                    "tls.client_ca".into(),
                    "required with tls.cert: client certificates are always verified",
                );
            }
            if t.handshake_timeout.is_zero() || t.request_timeout.is_zero() {
                p("tls.request_timeout".into(), "timeouts must be positive");
            }
        }
        for (key, reason) in self.audit.problems() {
            p(key, reason);
        }
        let r = &self.retention;
        if r.metadata_ttl < r.payload_ttl {
            p(
                "retention.metadata_ttl".into(),
                "must be at least retention.payload_ttl",
            );
        }
        if r.purge_interval.is_zero() {
            p("retention.purge_interval".into(), "must be positive");
        }
        if self.bus.amqp_ingress && self.bus.kind != BusKind::Amqp {
            p(
                "bus.amqp_ingress".into(),
                "needs bus.kind = \"amqp\" (the ingress queue lives on RabbitMQ)",
            );
        }
        if self.acknowledgements.timeout_secs == 0 {
            p("acknowledgements.timeout_secs".into(), "must be positive");
        }
        if self.acknowledgements.scan_interval_secs == 0 {
            p(
                "acknowledgements.scan_interval_secs".into(),
                "must be positive",
            );
        }
        let i = &self.inbox;
        if i.visibility_timeout.is_zero() {
            p("inbox.visibility_timeout".into(), "must be positive");
        }
        if i.max_unsettled == 0 {
            p("inbox.max_unsettled".into(), "must be at least 1");
        }
        if i.max_batch == 0 || i.max_batch > usize::from(i.max_unsettled) {
            p(
                "inbox.max_batch".into(),
                "must be between 1 and inbox.max_unsettled",
            );
        }
        if ps.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(ps))
        }
    }
}

/// Longest `bus.node` (as `sammen_bus::receipts::MAX_NODE_NAME_LEN`, which checks it again).
pub(crate) const MAX_NODE_NAME_LEN: usize = 64;

/// A node name usable in a queue name: 1–[`MAX_NODE_NAME_LEN`] of `A-Za-z0-9_-`.
pub(crate) fn valid_node_name(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= MAX_NODE_NAME_LEN
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StoreBackend;

    fn keys(e: ConfigError) -> Vec<String> {
        e.problems().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.http.listen.ip().is_loopback());
        assert_eq!(c.bus.kind, BusKind::Embedded);
        assert!(c.receivers.iter().any(|r| r.gln == "5790001348120"));
        Config::default().check().unwrap();
    }

    #[test]
    fn unknown_key_is_reported_by_path() {
        let e = parse("[limits]\nmax_mesage_bytes = 5\n").unwrap_err();
        let p = &e.problems()[0];
        assert_eq!(p.key, "limits.max_mesage_bytes", "{e}");
        assert!(p.reason.contains("unknown field"), "{e}");
        let e = parse("colour = 1\n").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn body_budget_must_hold_one_largest_message() {
        let e =
            parse("[limits]\nmax_message_bytes = 2048\nbody_memory_bytes = 1024\n").unwrap_err();
        assert_eq!(keys(e), ["limits.body_memory_bytes"]);
        let c = parse("[limits]\nmax_message_bytes = 2048\nbody_memory_bytes = 2048\n").unwrap();
        assert_eq!(c.limits.body_memory_bytes, 2048);
    }

    #[test]
    fn wrong_type_is_reported_by_path() {
        let e = parse("[limits]\nmax_message_bytes = \"big\"\n").unwrap_err();
        assert_eq!(keys(e), ["limits.max_message_bytes"]);
        let e = parse("[bus]\nkind = \"kafka\"\n").unwrap_err();
        assert_eq!(keys(e), ["bus.kind"]);
        let e = parse("[retention]\npayload_ttl = \"3w\"\n").unwrap_err();
        assert_eq!(keys(e), ["retention.payload_ttl"]);
        let e = parse("[[receiver]]\ngln = \"5790001348120\"\nsorr = \"1\"\n").unwrap_err();
        assert_eq!(keys(e), ["receiver[0].sorr"]);
    }

    #[test]
    fn bad_values_are_reported_by_path() {
        let text = r#"
            [http]
            listen = "0.0.0.0:8080"
            [bus]
            kind = "amqp"
            [[receiver]]
            gln = "5790001348121"
            [retention]
            payload_ttl = "10d"
            metadata_ttl = "1d"
        "#;
        let e = parse(text).unwrap_err();
        assert_eq!(
            keys(e),
            [
                "http.listen",
                "bus.url",
                "receiver[0].gln",
                "retention.metadata_ttl"
            ]
        );
    }

    #[test]
    fn flags_override_the_file() {
        let c = parse("data_dir = \"/a\"\n[store]\nbackend = \"sled\"\n").unwrap();
        assert_eq!(c.store.backend, StoreBackend::Sled);
        let c = c
            .apply(&Overrides {
                data_dir: Some("/b".into()),
                listen: Some("127.0.0.1:9999".parse().unwrap()),
                amqp_url: Some("amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            })
            .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/b"));
        assert_eq!(c.http.listen.port(), 9999);
        assert_eq!(c.bus.kind, BusKind::Amqp);
        assert!(!format!("{:?}", c.bus).contains("guest@"));
        let e = Config::default()
            .apply(&Overrides {
                listen: Some("10.0.0.1:80".parse().unwrap()),
                ..Overrides::default()
            })
            .unwrap_err();
        assert_eq!(keys(e), ["http.listen"]);
    }

    #[test]
    fn metrics_listener_and_log_settings() {
        let c = parse("").unwrap();
        assert_eq!(c.http.metrics_listen, None);
        assert_eq!(c.log.format, None);
        let c = parse(
            "[http]\nmetrics_listen = \"0.0.0.0:9464\"\n[log]\nlevel = \"debug\"\nformat = \"text\"\n",
        )
        .unwrap();
        assert_eq!(c.http.metrics_listen.map(|a| a.port()), Some(9464));
        assert_eq!(c.log.format, Some(crate::model::LogFormat::Text));
        assert_eq!(c.log.level, "debug");
        let e = parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert_eq!(keys(e), ["log.format"]);
        let e = parse("[log]\nlevl = \"info\"\n").unwrap_err();
        assert_eq!(keys(e), ["log.levl"]);
    }

    #[test]
    fn node_name_is_checked() {
        assert_eq!(parse("").unwrap().bus.node, None);
        let c = parse("[bus]\nnode = \"sammen-a_1\"\n").unwrap();
        assert_eq!(c.bus.node.as_deref(), Some("sammen-a_1"));
        let long = "n".repeat(MAX_NODE_NAME_LEN);
        assert!(parse(&format!("[bus]\nnode = \"{long}\"\n")).is_ok());
        for bad in ["", "a.b", "a b", "æ", &format!("{long}n")] {
            let e = parse(&format!("[bus]\nnode = \"{bad}\"\n")).unwrap_err();
            assert_eq!(keys(e), ["bus.node"], "{bad:?}");
        }
    }

    #[test]
    fn amqp_ingress_needs_the_amqp_bus() {
        let e = parse("[bus]\namqp_ingress = true\n").unwrap_err();
        assert_eq!(keys(e), ["bus.amqp_ingress"]);
        let c = parse("[bus]\nkind = \"amqp\"\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\namqp_ingress = true\n").unwrap();
        assert!(c.bus.amqp_ingress);
    }

    #[test]
    fn auto_acknowledge_needs_a_sor() {
        let ok = "[[receiver]]\ngln = \"5790001348120\"\nsor = \"953741000016009\"\nauto_acknowledge = true\n";
        assert!(parse(ok).unwrap().receivers[0].auto_acknowledge);
        let e =
            parse("[[receiver]]\ngln = \"5790001348120\"\nauto_acknowledge = true\n").unwrap_err();
        assert_eq!(keys(e), ["receiver[0].auto_acknowledge"]);
    }

    #[test]
    fn acknowledgement_settings() {
        let c = parse("[acknowledgements]\ntimeout_secs = 600\n").unwrap();
        assert_eq!(c.acknowledgements.timeout_secs, 600);
        assert_eq!(c.acknowledgements.scan_interval_secs, 30);
        assert_eq!(Config::default().acknowledgements.timeout_secs, 1800);
        let e = parse("[acknowledgements]\ntimeout_secs = 0\n").unwrap_err();
        assert!(
            e.to_string().contains("acknowledgements.timeout_secs"),
            "{e}"
        );
        let e = parse("[acknowledgements]\ntimeout = 5\n").unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
    }

    #[test]
    fn inbox_settings() {
        let c = parse("[inbox]\nvisibility_timeout = \"30s\"\nmax_unsettled = 8\nmax_batch = 4\n")
            .unwrap();
        assert_eq!(
            c.inbox.visibility_timeout,
            std::time::Duration::from_secs(30)
        );
        assert_eq!((c.inbox.max_unsettled, c.inbox.max_batch), (8, 4));
        let e = parse("[inbox]\nmax_batch = 64\n").unwrap_err();
        assert_eq!(keys(e), ["inbox.max_batch"]);
        let e = parse("[inbox]\nvisibility = \"1s\"\n").unwrap_err();
        assert_eq!(keys(e), ["inbox.visibility"]);
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sammen.example.toml");
        let c = load(&path).unwrap();
        assert!(!c.receivers.is_empty());
    }
}
