//! Authorisation: may this certificate send as this message's sender, or read this inbox?

use crate::cert::CertSummary;
use crate::registry::Partner;
use sammen_model::{Party, Report};
use std::sync::Arc;

/// The verified peer of one TLS connection: its certificate and, when registered, its partner entry.
/// The ingress puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The client certificate (already verified by the handshake).
    pub cert: Arc<CertSummary>,
    /// The registry entry, `None` for a certificate from a trusted CA that no partner entry names.
    pub partner: Option<Arc<Partner>>,
}

/// Why a request was refused (403). Nested and `#[non_exhaustive]` like rustls' errors, so new reasons do
/// not break matches. [`Refusal::code`] is stable (metrics label); `Display` never echoes message values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The certificate itself.
    #[error(transparent)]
    Certificate(CertificateRefusal),
    /// The message's sender.
    #[error(transparent)]
    Sender(SenderRefusal),
    /// The inbox asked for.
    #[error(transparent)]
    Receiver(ReceiverRefusal),
}

/// The certificate is not one the broker can map to an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateRefusal {
    /// Trusted CA, but no partner entry names this certificate.
    #[error("the client certificate is not registered as a partner")]
    Unregistered,
}

/// Which sender field a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SenderField {
    /// MessageHeader sender (FHIR) / Sender EANIdentifier (OIOXML).
    Message,
    /// The transport envelope's sender (VANS, SBDH).
    Envelope,
}

impl SenderField {
    fn as_str(self) -> &'static str {
        match self {
            SenderField::Message => "the message's sender",
            SenderField::Envelope => "the envelope's sender",
        }
    }
}

/// The certificate may not send this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderRefusal {
    /// The message names no sender GLN or SOR.
    #[error("the message names no sender to check against the client certificate")]
    Missing,
    /// The sender is not one of the certificate's identities.
    #[error("{} is not an organisation the client certificate may send as", .0.as_str())]
    NotAllowed(SenderField),
}

/// The certificate may not read this inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverRefusal {
    /// The GLN is not one the certificate receives for.
    #[error("the client certificate may not receive for this GLN")]
    NotAllowed,
}

/// Every [`Refusal::code`], for closed metric label sets.
pub const REFUSAL_CODES: &[&str] = &[
    "identity.certificate-unregistered",
    "identity.sender-missing",
    "identity.sender-not-allowed",
    "identity.envelope-sender-not-allowed",
    "identity.receiver-not-allowed",
];

impl Refusal {
    /// Stable code (one of [`REFUSAL_CODES`]).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Certificate(CertificateRefusal::Unregistered) => REFUSAL_CODES[0],
            Refusal::Sender(SenderRefusal::Missing) => REFUSAL_CODES[1],
            Refusal::Sender(SenderRefusal::NotAllowed(SenderField::Message)) => REFUSAL_CODES[2],
            Refusal::Sender(SenderRefusal::NotAllowed(SenderField::Envelope)) => REFUSAL_CODES[3],
            Refusal::Receiver(ReceiverRefusal::NotAllowed) => REFUSAL_CODES[4],
        }
    }
}

fn partner(id: &PeerIdentity) -> Result<&Partner, Refusal> {
    id.partner
        .as_deref()
        .ok_or(Refusal::Certificate(CertificateRefusal::Unregistered))
}

/// A party is covered when each identifier it names matches one identity: GLN equal, and SOR equal unless
/// the identity allows any SOR under its GLN. A SOR-only party must match an identity's SOR.
fn covers(p: &Partner, party: &Party) -> bool {
    p.send_as.iter().any(|i| {
        let gln_ok = party.gln.as_ref().is_none_or(|g| *g == i.gln);
        let sor_ok = match (&party.sor, &i.sor) {
            (None, _) => true,
            (Some(s), Some(allowed)) => s == allowed,
            (Some(_), None) => party.gln.is_some(),
        };
        gln_ok && sor_ok
    })
}

/// The message's sender (MessageHeader sender GLN/SOR, OIOXML Sender EAN) and, when the message came in
/// an envelope, the envelope's sender must each be one of the certificate's identities.
pub fn authorize_sender(id: &PeerIdentity, report: &Report) -> Result<(), Refusal> {
    let p = partner(id)?;
    let envelope = report.transport.as_ref().map(|t| &t.sender);
    if report.sender.is_empty() && envelope.is_none_or(Party::is_empty) {
        return Err(Refusal::Sender(SenderRefusal::Missing));
    }
    if !report.sender.is_empty() && !covers(p, &report.sender) {
        return Err(Refusal::Sender(SenderRefusal::NotAllowed(
            SenderField::Message,
        )));
    }
    if let Some(env) = envelope.filter(|e| !e.is_empty()) {
        if !covers(p, env) {
            return Err(Refusal::Sender(SenderRefusal::NotAllowed(
                SenderField::Envelope,
            )));
        }
    }
    Ok(())
}

/// May this certificate read the inbox of `gln`?
pub fn authorize_receiver(id: &PeerIdentity, gln: &str) -> Result<(), Refusal> {
    let p = partner(id)?;
    if p.receive_for.iter().any(|g| g == gln) {
        Ok(())
    } else {
        Err(Refusal::Receiver(ReceiverRefusal::NotAllowed))
    }
}
