//! Acknowledgement 2.x: response code, the acknowledged message id, OperationOutcome rules
//! (medcom-acknowledgement-1) and its MedCom error codes. Header profile (-2) and cardinalities are in
//! the table.

use crate::bundle::{reference_of, Bundle};
use crate::messaging::Ctx;
use crate::path;
use crate::rules::Tables;
use sammen_model::{AckCode, Issue, Report, ResponseRef};

pub fn check(t: &Tables, b: &Bundle<'_>, _ctx: &Ctx<'_, '_>, report: &mut Report) {
    let root = b.root;
    let Some(h) = b.header else { return };
    let Some(resp) = h.child("response") else {
        return;
    };
    let code_node = resp.child("code");
    let code = code_node
        .and_then(|c| c.value())
        .filter(|c| t.valuesets.response_code.iter().any(|v| v == c))
        .and_then(AckCode::parse);
    if let (Some(n), None) = (code_node, code) {
        report.push(Issue::error(
            "fhir.valueset.response-code",
            path::of(n, root),
            "MessageHeader.response.code must be ok, transient-error or fatal-error",
        ));
    }
    report.event = code.map(|c| c.as_str().to_owned());
    if let (Some(id), Some(code)) = (resp.child_value("identifier"), code) {
        report.response = Some(ResponseRef {
            message_id: id.to_owned(),
            envelope_id: None,
            code,
        });
    }
    // medcom-acknowledgement-1: a negative acknowledgement says why, in an OperationOutcome.
    if code.is_some_and(|c| c != AckCode::Ok) {
        let has_oo = resp
            .child("details")
            .and_then(reference_of)
            .and_then(|r| b.resolve_as(r, "OperationOutcome"))
            .is_some();
        if !has_oo {
            report.push(Issue::error(
                "medcom-acknowledgement-1",
                path::child(resp, root, "details"),
                "when response.code is not 'ok', response.details must reference a bundled OperationOutcome (medcom-acknowledgement-1)",
            ));
        }
    }
    for oo in b.of_type("OperationOutcome") {
        for issue in oo.children().filter(|c| c.name() == "issue") {
            for coding in issue
                .children()
                .filter(|c| c.name() == "details")
                .flat_map(|d| d.children().filter(|c| c.name() == "coding"))
            {
                let ok = coding.child_value("system") == Some(t.systems.ack_error.as_str())
                    && coding
                        .child_value("code")
                        .is_some_and(|c| t.valuesets.ack_error.iter().any(|v| v == c));
                if !ok {
                    report.push(Issue::error(
                        "fhir.valueset.ack-error-code",
                        path::of(coding, root),
                        "OperationOutcome.issue.details must be a code of medcom-acknowledgement-error-codes",
                    ));
                }
            }
        }
    }
}
