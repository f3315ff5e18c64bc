//! Certificates made with rcgen: the dev PKI of zero-config `sammen serve`, and the certificates tests
//! generate at run time (no private key is ever committed).

use crate::error::{io, IdentityError};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// A certificate with its key, as PEM and DER.
#[derive(Debug)]
pub struct Issued {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: String,
    /// Certificate DER.
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Issued {
    /// The private key for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// What a client certificate says and may do.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Subject CN.
    pub common_name: String,
    /// Subject O.
    pub organization: Option<String>,
    /// Subject serialNumber (OCES2 style `CVR:…-UID:…`).
    pub serial_number: Option<String>,
    /// Subject organizationIdentifier (OCES3 style `NTRDK-…`).
    pub organization_identifier: Option<String>,
    /// Valid from (days relative to now; negative is in the past).
    pub valid_from_days: i64,
    /// Valid until (days relative to now).
    pub valid_until_days: i64,
    /// Carry the clientAuth extended key usage (false: serverAuth only, a wrong-usage certificate).
    pub client_auth: bool,
}

impl ClientSpec {
    /// A normal client certificate valid from yesterday for `days`.
    pub fn new(common_name: &str, days: i64) -> Self {
        ClientSpec {
            common_name: common_name.into(),
            organization: None,
            serial_number: None,
            organization_identifier: None,
            valid_from_days: -1,
            valid_until_days: days,
            client_auth: true,
        }
    }
}

/// A certificate authority that issues server and client certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate.
    pub cert: Issued,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

fn printable(s: &str) -> Result<DnValue, IdentityError> {
    Ok(DnValue::PrintableString(s.try_into()?))
}

fn at(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(days)
}

impl CertAuthority {
    /// A new self-signed CA named `common_name` (O=Sammen dev, C=DK), valid ten years.
    pub fn new(common_name: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DK");
        dn.push(DnType::OrganizationName, "Sammen dev");
        dn.push(DnType::CommonName, common_name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = at(-1);
        p.not_after = at(3650);
        let cert = p.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        };
        Ok(CertAuthority {
            issuer: Issuer::new(p, key),
            cert: issued,
        })
    }

    /// The issuer DN as the partner registry compares it.
    pub fn issuer_dn(&self) -> Result<String, IdentityError> {
        Ok(crate::cert::CertSummary::parse(&self.cert.cert_der)?.subject)
    }

    fn sign(&self, p: &CertificateParams) -> Result<Issued, IdentityError> {
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid `days` (from yesterday).
    pub fn issue_server(&self, names: &[&str], days: i64) -> Result<Issued, IdentityError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("sammen"),
        );
        p.distinguished_name = dn;
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = at(-1);
        p.not_after = at(days);
        self.sign(&p)
    }

    /// A client certificate.
    pub fn issue_client(&self, spec: &ClientSpec) -> Result<Issued, IdentityError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DK");
        if let Some(o) = &spec.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        dn.push(DnType::CommonName, spec.common_name.as_str());
        if let Some(s) = &spec.serial_number {
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), printable(s)?);
        }
        if let Some(o) = &spec.organization_identifier {
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 97]), o.as_str());
        }
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![if spec.client_auth {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        p.not_before = at(spec.valid_from_days);
        p.not_after = at(spec.valid_until_days);
        self.sign(&p)
    }
}

/// Paths of the dev PKI (`<data_dir>/pki`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The directory.
    pub dir: PathBuf,
    /// Dev CA certificate: client CA of the broker, and the CA `sammen send --ca` trusts.
    pub ca_cert: PathBuf,
    /// Dev CA key (0600).
    pub ca_key: PathBuf,
    /// Server certificate for 127.0.0.1, ::1 and localhost.
    pub server_cert: PathBuf,
    /// Server key (0600).
    pub server_key: PathBuf,
    /// Hospital client certificate (GLN 5790000209354, SOR 265161000016000), registered by fingerprint.
    pub hospital_cert: PathBuf,
    /// Hospital key (0600).
    pub hospital_key: PathBuf,
    /// Municipality client certificate (GLN 5790001348120, SOR 953741000016009), registered by issuer +
    /// organizationIdentifier.
    pub municipality_cert: PathBuf,
    /// Municipality key (0600).
    pub municipality_key: PathBuf,
    /// `[[partner]]` entries for both.
    pub partners_file: PathBuf,
    /// True when this call created the files (false: they were already there and were left alone).
    pub created: bool,
}

/// The example hospital of `conformance/examples/hospitalnotification` (sender).
pub const DEV_HOSPITAL: (&str, &str) = ("5790000209354", "265161000016000");
/// The example municipality (receiver of the same examples).
pub const DEV_MUNICIPALITY: (&str, &str) = ("5790001348120", "953741000016009");

impl DevPki {
    /// Where the files are (or would be) in `dir`.
    pub fn paths(dir: &Path) -> DevPki {
        let f = |n: &str| dir.join(n);
        DevPki {
            dir: dir.to_path_buf(),
            ca_cert: f("ca.crt"),
            ca_key: f("ca.key"),
            server_cert: f("server.crt"),
            server_key: f("server.key"),
            hospital_cert: f("hospital.crt"),
            hospital_key: f("hospital.key"),
            municipality_cert: f("municipality.crt"),
            municipality_key: f("municipality.key"),
            partners_file: f("partners.toml"),
            created: false,
        }
    }

    fn files(&self) -> [&Path; 9] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.hospital_cert,
            &self.hospital_key,
            &self.municipality_cert,
            &self.municipality_key,
            &self.partners_file,
        ]
    }
}

/// Write a dev CA, a server certificate for 127.0.0.1/::1/localhost, a hospital and a municipality client
/// certificate and their `partners.toml` into `dir`. Keys are 0600. Nothing is ever overwritten: when all
/// files exist they are used as they are; when only some exist, [`IdentityError::PartialDevPki`].
pub fn generate_dev_pki(dir: &Path) -> Result<DevPki, IdentityError> {
    let mut pki = DevPki::paths(dir);
    let present: Vec<&Path> = pki.files().into_iter().filter(|p| p.exists()).collect();
    if present.len() == pki.files().len() {
        return Ok(pki);
    }
    if let Some(p) = present.first() {
        return Err(IdentityError::PartialDevPki(p.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca = CertAuthority::new("Sammen dev CA")?;
    let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"], 825)?;
    let hospital = ca.issue_client(&ClientSpec {
        organization: Some("Herlev og Gentofte Hospital (dev)".into()),
        serial_number: Some("CVR:29190623-UID:52581896".into()),
        ..ClientSpec::new("Hjerteafdelingen dev", 825)
    })?;
    let municipality = ca.issue_client(&ClientSpec {
        organization: Some("Herlev Kommune (dev)".into()),
        organization_identifier: Some("NTRDK-29189870".into()),
        ..ClientSpec::new("Plejecenter Herlev dev", 825)
    })?;
    let issuer = ca.issuer_dn()?;
    let partners = format!(
        "# Dev partners written by `sammen serve` (generate_dev_pki). Copy into your config as needed.\n\
         \n\
         # Mapped by the certificate's SHA-256 fingerprint.\n\
         [[partner]]\n\
         name = \"dev hospital\"\n\
         fingerprint = \"{fp}\"\n\
         send_as = [{{ gln = \"{hg}\", sor = \"{hs}\" }}]\n\
         \n\
         # Mapped as an OCES3 certificate: issuer + subject organizationIdentifier.\n\
         [[partner]]\n\
         name = \"dev municipality\"\n\
         issuer = \"{issuer}\"\n\
         organization_identifier = \"NTRDK-29189870\"\n\
         send_as = [{{ gln = \"{mg}\", sor = \"{ms}\" }}]\n",
        fp = crate::cert::fingerprint(&hospital.cert_der),
        hg = DEV_HOSPITAL.0,
        hs = DEV_HOSPITAL.1,
        mg = DEV_MUNICIPALITY.0,
        ms = DEV_MUNICIPALITY.1,
    );
    write_new(&pki.ca_cert, ca.cert.cert_pem.as_bytes(), 0o644)?;
    write_new(&pki.ca_key, ca.cert.key_pem.as_bytes(), 0o600)?;
    write_new(&pki.server_cert, server.cert_pem.as_bytes(), 0o644)?;
    write_new(&pki.server_key, server.key_pem.as_bytes(), 0o600)?;
    write_new(&pki.hospital_cert, hospital.cert_pem.as_bytes(), 0o644)?;
    write_new(&pki.hospital_key, hospital.key_pem.as_bytes(), 0o600)?;
    write_new(
        &pki.municipality_cert,
        municipality.cert_pem.as_bytes(),
        0o644,
    )?;
    write_new(
        &pki.municipality_key,
        municipality.key_pem.as_bytes(),
        0o600,
    )?;
    // Last: its presence marks a complete PKI.
    write_new(&pki.partners_file, partners.as_bytes(), 0o644)?;
    pki.created = true;
    Ok(pki)
}

/// Create `path` (never overwriting), with `mode` on Unix, write and fsync.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}
