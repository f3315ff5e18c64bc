//! A stand-in for the façade (sammen-adapters): decode, parse, dispatch, unwrap envelopes.
//! FHIR payloads are only parsed here (their validation belongs to sammen-fhir).

#![allow(dead_code)]

use sammen_model::{Issue, Report};
use sammen_xml::{ns, Document, Limits, Node};

pub fn validate(bytes: &[u8]) -> Report {
    let mut r = Report::default();
    run(bytes, false, 0, &mut r);
    r
}

fn run(bytes: &[u8], inner: bool, depth: usize, r: &mut Report) {
    let decoded = match sammen_xml::decode(bytes, inner) {
        Ok(d) => d,
        Err(e) => return r.push(Issue::error(e.code(), "document", e.to_string())),
    };
    let doc = match Document::parse(&decoded.text, &Limits::default(), &[ns::XHTML]) {
        Ok(d) => d,
        Err(e) => {
            let code = match e {
                sammen_xml::XmlError::Malformed { .. }
                | sammen_xml::XmlError::Empty
                | sammen_xml::XmlError::ContentAfterRoot { .. }
                | sammen_xml::XmlError::UnboundPrefix { .. }
                    if inner =>
                {
                    "envelope.payload.not-well-formed"
                }
                _ => e.code(),
            };
            return r.push(Issue::error(code, "payload", e.to_string()));
        }
    };
    dispatch(doc.root(), depth, r);
}

fn dispatch(root: Node<'_>, depth: usize, r: &mut Report) {
    if root.name() == "Emessage" {
        return sammen_oioxml::validate_emessage(root, r);
    }
    if root.is(ns::FHIR, "Bundle") {
        return; // not ours
    }
    let vans = sammen_envelope::is_vans_root(root);
    if !vans && !sammen_envelope::is_sbdh_root(root) {
        return r.push(Issue::error(
            "message.unknown-root",
            root.name(),
            "unknown root",
        ));
    }
    if depth >= 2 {
        return r.push(Issue::error(
            "envelope.nesting-too-deep",
            root.name(),
            "too deep",
        ));
    }
    let payload = if vans {
        sammen_envelope::open_vans(root, r)
    } else {
        sammen_envelope::open_sbdh(root, r)
    };
    let Some(p) = payload else { return };
    let this = r.transport.take();
    run(&p.bytes, p.infer_latin1, depth + 1, r);
    r.transport = this;
    sammen_envelope::check_agreement(r);
}
