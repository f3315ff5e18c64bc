//! Fuzz the sbdh envelope two ways: the input as a whole envelope document (seeded with real
//! envelopes), and the input as the base64 payload of a valid envelope, so the unwrap → inner-parse →
//! agreement path sees arbitrary inner bytes.
#![no_main]
use base64::Engine;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const PRE: &str = r#"<StandardBusinessDocument xmlns="http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"><StandardBusinessDocumentHeader><HeaderVersion>1.0</HeaderVersion><Sender><Identifier Authority="iso6523-actorid-upis">0088:5790002515200</Identifier></Sender><Receiver><Identifier Authority="iso6523-actorid-upis">0088:5790002508226</Identifier></Receiver><DocumentIdentification><Standard>urn:dk:healthcare:medcom:oioxml:schema:xsd:NotificationOfAdmission</Standard><TypeVersion>XD2030C</TypeVersion><InstanceIdentifier>5790002515200:EPIC394363364</InstanceIdentifier><Type>XDIS20</Type><MultipleType>false</MultipleType><CreationDateAndTime>2021-06-24T10:08:00</CreationDateAndTime></DocumentIdentification></StandardBusinessDocumentHeader><BinaryContent xmlns="http://peppol.eu/xsd/ticc/envelope/1.0" mimeType="text/xml" encoding="UTF-8">"#;
const POST: &str = r#"</BinaryContent></StandardBusinessDocument>"#;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, inner)) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
            common::check(format!("{PRE}{b64}{POST}").as_bytes());
        }
        _ => common::check(data),
    }
});
