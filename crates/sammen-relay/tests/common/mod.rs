//! Helpers shared by the relay's test files: a party, an accept request, an accept that must succeed.
#![allow(dead_code, clippy::unwrap_used)]

use sammen_model::{Family, Party};
use sammen_outbox::{AcceptOutcome, AcceptRequest, MessageMeta, RecordId};
use sammen_relay::SharedOutbox;
use std::time::SystemTime;

pub fn party(gln: &str, sor: Option<&str>) -> Party {
    Party {
        gln: Some(gln.into()),
        sor: sor.map(str::to_owned),
    }
}

/// A HospitalNotification `id` (bundle `b-{id}`, the id as payload) from `from` to `to`.
pub fn request(id: &str, from: Party, to: Party, received: SystemTime) -> AcceptRequest {
    AcceptRequest {
        bytes: id.as_bytes().to_vec(),
        meta: MessageMeta {
            message_id: id.into(),
            envelope_id: format!("b-{id}"),
            family: Family::HospitalNotification,
            event: "admit-inpatient".into(),
            sender: from,
            receiver: to,
            received,
        },
    }
}

/// Accept `req`, which must be new.
pub fn accept_new(ob: &SharedOutbox, req: AcceptRequest) -> RecordId {
    match ob.accept(req).unwrap() {
        AcceptOutcome::Accepted { id } => id,
        o => panic!("{o:?}"),
    }
}
