//! The verifiers on certificates made by the `openssl` command line (as Patroni users make
//! them) and by rcgen (for what `openssl req` cannot make: expired ones, key usages).

use crate::{x509, TrustStore};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, Error, OtherError};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `openssl req -x509 -newkey rsa:2048 ...` for 127.0.0.1, as in Patroni setups: `CA:TRUE`.
fn openssl_self_signed(dir: &std::path::Path, name: &str) -> CertificateDer<'static> {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command (Debian package openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    CertificateDer::from_pem_file(&cert).unwrap()
}

/// A self-signed CA certificate for 127.0.0.1 made by rcgen.
fn self_signed(edit: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    edit(&mut params);
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .der()
        .clone()
}

fn store(certs: &[&CertificateDer<'static>]) -> TrustStore {
    TrustStore::new(certs.iter().map(|c| (*c).clone()).collect(), provider()).unwrap()
}

fn as_server(
    store: &TrustStore,
    cert: &CertificateDer<'_>,
    name: &str,
    now: UnixTime,
) -> Result<(), Error> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    store
        .server_verifier()
        .unwrap()
        .verify_server_cert(cert, &[], &name, &[], now)
        .map(|_| ())
}

fn as_client(store: &TrustStore, cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
    store
        .client_verifier(true)
        .unwrap()
        .verify_client_cert(cert, &[], now)
        .map(|_| ())
}

fn cert_error(result: Result<(), Error>) -> CertificateError {
    match result {
        Err(Error::InvalidCertificate(e)) => e,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

#[test]
fn a_trusted_openssl_self_signed_certificate_is_accepted_as_server_and_client() {
    let dir = tempfile_dir();
    let cert = openssl_self_signed(dir.path(), "single");
    let fields = x509::parse(&cert).expect("an X.509 certificate");
    assert!(fields.self_issued() && fields.ext_key_usage.is_none());
    let trusted = store(&[&cert]);
    let now = UnixTime::now();
    as_server(&trusted, &cert, "127.0.0.1", now).unwrap();
    as_client(&trusted, &cert, now).unwrap();
    // The name is still checked.
    assert!(matches!(
        cert_error(as_server(&trusted, &cert, "localhost", now)),
        CertificateError::NotValidForNameContext { .. }
    ));
}

#[test]
fn an_unknown_self_signed_certificate_is_refused() {
    let dir = tempfile_dir();
    let trusted_cert = openssl_self_signed(dir.path(), "trusted");
    let stranger = openssl_self_signed(dir.path(), "stranger");
    let trusted = store(&[&trusted_cert]);
    let now = UnixTime::now();
    assert_eq!(
        cert_error(as_server(&trusted, &stranger, "127.0.0.1", now)),
        CertificateError::UnknownIssuer
    );
    assert_eq!(
        cert_error(as_client(&trusted, &stranger, now)),
        CertificateError::UnknownIssuer
    );
    // Optional client certificates: a presented one is still verified.
    let optional = trusted.client_verifier(false).unwrap();
    assert!(optional.verify_client_cert(&stranger, &[], now).is_err());
}

#[test]
fn an_expired_or_not_yet_valid_trusted_certificate_is_refused() {
    let expired = self_signed(|p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let trusted = store(&[&expired]);
    let now = UnixTime::now();
    assert!(matches!(
        cert_error(as_server(&trusted, &expired, "127.0.0.1", now)),
        CertificateError::ExpiredContext { .. } | CertificateError::Expired
    ));
    assert!(matches!(
        cert_error(as_client(&trusted, &expired, now)),
        CertificateError::ExpiredContext { .. } | CertificateError::Expired
    ));

    // Our own validity check, whatever WebPKI reported first.
    let current = self_signed(|p| {
        p.not_before = date_time_ymd(2025, 1, 1);
        p.not_after = date_time_ymd(2099, 1, 1);
    });
    let trusted = store(&[&current]);
    let opaque = || {
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            std::io::Error::other("CaUsedAsEndEntity"),
        ))))
    };
    let far = UnixTime::since_unix_epoch(Duration::from_secs(4_200_000_000));
    let early = UnixTime::since_unix_epoch(Duration::from_secs(1_000_000_000));
    let purpose = x509::SERVER_AUTH;
    assert!(matches!(
        cert_error(trusted.second_look(&current, far, purpose, opaque())),
        CertificateError::ExpiredContext { .. }
    ));
    assert!(matches!(
        cert_error(trusted.second_look(&current, early, purpose, opaque())),
        CertificateError::NotValidYetContext { .. }
    ));
    trusted
        .second_look(&current, UnixTime::now(), purpose, opaque())
        .unwrap();
}

#[test]
fn extended_key_usage_limits_the_purpose() {
    let client_only = self_signed(|p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    let fields = x509::parse(&client_only).unwrap();
    assert!(fields.allows(x509::CLIENT_AUTH) && !fields.allows(x509::SERVER_AUTH));
    let trusted = store(&[&client_only]);
    let now = UnixTime::now();
    as_client(&trusted, &client_only, now).unwrap();
    assert_eq!(
        cert_error(as_server(&trusted, &client_only, "127.0.0.1", now)),
        CertificateError::InvalidPurpose
    );
}

#[test]
fn certificates_signed_by_a_trusted_ca_still_verify() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&KeyPair::generate().unwrap(), &ca, &ca_key)
        .unwrap();
    let trusted = store(&[ca.der()]);
    let now = UnixTime::now();
    as_server(&trusted, leaf.der(), "127.0.0.1", now).unwrap();
    as_client(&trusted, leaf.der(), now).unwrap();
    // An unrelated self-signed certificate is still refused.
    let other = self_signed(|_| {});
    assert!(as_client(&trusted, &other, now).is_err());
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
