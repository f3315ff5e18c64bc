//! # sammen-model: the vocabulary every Sammen crate speaks
//!
//! Why it exists: the adapters, the outbox, the bus, the audit log and the HTTP API all need to say the same
//! things about a message — which family it is, who sends it, who receives it, and exactly why it was
//! refused. Keeping that vocabulary in one small crate without I/O keeps the other crates from depending on
//! each other just to share a type.
//!
//! Invariants kept here:
//! - A [`Report`] never holds personal data in a field that is serialised or printed: the patient
//!   identifier lives in [`PatientId`], whose `Debug` is redacted and which serde skips.
//! - An [`Issue`]'s text describes a value, it never echoes it (see [`report`]).
//! - Issue codes are stable strings; MedCom invariants keep their published id inside the code.
//! - Identifier checks ([`ident`]) are pure functions: same input, same verdict, no allocation on success.
#![forbid(unsafe_code)]

pub mod family;
pub mod ident;
pub mod report;
pub mod time;

pub use family::Family;
pub use report::{
    AckCode, Issue, Party, PatientId, Report, ResponseRef, Severity, Transport, TransportKind,
};
