//! Message families Sammen understands.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A family of MedCom messages: one FHIR message type or one OIOXML letter type.
///
/// The string form (`as_str`) is stable: it is used in routing keys, metric labels and the JSON report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Family {
    /// FHIR HospitalNotification 3.x (sygehusadvis).
    HospitalNotification,
    /// FHIR CareCommunication 5.x (korrespondancemeddelelse).
    CareCommunication,
    /// FHIR Acknowledgement 2.x (kvittering).
    Acknowledgement,
    /// FHIR messaging base `empty-message`.
    EmptyMessage,
    /// FHIR HomeCareObservation (seen inside EHMI SBDH samples); only generic messaging rules apply.
    HomeCareObservation,
    /// OIOXML XDIS20 NotificationOfAdmission (indlæggelsesadvis).
    #[serde(rename = "XDIS20")]
    Xdis20,
    /// OIOXML XDIS17 NotificationOfDischarge (udskrivningsadvis).
    #[serde(rename = "XDIS17")]
    Xdis17,
    /// OIOXML XDIS18 ReportOfDischarge (udskrivningsrapport).
    #[serde(rename = "XDIS18")]
    Xdis18,
    /// OIOXML XDIS21 ProgressOfCarePlan (plejeforløbsplan).
    #[serde(rename = "XDIS21")]
    Xdis21,
    /// OIOXML XDIS91 ClinicalEmail (korrespondancemeddelelse).
    #[serde(rename = "XDIS91")]
    Xdis91,
    /// OIOXML XBIN01 binary letter.
    #[serde(rename = "XBIN01")]
    Xbin01,
    /// OIOXML XREF01 HospitalReferral (henvisning); seen inside the EHMI SBDH samples.
    #[serde(rename = "XREF01")]
    Xref01,
    /// OIOXML XCTL01 negative VANS receipt.
    #[serde(rename = "XCTL01")]
    Xctl01,
    /// OIOXML XCTL02 negative receipt.
    #[serde(rename = "XCTL02")]
    Xctl02,
    /// OIOXML XCTL03 positive receipt.
    #[serde(rename = "XCTL03")]
    Xctl03,
}

impl Family {
    /// Every family, in a fixed order (for metrics and documentation).
    pub const ALL: [Family; 15] = [
        Family::HospitalNotification,
        Family::CareCommunication,
        Family::Acknowledgement,
        Family::EmptyMessage,
        Family::HomeCareObservation,
        Family::Xdis20,
        Family::Xdis17,
        Family::Xdis18,
        Family::Xdis21,
        Family::Xdis91,
        Family::Xbin01,
        Family::Xref01,
        Family::Xctl01,
        Family::Xctl02,
        Family::Xctl03,
    ];

    /// Stable name, as used in routing keys, labels and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::HospitalNotification => "HospitalNotification",
            Family::CareCommunication => "CareCommunication",
            Family::Acknowledgement => "Acknowledgement",
            Family::EmptyMessage => "EmptyMessage",
            Family::HomeCareObservation => "HomeCareObservation",
            Family::Xdis20 => "XDIS20",
            Family::Xdis17 => "XDIS17",
            Family::Xdis18 => "XDIS18",
            Family::Xdis21 => "XDIS21",
            Family::Xdis91 => "XDIS91",
            Family::Xbin01 => "XBIN01",
            Family::Xref01 => "XREF01",
            Family::Xctl01 => "XCTL01",
            Family::Xctl02 => "XCTL02",
            Family::Xctl03 => "XCTL03",
        }
    }

    /// True for FHIR message families.
    pub const fn is_fhir(self) -> bool {
        matches!(
            self,
            Family::HospitalNotification
                | Family::CareCommunication
                | Family::Acknowledgement
                | Family::EmptyMessage
                | Family::HomeCareObservation
        )
    }

    /// True for receipts/acknowledgements, which are never themselves acknowledged (MedCom KR2).
    pub const fn is_acknowledgement(self) -> bool {
        matches!(
            self,
            Family::Acknowledgement | Family::Xctl01 | Family::Xctl02 | Family::Xctl03
        )
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not a known family.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message family")]
pub struct UnknownFamily;

impl FromStr for Family {
    type Err = UnknownFamily;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownFamily)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for f in Family::ALL {
            assert_eq!(f.as_str().parse::<Family>(), Ok(f));
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
        }
        assert_eq!("nope".parse::<Family>(), Err(UnknownFamily));
    }
}
