//! Fuzz the vans envelope two ways: the input as a whole envelope document (seeded with real
//! envelopes), and the input as the base64 payload of a valid envelope, so the unwrap → inner-parse →
//! agreement path sees arbitrary inner bytes.
#![no_main]
use base64::Engine;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const PRE: &str = r#"<VANSEnvelope xmlns="urn:oio:medcom:vans-envelope:1.0.4"><SenderID EndPointType="EAN">5790002515200</SenderID><ReceiverID EndPointType="EAN">5790002508226</ReceiverID><EnvelopeIdentifier>EPIC394310891</EnvelopeIdentifier><SentDateTime>2021-06-24T00:32:00</SentDateTime><Message><MetaInformation><Identifier>EPIC394310891</Identifier><Document><Format>XML</Format><Name>XDIS21</Name><Version>XD2134C</Version></Document></MetaInformation><Data>"#;
const POST: &str = r#"</Data></Message></VANSEnvelope>"#;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, inner)) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
            common::check(format!("{PRE}{b64}{POST}").as_bytes());
        }
        _ => common::check(data),
    }
});
