//! The message as the bus carries it, and its mapping to AMQP properties and headers.
//!
//! The body is opaque bytes: the bus never parses it. Everything routing needs is in [`BusMessage`]'s
//! fields, validated before anything is sent, so a bad value fails at the caller and never as a broker
//! error (a `#` in an event would silently re-route; a 300-byte id would panic inside lapin).

use crate::error::InvalidMessage;
use bytes::Bytes;
use sammen_model::{ident::check_gln, Family};

/// Header carrying the sender's GLN.
pub const HEADER_SENDER: &str = "sammen-sender-gln";
/// Header carrying the event code (the last part of the routing key).
pub const HEADER_EVENT: &str = "sammen-event";
/// Header carrying the hex SHA-256 of the body.
pub const HEADER_SHA256: &str = "sammen-sha256";
/// Header set to true when the sender resent an earlier message (MedCom reliable messaging).
pub const HEADER_RESEND: &str = "sammen-resend";
/// Header RabbitMQ quorum queues set on redelivery.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// MessageHeader id (AMQP `message_id`).
    pub message_id: String,
    /// Receiver GLN: the first part of the routing key and the inbox queue.
    pub receiver_gln: String,
    /// Sender GLN (header).
    pub sender_gln: String,
    /// Message family (AMQP `type`, second part of the routing key).
    pub family: Family,
    /// Event code, e.g. `admit-inpatient` (third part of the routing key).
    pub event: String,
    /// MIME type of the body (AMQP `content_type`).
    pub content_type: String,
    /// Accept time, seconds since the Unix epoch (AMQP `timestamp`).
    pub timestamp: u64,
    /// Lower-case hex SHA-256 of the body.
    pub sha256: String,
    /// The sender resent this message.
    pub resend: bool,
    /// The payload, untouched.
    pub body: Bytes,
}

impl BusMessage {
    /// `<receiver-gln>.<family>.<event>`; fails if any part would break topic routing.
    pub fn routing_key(&self) -> Result<String, InvalidMessage> {
        self.validate()?;
        Ok(routing_key(&self.receiver_gln, self.family, &self.event))
    }

    /// Check every field the bus relies on.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        if check_gln(&self.receiver_gln).is_some() {
            return Err(InvalidMessage::Gln {
                field: "receiver_gln",
            });
        }
        if check_gln(&self.sender_gln).is_some() {
            return Err(InvalidMessage::Gln {
                field: "sender_gln",
            });
        }
        let ev = self.event.as_bytes();
        if ev.is_empty()
            || ev.len() > 64
            || !ev
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(InvalidMessage::Event);
        }
        for (field, v) in [
            ("message_id", &self.message_id),
            ("content_type", &self.content_type),
        ] {
            if v.is_empty() || v.len() > 255 {
                return Err(InvalidMessage::Length { field });
            }
        }
        let h = self.sha256.as_bytes();
        if h.len() != 64 || !h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidMessage::Sha256);
        }
        Ok(())
    }
}

/// Routing key for a message; callers validate the parts first.
pub(crate) fn routing_key(receiver_gln: &str, family: Family, event: &str) -> String {
    format!("{receiver_gln}.{}.{event}", family.as_str())
}

/// Check a receiver GLN before it names a queue or binding.
pub(crate) fn check_receiver(gln: &str) -> Result<(), InvalidMessage> {
    match check_gln(gln) {
        None => Ok(()),
        Some(_) => Err(InvalidMessage::Gln {
            field: "receiver_gln",
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> BusMessage {
        BusMessage {
            message_id: "a5e5b880-c087-4055-b9ec-99108695f81d".into(),
            receiver_gln: "5790001348120".into(),
            sender_gln: "5790000121441".into(),
            family: Family::HospitalNotification,
            event: "admit-inpatient".into(),
            content_type: "application/fhir+xml".into(),
            timestamp: 1_700_000_000,
            sha256: "0".repeat(64),
            resend: false,
            body: Bytes::from_static(b"<Bundle/>"),
        }
    }

    #[test]
    fn routing_key_has_three_parts() {
        assert_eq!(
            sample().routing_key().unwrap(),
            "5790001348120.HospitalNotification.admit-inpatient"
        );
    }

    #[test]
    fn refuses_what_would_break_routing() {
        let mut m = sample();
        m.event = "a.#".into();
        assert_eq!(m.validate(), Err(InvalidMessage::Event));
        let mut m = sample();
        m.receiver_gln = "5790001348121".into();
        assert!(matches!(m.validate(), Err(InvalidMessage::Gln { .. })));
        let mut m = sample();
        m.message_id = "x".repeat(256);
        assert!(matches!(m.validate(), Err(InvalidMessage::Length { .. })));
        let mut m = sample();
        m.sha256 = "A".repeat(64);
        assert_eq!(m.validate(), Err(InvalidMessage::Sha256));
    }
}
