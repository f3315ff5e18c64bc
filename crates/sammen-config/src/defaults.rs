//! Defaults: what `sammen serve` uses without a config file.

use crate::model::Receiver;

/// Receivers of the conformance suite's valid examples (`conformance/examples`): GLN, SOR, name.
/// Registered when no config file names receivers, so every example can be posted to a fresh broker.
pub const EXAMPLE_RECEIVERS: &[(&str, Option<&str>, &str)] = &[
    (
        "5790001348120",
        Some("953741000016009"),
        "Example municipality (FHIR examples)",
    ),
    (
        "5790000209354",
        Some("265161000016000"),
        "Example hospital (FHIR examples)",
    ),
    (
        "5790000121441",
        Some("328051000016008"),
        "Example receiver (OIOXML flows)",
    ),
    (
        "5790001382445",
        Some("359001000016000"),
        "Example sender (OIOXML flows)",
    ),
    ("5790002508226", None, "Example receiver (Region H SBDH)"),
    (
        "5790000201389",
        Some("263001000016001"),
        "Example receiver (EHMI SBDH)",
    ),
    (
        "5790000127092",
        Some("52581000016005"),
        "Example receiver (EHMI HomeCareObservation)",
    ),
    (
        "5790000121526",
        Some("8851000016006"),
        "Example sender (EHMI SBDH)",
    ),
    (
        "5790000123117",
        Some("1144561000016002"),
        "Example sender (EHMI HomeCareObservation)",
    ),
];

/// [`EXAMPLE_RECEIVERS`] as config entries.
pub fn example_receivers() -> Vec<Receiver> {
    EXAMPLE_RECEIVERS
        .iter()
        .map(|(gln, sor, name)| Receiver {
            gln: (*gln).to_string(),
            sor: sor.map(str::to_string),
            name: (*name).to_string(),
            auto_acknowledge: false,
        })
        .collect()
}

/// The broker's own GLN: the inbox delivery receipts are published to. A test GLN (valid check digit)
/// that no MedCom party uses; set `bus.broker_gln` to the operator's GLN in production.
pub const BROKER_GLN: &str = "5790000000005";

/// Listen address without a config.
pub const LISTEN: &str = "127.0.0.1:8080";

/// Data directory without a config.
pub const DATA_DIR: &str = "./data";
