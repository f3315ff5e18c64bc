//! The partner registry: which certificate may act for which organisations.

use crate::cert::{normalize_dn, normalize_fingerprint, CertSummary};
use crate::error::IdentityError;
use std::sync::Arc;

/// One organisation identity a partner may send as. `sor: None` allows any SOR code under the GLN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgIdentity {
    /// GLN.
    pub gln: String,
    /// SOR code, when the partner is limited to one.
    pub sor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// An AMQP-only partner (`amqp_user`, no certificate named): matches no certificate.
    NoCertificate,
    Fingerprint(String),
    Subject {
        issuer: String,
        serial_number: Option<String>,
        organization_identifier: Option<String>,
    },
}

/// A registered partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// Name from the registry (for logs; may be empty).
    pub name: String,
    /// Identities it may send as.
    pub send_as: Vec<OrgIdentity>,
    /// GLNs whose inbox it may read.
    pub receive_for: Vec<String>,
    matcher: Matcher,
}

impl Partner {
    /// The GLN metrics label this partner under (its first identity).
    pub fn primary_gln(&self) -> Option<&str> {
        self.send_as
            .first()
            .map(|i| i.gln.as_str())
            .or_else(|| self.receive_for.first().map(String::as_str))
    }

    /// A label for logs: the name, else the primary GLN.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            self.primary_gln().unwrap_or("unnamed")
        } else {
            &self.name
        }
    }

    fn matches(&self, c: &CertSummary) -> bool {
        match &self.matcher {
            Matcher::NoCertificate => false,
            Matcher::Fingerprint(f) => *f == c.fingerprint,
            Matcher::Subject {
                issuer,
                serial_number,
                organization_identifier,
            } => {
                *issuer == c.issuer
                    && serial_number
                        .as_ref()
                        .is_none_or(|s| Some(s) == c.serial_number.as_ref())
                    && organization_identifier
                        .as_ref()
                        .is_none_or(|o| Some(o) == c.organization_identifier.as_ref())
            }
        }
    }
}

/// Certificate → partner. Fingerprint entries win over issuer + subject entries; among those, the first
/// entry in configuration order.
#[derive(Debug, Clone, Default)]
pub struct PartnerRegistry {
    partners: Vec<Arc<Partner>>,
}

impl PartnerRegistry {
    /// Build from configuration entries (checked again here: a partners file bypasses `Config::check`).
    pub fn new(specs: &[sammen_config::Partner]) -> Result<Self, IdentityError> {
        let problems: Vec<sammen_config::Problem> = specs
            .iter()
            .enumerate()
            .flat_map(|(i, p)| sammen_config::check_partner(&format!("partner[{i}]"), p))
            .map(|(key, reason)| sammen_config::Problem { key, reason })
            .collect();
        if !problems.is_empty() {
            return Err(sammen_config::ConfigError::Invalid(problems).into());
        }
        let mut partners: Vec<Arc<Partner>> = specs.iter().map(|p| Arc::new(convert(p))).collect();
        // Stable sort: fingerprint entries first, order kept otherwise.
        partners.sort_by_key(|p| !matches!(p.matcher, Matcher::Fingerprint(_)));
        Ok(PartnerRegistry { partners })
    }

    /// The partner this certificate belongs to.
    pub fn identify(&self, cert: &CertSummary) -> Option<Arc<Partner>> {
        self.partners.iter().find(|p| p.matches(cert)).cloned()
    }

    /// Every partner.
    pub fn partners(&self) -> &[Arc<Partner>] {
        &self.partners
    }

    /// Number of partners.
    pub fn len(&self) -> usize {
        self.partners.len()
    }

    /// True without partners.
    pub fn is_empty(&self) -> bool {
        self.partners.is_empty()
    }
}

fn convert(p: &sammen_config::Partner) -> Partner {
    let matcher = match (&p.fingerprint, &p.issuer) {
        (Some(f), _) => Matcher::Fingerprint(normalize_fingerprint(f)),
        (None, None) => Matcher::NoCertificate,
        (None, Some(_)) => Matcher::Subject {
            issuer: normalize_dn(p.issuer.as_deref().unwrap_or_default()),
            serial_number: p.serial_number.clone(),
            organization_identifier: p.organization_identifier.clone(),
        },
    };
    let send_as: Vec<OrgIdentity> = p
        .send_as
        .iter()
        .map(|s| OrgIdentity {
            gln: s.gln.clone(),
            sor: s.sor.clone(),
        })
        .collect();
    let receive_for = p
        .receive_for
        .clone()
        .unwrap_or_else(|| send_as.iter().map(|s| s.gln.clone()).collect());
    Partner {
        name: p.name.clone(),
        send_as,
        receive_for,
        matcher,
    }
}
