//! `[tls]` and `[[partner]]`: the HTTPS listener and who may talk to it.
//!
//! The shapes live here so that one file is checked by one parser; `sammen-identity` turns them into a
//! rustls server config and a partner registry (and re-reads the files on reload).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[tls]`: HTTPS with required client certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the HTTPS listener.
    #[serde(default = "default_tls_listen")]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM). Absent together with `key` and `client_ca`: a dev PKI is generated in
    /// `<data_dir>/pki` and used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM, PKCS#8, SEC1 or PKCS#1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// CA bundles (PEM) client certificates must chain to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ca: Vec<PathBuf>,
    /// A TOML file of `[[partner]]` entries, re-read on reload (beside the `[[partner]]` of this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partners_file: Option<PathBuf>,
    /// How often the certificate, CA and partner files are checked for changes (`"0s"`: only on SIGHUP).
    #[serde(default = "default_reload_interval", with = "crate::duration")]
    pub reload_interval: Duration,
    /// Longest TLS handshake.
    #[serde(default = "default_handshake_timeout", with = "crate::duration")]
    pub handshake_timeout: Duration,
    /// Longest time to receive one request's headers and body.
    #[serde(default = "default_request_timeout", with = "crate::duration")]
    pub request_timeout: Duration,
}

/// Where zero-config `sammen serve` listens for HTTPS.
pub fn default_tls_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_reload_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: default_tls_listen(),
            cert: None,
            key: None,
            client_ca: Vec::new(),
            partners_file: None,
            reload_interval: default_reload_interval(),
            handshake_timeout: default_handshake_timeout(),
            request_timeout: default_request_timeout(),
        }
    }
}

impl TlsConfig {
    /// True when no certificate material is named: the dev PKI is used.
    pub fn uses_dev_pki(&self) -> bool {
        self.cert.is_none() && self.key.is_none() && self.client_ca.is_empty()
    }
}

/// `[[partner]]`: one organisation's certificate and the identities it may use.
///
/// A certificate is recognised by its SHA-256 `fingerprint`, or by `issuer` plus the subject's
/// `serial_number` (OCES2: `CVR:12345678-UID:...`) or `organization_identifier` (OCES3: `NTRDK-12345678`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    /// Human name, for logs.
    #[serde(default)]
    pub name: String,
    /// SHA-256 of the certificate's DER, hex (colons and case ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Issuer distinguished name as RFC 4514 text (`CN=..., O=..., C=DK`), matched without regard to
    /// spacing after commas or the case of attribute names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Subject serialNumber (OID 2.5.4.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Subject organizationIdentifier (OID 2.5.4.97).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_identifier: Option<String>,
    /// Organisations this certificate may send as.
    #[serde(default)]
    pub send_as: Vec<PartnerParty>,
    /// GLNs whose inbox this certificate may read. Absent: the GLNs of `send_as`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_for: Option<Vec<String>>,
    /// AMQP user whose messages on `sammen.ingress` may send as `send_as` (`bus.amqp_ingress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_user: Option<String>,
}

/// `send_as = [{ gln = "...", sor = "..." }]`. Without `sor`, any SOR code under that GLN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerParty {
    /// GLN.
    pub gln: String,
    /// SOR code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sor: Option<String>,
}

/// The shape of a `tls.partners_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnersFile {
    /// `[[partner]]`.
    #[serde(default, rename = "partner")]
    pub partners: Vec<Partner>,
}

/// Problems with one partner entry, as `(key suffix, reason)`; `key` is e.g. `partner[0]`.
pub fn check_partner(key: &str, p: &Partner) -> Vec<(String, String)> {
    use sammen_model::ident::{check_gln, check_sor};
    let mut out = Vec::new();
    let mut bad = |k: String, r: &str| out.push((k, r.to_string()));
    let by_name = p.serial_number.is_some() || p.organization_identifier.is_some();
    match (&p.fingerprint, &p.issuer, by_name) {
        (Some(f), None, false) => {
            let hex: String = f.chars().filter(|c| *c != ':').collect();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                bad(
                    format!("{key}.fingerprint"),
                    "not a SHA-256 fingerprint (64 hex digits)",
                );
            }
        }
        (None, Some(_), true) => {}
        (None, Some(_), false) => bad(
            format!("{key}.issuer"),
            "needs serial_number or organization_identifier",
        ),
        (None, None, true) => bad(
            format!("{key}.issuer"),
            "required with serial_number or organization_identifier",
        ),
        // Known only by its AMQP user (`bus.amqp_ingress`): no certificate to match.
        (None, None, false) if p.amqp_user.is_some() => {}
        (None, None, false) => bad(
            key.to_string(),
            "needs fingerprint, or issuer with serial_number or organization_identifier",
        ),
        (Some(_), _, _) => bad(
            format!("{key}.fingerprint"),
            "use either fingerprint or issuer + subject, not both",
        ),
    }
    if p.send_as.is_empty() && p.receive_for.as_ref().is_none_or(Vec::is_empty) {
        bad(
            format!("{key}.send_as"),
            "a partner needs at least one identity",
        );
    }
    for (i, s) in p.send_as.iter().enumerate() {
        if check_gln(&s.gln).is_some() {
            bad(
                format!("{key}.send_as[{i}].gln"),
                "not a GLN (13 digits with a valid check digit)",
            );
        }
        if s.sor.as_deref().is_some_and(|s| check_sor(s).is_some()) {
            bad(format!("{key}.send_as[{i}].sor"), "not a SOR code");
        }
    }
    for (i, g) in p.receive_for.iter().flatten().enumerate() {
        if check_gln(g).is_some() {
            bad(
                format!("{key}.receive_for[{i}]"),
                "not a GLN (13 digits with a valid check digit)",
            );
        }
    }
    out
}

/// Parse and check a partners file (`[[partner]]` entries only).
pub fn parse_partners(text: &str) -> Result<Vec<Partner>, crate::ConfigError> {
    use crate::{ConfigError, Problem};
    let de = toml::Deserializer::parse(text).map_err(|e| {
        ConfigError::Syntax(Problem {
            key: String::new(),
            reason: e.message().trim().replace('\n', " "),
        })
    })?;
    let file: PartnersFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Syntax(Problem {
            key: if key == "." { String::new() } else { key },
            reason: e.into_inner().message().trim().replace('\n', " "),
        })
    })?;
    let problems: Vec<Problem> = file
        .partners
        .iter()
        .enumerate()
        .flat_map(|(i, p)| check_partner(&format!("partner[{i}]"), p))
        .map(|(key, reason)| Problem { key, reason })
        .collect();
    if problems.is_empty() {
        Ok(file.partners)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners_file_is_checked_by_key() {
        let ok = r#"
            [[partner]]
            name = "Hospital"
            fingerprint = "AB:cd:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd"
            send_as = [{ gln = "5790000209354", sor = "265161000016000" }]
            [[partner]]
            issuer = "CN=Test CA, O=Sammen, C=DK"
            organization_identifier = "NTRDK-12345678"
            send_as = [{ gln = "5790001348120" }]
        "#;
        let ps = parse_partners(ok).unwrap();
        assert_eq!(ps.len(), 2);
        let bad = "[[partner]]\nfingerprint = \"zz\"\nsend_as = [{ gln = \"5790000209355\" }]\n";
        let keys: Vec<String> = parse_partners(bad)
            .unwrap_err()
            .problems()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            ["partner[0].fingerprint", "partner[0].send_as[0].gln"]
        );
        let e = parse_partners("[[partner]]\nfingerprnt = \"x\"\n").unwrap_err();
        assert_eq!(e.problems()[0].key, "partner[0].fingerprnt");
    }

    #[test]
    fn an_amqp_only_partner_needs_no_certificate() {
        let ps = parse_partners(
            "[[partner]]\nname = \"EHR over AMQP\"\namqp_user = \"ehr-1\"\nsend_as = [{ gln = \"5790000209354\" }]\n",
        )
        .unwrap();
        assert_eq!(ps[0].amqp_user.as_deref(), Some("ehr-1"));
        // Without amqp_user it must still name a certificate.
        let e =
            parse_partners("[[partner]]\nsend_as = [{ gln = \"5790000209354\" }]\n").unwrap_err();
        assert_eq!(e.problems()[0].key, "partner[0]");
    }

    #[test]
    fn tls_section_parses_with_defaults() {
        let c = crate::parse("[tls]\n[[partner]]\nfingerprint = \"00000000000000000000000000000000000000000000000000000000000000ff\"\nsend_as = [{ gln = \"5790000209354\" }]\n").unwrap();
        let t = c.tls.unwrap();
        assert!(t.uses_dev_pki());
        assert_eq!(t.listen, default_tls_listen());
        assert_eq!(c.partners.len(), 1);
        let e = crate::parse("[tls]\ncert = \"a.pem\"\n").unwrap_err();
        let keys: Vec<String> = e.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["tls.key", "tls.client_ca"]);
    }
}
