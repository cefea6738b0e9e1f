//! PEM files: certificates, and private keys as Patroni's settings give them (`restapi.keyfile`
//! with `keyfile_password`, `zookeeper.key` with `key_password`).
//!
//! Keys: PEM PKCS#8, PKCS#1 (RSA) or SEC1 (EC); with a password, an encrypted PKCS#8 key
//! (`BEGIN ENCRYPTED PRIVATE KEY`, as written by `openssl pkcs8 -topk8`). Legacy
//! OpenSSL-encrypted PEM (`Proc-Type: 4,ENCRYPTED`) is refused with a conversion hint.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A PEM file that cannot be read or used; names the file.
#[derive(Debug, Error)]
pub enum PemError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> PemError {
    PemError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read("certificate file", path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no certificate (BEGIN CERTIFICATE) found"));
    }
    Ok(certs)
}

/// The private key in a PEM file, decrypted with `password` when it is encrypted.
/// `password_setting` names the setting that holds the password, for messages.
pub fn load_private_key(
    path: &Path,
    password: Option<&str>,
    password_setting: &str,
) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read("private key file", path)?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(invalid(
            path,
            "legacy OpenSSL-encrypted keys are not supported; convert it with \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW`",
        ));
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password else {
            return Err(invalid(
                path,
                format!("the key is encrypted: set {password_setting}"),
            ));
        };
        let (_, doc) = pkcs8::SecretDocument::from_pem(&text)
            .map_err(|e| invalid(path, format!("not a PEM encrypted key: {e}")))?;
        let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| invalid(path, format!("not a PKCS#8 encrypted key: {e}")))?;
        let plain = encrypted.decrypt(password).map_err(|_| {
            invalid(
                path,
                format!("cannot decrypt the key: wrong {password_setting}?"),
            )
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| invalid(path, format!("no usable private key found: {e}")))
}
