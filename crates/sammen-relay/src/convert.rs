//! An outbox row as a bus message.

use bytes::Bytes;
use sammen_bus::BusMessage;
use sammen_model::Family;
use sammen_outbox::Pending;
use std::time::UNIX_EPOCH;

/// MIME type forwarded with a payload: FHIR bundles as `application/fhir+xml`, everything else (OIOXML
/// letters, VANS/SBDH envelopes) as `application/xml`.
pub fn content_type_of(family: Family, payload: &[u8]) -> &'static str {
    let head = &payload[..payload.len().min(512)];
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if family.is_fhir() && has(b"Bundle") && !has(b"StandardBusinessDocument") && !has(b"Envelope")
    {
        "application/fhir+xml"
    } else {
        "application/xml"
    }
}

/// The bus message for a pending row. Fails (as the bus would) when the row cannot be routed.
pub fn to_bus_message(p: &Pending) -> Result<BusMessage, sammen_bus::InvalidMessage> {
    let m = BusMessage {
        message_id: p.meta.message_id.clone(),
        receiver_gln: p.meta.receiver.gln.clone().unwrap_or_default(),
        sender_gln: p.meta.sender.gln.clone().unwrap_or_default(),
        family: p.meta.family,
        event: p.meta.event.clone(),
        content_type: content_type_of(p.meta.family, &p.payload).into(),
        timestamp: p
            .meta
            .received
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        sha256: p.sha256.clone(),
        resend: p.resend,
        body: Bytes::from(p.payload.clone()),
    };
    m.validate()?;
    Ok(m)
}
