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

/// One certificate and key made by the `openssl` command line (Debian package `openssl`) the
/// way Patroni setups often make them, to be used as CA file, certificate and client
/// certificate at once: `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1
/// -addext subjectAltName=IP:127.0.0.1 -days 2`. OpenSSL marks it `CA:TRUE`.
/// Written as `<name>.pem` and `<name>.key` in `dir`; returns (certificate, key).
pub fn openssl_self_signed(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running openssl (Debian package openssl)")?;
    if !out.status.success() {
        anyhow::bail!(
            "openssl req -x509 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((cert, key))
}

/// Certificates for ZooKeeper over TLS with x509 client authentication: a CA, the server's
/// key store (certificate for 127.0.0.1 and key in one PEM file, as ZooKeeper's PEM key store
/// reads it), two clients with distinct subject DNs (their ZooKeeper `x509` principals), and
/// an unrelated CA that signed none of them.
pub struct ZooKeeperPki {
    pub ca: PathBuf,
    pub server_key_store: PathBuf,
    pub client: ZooKeeperClientCert,
    pub other_client: ZooKeeperClientCert,
    pub wrong_ca: PathBuf,
}

/// One client of [`ZooKeeperPki`].
pub struct ZooKeeperClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate and key in one file (for ZooKeeper's own client).
    pub key_store: PathBuf,
    /// The subject DN as ZooKeeper's X509AuthenticationProvider names it, e.g.
    /// `CN=pgherd-zk-client`.
    pub principal: String,
}

impl ZooKeeperPki {
    pub fn generate(dir: &Path) -> anyhow::Result<ZooKeeperPki> {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            anyhow::Ok(path)
        };
        let new_ca = |cn: &str| {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.self_signed(&key)?;
            anyhow::Ok((cert, key))
        };
        let (ca, ca_key) = new_ca("pgherd ZooKeeper test CA")?;
        let (wrong_ca, _) = new_ca("pgherd unrelated CA")?;
        let leaf = |cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate()?;
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key)?;
            anyhow::Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth)?;
        let client = |name: &str| {
            let cn = format!("pgherd-zk-{name}");
            let (cert, key) = leaf(&cn, ExtendedKeyUsagePurpose::ClientAuth)?;
            anyhow::Ok(ZooKeeperClientCert {
                cert: write(&format!("{name}.pem"), &cert)?,
                key: write(&format!("{name}.key"), &key)?,
                key_store: write(&format!("{name}-store.pem"), &format!("{cert}{key}"))?,
                principal: format!("CN={cn}"),
            })
        };
        Ok(ZooKeeperPki {
            ca: write("zk-ca.pem", &ca.pem())?,
            server_key_store: write("zk-server.pem", &format!("{server_cert}{server_key}"))?,
            client: client("client")?,
            other_client: client("other")?,
            wrong_ca: write("wrong-ca.pem", &wrong_ca.pem())?,
        })
    }
}
