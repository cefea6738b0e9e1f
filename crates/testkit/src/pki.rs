//! Throw-away certificates for TLS tests: a CA, a server certificate for 127.0.0.1/localhost
//! and a client certificate, all signed by the CA, written as PEM files.

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::fs;
use std::path::{Path, PathBuf};

/// The PEM files, in the directory given to [`Pki::generate`].
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "pgherd test CA");
        let ca = ca.self_signed(&ca_key)?;

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names)?;
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key)?;
            anyhow::Ok((cert.pem(), key.serialize_pem()))
        };
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let (server_cert, server_key) = leaf(names, ExtendedKeyUsagePurpose::ServerAuth)?;
        let client = vec!["pgherd-client".to_string()];
        let (client_cert, client_key) = leaf(client, ExtendedKeyUsagePurpose::ClientAuth)?;

        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            anyhow::Ok(path)
        };
        Ok(Pki {
            ca: write("ca.pem", &ca.pem())?,
            server_cert: write("server.pem", &server_cert)?,
            server_key: write("server.key", &server_key)?,
            client_cert: write("client.pem", &client_cert)?,
            client_key: write("client.key", &client_key)?,
        })
    }
}
