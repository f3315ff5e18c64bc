//! # sammen-identity: who is on the other end of the TLS connection, and what it may do
//!
//! Why it exists: MedCom trust is organisational. A hospital may only send as itself and a municipality may
//! only read its own messages; the proof is the client certificate an organisation (in production an OCES
//! certificate) presents in a mutual-TLS handshake. This crate turns certificates into organisation
//! identities (GLN/SOR) and answers "may this certificate send this message / read this inbox".
//!
//! Invariants kept here:
//! - Client certificates are required. A handshake fails for no certificate, an unknown CA, an expired or
//!   not-yet-valid certificate, or one without the clientAuth extended key usage ([`server_config`]).
//! - Identity comes only from the verified certificate: by SHA-256 fingerprint, or by issuer + subject
//!   serialNumber / organizationIdentifier as OCES certificates carry them ([`PartnerRegistry`]). A trusted
//!   certificate that no partner names may not send or receive anything ([`Refusal::Certificate`]).
//! - A message is let through only when its sender (MessageHeader / OIOXML Sender EAN) and its envelope's
//!   sender are each one of the certificate's identities ([`authorize_sender`]); every refusal has a stable
//!   code and a reason that never echoes message content.
//! - Reload swaps certificate, CA bundle and partner registry together, atomically, for new handshakes;
//!   a reload that fails leaves the old generation in place ([`TlsIdentity`]).
//! - A refused client certificate is named by fingerprint only where the listener asked for it, per
//!   connection ([`observe_presented`]), so the refusal's audit leaf can say which certificate it was.
//! - ring is the only crypto provider; no private key is committed: dev and test certificates are
//!   generated at run time ([`generate_dev_pki`], [`CertAuthority`]), keys written 0600, never overwritten.
#![forbid(unsafe_code)]

mod authz;
mod cert;
mod devpki;
mod error;
mod presented;
mod registry;
mod server;

pub use authz::{
    authorize_receiver, authorize_sender, CertificateRefusal, PeerIdentity, ReceiverRefusal,
    Refusal, SenderField, SenderRefusal, REFUSAL_CODES,
};
pub use cert::{
    fingerprint, load_certs, load_key, normalize_dn, normalize_fingerprint, CertSummary,
};
pub use devpki::{
    generate_dev_pki, CertAuthority, ClientSpec, DevPki, Issued, DEV_HOSPITAL, DEV_MUNICIPALITY,
};
pub use error::IdentityError;
pub use presented::{observe_presented, PresentedSlot};
pub use registry::{OrgIdentity, Partner, PartnerRegistry};
/// Re-exported so users name the same rustls.
pub use rustls;
pub use server::{
    client_config, client_config_from_files, provider, server_config, CertExpiry, ExpiryOwner,
    ReloadOutcome, TlsFiles, TlsIdentity, TlsSnapshot,
};
