//! The Acknowledgement builder (`sammen_fhir::build`) makes messages our own validator accepts, for every
//! response code, answering what it was asked to answer, between the parties it was given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sammen_adapters::{validate, Options};
use sammen_fhir::build::{acknowledgement, AckSpec, BuildError, Org};
use sammen_model::{AckCode, Family};
use std::time::{Duration, UNIX_EPOCH};

fn ids() -> impl FnMut() -> String {
    let mut n = 0u64;
    move || {
        n += 1;
        format!("5b1e0000-0000-4000-8000-{n:012x}")
    }
}

fn spec(code: AckCode, error: Option<&str>) -> AckSpec {
    AckSpec {
        original_message_id: "b9b4818e-02de-4cc4-b418-d20cbc7b5404".into(),
        original_activity: "admit-inpatient".into(),
        sender: Org {
            gln: "5790001348120".into(),
            sor: "953741000016009".into(),
        },
        receiver: Org {
            gln: "5790000209354".into(),
            sor: "265161000016000".into(),
        },
        code,
        error_code: error.map(str::to_owned),
        time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

#[test]
fn built_acknowledgements_pass_the_validator() {
    for (code, err) in [
        (AckCode::Ok, None),
        (
            AckCode::TransientError,
            Some("MSG_Mailbox_Out_Of_Operation"),
        ),
        (AckCode::FatalError, Some("MSG_VALUESET_VALUE_UNKNOWN")),
    ] {
        let mid = "a0000000-0000-4000-8000-000000000001";
        let bid = "a0000000-0000-4000-8000-000000000002";
        let xml = acknowledgement(&spec(code, err), mid, bid, &mut ids()).unwrap();
        let r = validate(xml.as_bytes(), &Options::default());
        assert!(r.is_valid(), "{code:?}: {:#?}", r.issues);
        assert!(
            r.issues.is_empty(),
            "{code:?}: warnings too: {:#?}",
            r.issues
        );
        assert_eq!(r.family, Some(Family::Acknowledgement));
        assert_eq!(r.message_id.as_deref(), Some(mid));
        assert_eq!(r.envelope_id.as_deref(), Some(bid));
        assert_eq!(r.sender.gln.as_deref(), Some("5790001348120"));
        assert_eq!(r.receiver.gln.as_deref(), Some("5790000209354"));
        let resp = r.response.unwrap();
        assert_eq!(resp.message_id, "b9b4818e-02de-4cc4-b418-d20cbc7b5404");
        assert_eq!(resp.code, code);
    }
}

#[test]
fn refuses_what_it_cannot_build() {
    let mut s = spec(AckCode::FatalError, None);
    assert_eq!(
        acknowledgement(&s, "a", "b", &mut ids()),
        Err(BuildError::ErrorCodeMissing)
    );
    s = spec(AckCode::Ok, None);
    s.original_message_id = "x\"/><evil".into();
    assert!(matches!(
        acknowledgement(&s, "a", "b", &mut ids()),
        Err(BuildError::NotPlain(_))
    ));
}
