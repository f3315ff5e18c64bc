//! Building a standard MedCom Acknowledgement (Kvittering 2.x) for a message: for tests, and for the broker
//! when it acknowledges on a receiver's behalf. The result passes this crate's own validator (checked in
//! `sammen-adapters/tests/ack_builder.rs` for every code).
//!
//! Shape (as the MedCom example `Bundle-bc9535ef-...`): MessageHeader (acknowledgementHeader, eventCoding
//! `acknowledgement-message`, one primary destination, `response` with the acknowledged MessageHeader id and
//! code, `details` → OperationOutcome when the code is not `ok`), a Provenance for the acknowledged message
//! (its activity) and one for the acknowledgement (activity `acknowledgement`, entity revision → the
//! acknowledged MessageHeader), the two Organizations (GLN + SOR), and the OperationOutcome. Narratives
//! name only the resource type: an acknowledgement carries no patient and no personal data.

use sammen_model::AckCode;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::time::SystemTime;

/// An organisation as an acknowledgement names it: GLN and SOR code (the SOR code is the endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// GLN.
    pub gln: String,
    /// SOR code.
    pub sor: String,
}

/// What to acknowledge, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckSpec {
    /// The acknowledged message's MessageHeader id.
    pub original_message_id: String,
    /// The acknowledged message's Provenance activity (e.g. `admit-inpatient`, `new-message`).
    pub original_activity: String,
    /// The acknowledgement's sender: the acknowledged message's receiver.
    pub sender: Org,
    /// The acknowledgement's receiver: the acknowledged message's sender.
    pub receiver: Org,
    /// The answer.
    pub code: AckCode,
    /// For `transient-error` / `fatal-error`: the `medcom-acknowledgement-error-codes` code of the
    /// OperationOutcome (e.g. `MSG_VALUESET_VALUE_UNKNOWN`). Ignored for `ok`.
    pub error_code: Option<String>,
    /// Bundle timestamp and Provenance times.
    pub time: SystemTime,
}

/// Why no acknowledgement was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A value that must be an identifier or code is empty or holds characters no id or code has.
    #[error("{0} is not a plain identifier or code")]
    NotPlain(&'static str),
    /// A negative acknowledgement needs the error code of its OperationOutcome (medcom-acknowledgement-1).
    #[error("a negative acknowledgement needs an error code")]
    ErrorCodeMissing,
}

fn plain(s: &str, what: &'static str) -> Result<(), BuildError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(BuildError::NotPlain(what))
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` (UTC) for `t`.
pub fn instant(t: SystemTime) -> String {
    let f = sammen_model::time::utc_fields(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        f.year, f.month, f.day, f.hour, f.minute, f.second
    )
}

/// A UUID-shaped id derived from `domain`, `seed` and `n` (SHA-256, version 4 / variant bits set so it
/// reads as a UUID). The broker builds messages it must be able to build again after a crash with the
/// same ids (an acknowledgement written twice must be a duplicate, not a second message); `domain` keeps
/// the ids of different builders apart.
pub fn derived_uuid(domain: &str, seed: &str, n: u32) -> String {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(seed.as_bytes());
    h.update(n.to_be_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

const BASE: &str = "https://medcomfhir.dk/ig/acknowledgement";
const MSG_PROFILE: &str =
    "http://medcomfhir.dk/ig/acknowledgement/StructureDefinition/medcom-messaging-acknowledgement";
const HEADER_PROFILE: &str =
    "http://medcomfhir.dk/ig/acknowledgement/StructureDefinition/medcom-messaging-acknowledgementHeader";
const PROV_PROFILE: &str =
    "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-provenance";
const ORG_PROFILE: &str =
    "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-organization";
const OO_PROFILE: &str =
    "http://medcomfhir.dk/ig/acknowledgement/StructureDefinition/medcom-acknowledgement-operationoutcome";

/// The acknowledgement's XML (UTF-8). `message_id` and `bundle_id` are its own new ids; `new_id` makes the
/// ids of its other resources (UUIDs, like every id here).
pub fn acknowledgement(
    spec: &AckSpec,
    message_id: &str,
    bundle_id: &str,
    new_id: &mut dyn FnMut() -> String,
) -> Result<String, BuildError> {
    plain(message_id, "the acknowledgement's id")?;
    plain(bundle_id, "the Bundle id")?;
    plain(&spec.original_message_id, "the acknowledged message id")?;
    plain(
        &spec.original_activity,
        "the acknowledged message's activity",
    )?;
    for (o, what) in [
        (&spec.sender, "the sender"),
        (&spec.receiver, "the receiver"),
    ] {
        plain(&o.gln, what)?;
        plain(&o.sor, what)?;
    }
    let error = match (spec.code, &spec.error_code) {
        (AckCode::Ok, _) => None,
        (_, Some(c)) => {
            plain(c, "the error code")?;
            Some(c.as_str())
        }
        (_, None) => return Err(BuildError::ErrorCodeMissing),
    };
    let (sender_org, receiver_org, prov_orig, prov_ack) = (new_id(), new_id(), new_id(), new_id());
    for id in [&sender_org, &receiver_org, &prov_orig, &prov_ack] {
        plain(id, "a generated id")?;
    }
    let oo = match error {
        Some(_) => {
            let id = new_id();
            plain(&id, "a generated id")?;
            Some(id)
        }
        None => None,
    };
    let when = instant(spec.time);
    let orig = &spec.original_message_id;
    let mut x = String::with_capacity(6 * 1024);
    // Writing to a String cannot fail.
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir">
  <id value="{bundle_id}"/>
  <meta><profile value="{MSG_PROFILE}"/></meta>
  <type value="message"/>
  <timestamp value="{when}"/>
  <entry>
    <fullUrl value="{BASE}/MessageHeader/{message_id}"/>
    <resource>
      <MessageHeader>
        <id value="{message_id}"/>
        <meta><profile value="{HEADER_PROFILE}"/></meta>
        <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>MessageHeader</p></div></text>
        <eventCoding>
          <system value="http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-eventCodes"/>
          <code value="acknowledgement-message"/>
        </eventCoding>
        <destination>
          <extension url="http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-destinationUseExtension">
            <valueCoding>
              <system value="http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-destinationUse"/>
              <code value="primary"/>
            </valueCoding>
          </extension>
          <endpoint value="https://sor2.sum.dsdn.dk/#id={rsor}"/>
          <receiver><reference value="Organization/{receiver_org}"/></receiver>
        </destination>
        <sender><reference value="Organization/{sender_org}"/></sender>
        <source><endpoint value="https://sor2.sum.dsdn.dk/#id={ssor}"/></source>
        <response>
          <identifier value="{orig}"/>
          <code value="{code}"/>"#,
        rsor = spec.receiver.sor,
        ssor = spec.sender.sor,
        code = spec.code.as_str(),
    );
    if let Some(oo) = &oo {
        let _ = write!(
            x,
            r#"
          <details><reference value="OperationOutcome/{oo}"/></details>"#
        );
    }
    let _ = write!(
        x,
        r#"
        </response>
      </MessageHeader>
    </resource>
  </entry>"#
    );
    // The acknowledged message's Provenance (by its sender), then the acknowledgement's own.
    let prov = |x: &mut String,
                id: &str,
                target: &str,
                activity: &str,
                who: &str,
                what: Option<&str>| {
        let _ = write!(
            x,
            r#"
  <entry>
    <fullUrl value="{BASE}/Provenance/{id}"/>
    <resource>
      <Provenance>
        <id value="{id}"/>
        <meta><profile value="{PROV_PROFILE}"/></meta>
        <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>Provenance</p></div></text>
        <target><reference value="MessageHeader/{target}"/></target>
        <occurredDateTime value="{when}"/>
        <recorded value="{when}"/>
        <activity>
          <coding>
            <system value="http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-activityCodes"/>
            <code value="{activity}"/>
          </coding>
        </activity>
        <agent><who><reference value="Organization/{who}"/></who></agent>"#
        );
        if let Some(what) = what {
            let _ = write!(
                x,
                r#"
        <entity>
          <role value="revision"/>
          <what><reference value="MessageHeader/{what}"/></what>
        </entity>"#
            );
        }
        let _ = write!(
            x,
            r#"
      </Provenance>
    </resource>
  </entry>"#
        );
    };
    prov(
        &mut x,
        &prov_orig,
        orig,
        &spec.original_activity,
        &receiver_org,
        None,
    );
    prov(
        &mut x,
        &prov_ack,
        message_id,
        "acknowledgement",
        &sender_org,
        Some(orig),
    );
    for (id, o, name) in [
        (&sender_org, &spec.sender, "Sender Organization"),
        (&receiver_org, &spec.receiver, "Receiver Organization"),
    ] {
        let _ = write!(
            x,
            r#"
  <entry>
    <fullUrl value="{BASE}/Organization/{id}"/>
    <resource>
      <Organization>
        <id value="{id}"/>
        <meta><profile value="{ORG_PROFILE}"/></meta>
        <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>Organization</p></div></text>
        <identifier>
          <system value="https://www.gs1.org/gln"/>
          <value value="{gln}"/>
        </identifier>
        <identifier>
          <system value="urn:oid:1.2.208.176.1.1"/>
          <value value="{sor}"/>
        </identifier>
        <name value="{name}"/>
      </Organization>
    </resource>
  </entry>"#,
            gln = o.gln,
            sor = o.sor,
        );
    }
    if let (Some(oo), Some(code)) = (&oo, error) {
        let _ = write!(
            x,
            r#"
  <entry>
    <fullUrl value="{BASE}/OperationOutcome/{oo}"/>
    <resource>
      <OperationOutcome>
        <id value="{oo}"/>
        <meta><profile value="{OO_PROFILE}"/></meta>
        <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>OperationOutcome</p></div></text>
        <issue>
          <severity value="error"/>
          <code value="processing"/>
          <details>
            <coding>
              <system value="http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-acknowledgement-error-codes"/>
              <code value="{code}"/>
            </coding>
          </details>
        </issue>
      </OperationOutcome>
    </resource>
  </entry>"#
        );
    }
    x.push_str("\n</Bundle>\n");
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn instants() {
        assert_eq!(instant(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_662_033_660);
        assert_eq!(instant(t), "2022-09-01T12:01:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(instant(leap), "2000-02-29T00:00:00Z");
    }

    /// Pinned values (computed independently with Python's hashlib): ids derived before a crash must
    /// equal those derived after an upgrade, or a rebuilt acknowledgement would not be a duplicate.
    #[test]
    fn derived_uuids_are_stable_and_kept_apart_by_domain() {
        let a = derived_uuid("sammen-auto-ack", "m1", 0);
        assert_eq!(a, "67a3106b-de26-449f-b874-be942192e921");
        assert_eq!(
            derived_uuid("sammen-amqp-nack", "m1", 0),
            "f0290123-164a-4a1e-b60d-b1f2c3a75fe7"
        );
        assert_ne!(a, derived_uuid("sammen-auto-ack", "m1", 1));
        assert_eq!(&a[14..15], "4", "version 4");
        assert!(
            matches!(&a[19..20], "8" | "9" | "a" | "b"),
            "RFC 4122 variant"
        );
    }
}
