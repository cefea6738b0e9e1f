//! HTTPS with generated certificates: server certificate, encrypted key, client
//! certificates (`verify_client`), and the client side used by the CLI.

use crate::common::*;
use pgherd_api::tls::ClientTls;
use pgherd_api::{serve, ApiSettings, SettingsUpdater};
use pgherd_config::{RestApi, VerifyClient};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1/localhost (key encrypted with "keypass"),
    /// and a client certificate, as PEM files.
    fn generate() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "pgherd test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca_cert, &ca_key)
            .unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(vec!["operator".to_string()]).unwrap();
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();

        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca_cert.pem());
        write("server.pem", &server.pem());
        write(
            "server.key",
            &encrypt(&server_key.serialize_der(), "keypass"),
        );
        write("client.pem", &client.pem());
        write("client.key", &client_key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// PKCS#8 encrypted with PBES2 (PBKDF2-SHA256, AES-256-CBC), as `openssl pkcs8 -topk8 -v2`.
fn encrypt(pkcs8_der: &[u8], password: &str) -> String {
    use pkcs8::der::pem::LineEnding;
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &[7u8; 16], &[9u8; 16])
            .unwrap();
    let info = pkcs8::PrivateKeyInfo::try_from(pkcs8_der).unwrap();
    let doc = info.encrypt_with_params(params, password).unwrap();
    doc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .unwrap()
        .to_string()
}

async fn https_server(restapi: &RestApi) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let (port, stop, _) = reloadable_https_server(restapi).await;
    (port, stop)
}

async fn reloadable_https_server(
    restapi: &RestApi,
) -> (u16, tokio::sync::oneshot::Sender<()>, SettingsUpdater) {
    let settings = ApiSettings::from_config(restapi, &Default::default()).unwrap();
    assert!(settings.tls_enabled());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_snapshots, ctx) = context(leader(), FixedDcs::new(Some(patroni_cluster())));
    let ctx = ctx.with_settings(settings);
    let updater = ctx.settings_updater();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // Keep the snapshot sender alive as long as the server.
        let _keep = _snapshots;
        serve(listener, ctx, async {
            let _ = stopped.await;
        })
        .await
    });
    (port, stop, updater)
}

fn restapi(pki: &Pki, verify_client: VerifyClient) -> RestApi {
    RestApi {
        certfile: Some(pki.path("server.pem")),
        keyfile: Some(pki.path("server.key")),
        keyfile_password: Some("keypass".into()),
        cafile: Some(pki.path("ca.pem")),
        verify_client,
        ..Default::default()
    }
}

fn client(cacert: Option<&Path>, cert: Option<(&Path, &Path)>, insecure: bool) -> reqwest::Client {
    ClientTls {
        insecure,
        cacert: cacert.map(Path::to_path_buf),
        certfile: cert.map(|c| c.0.to_path_buf()),
        keyfile: cert.map(|c| c.1.to_path_buf()),
        keyfile_password: None,
    }
    .http_client(None, Duration::from_secs(5))
    .unwrap()
}

#[tokio::test]
async fn https_with_encrypted_key_and_ca_verification() {
    let pki = Pki::generate();
    let (port, stop) = https_server(&restapi(&pki, VerifyClient::None)).await;
    let url = format!("https://127.0.0.1:{port}/patroni");

    let verified = client(Some(&pki.path("ca.pem")), None, false);
    let r = verified.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["role"], "master");

    // Without the CA the certificate is not trusted, unless insecure (ctl.insecure / -k).
    assert!(client(None, None, false).get(&url).send().await.is_err());
    let r = client(None, None, true).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to an HTTPS port gets nothing useful.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/patroni")).await;
    assert!(plain.map_or(true, |r| r.status() != 200));
    let _ = stop.send(());
}

#[tokio::test]
async fn wrong_key_password_is_a_clear_error() {
    let pki = Pki::generate();
    let mut api = restapi(&pki, VerifyClient::None);
    api.keyfile_password = Some("nope".into());
    let err = ApiSettings::from_config(&api, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("wrong keyfile_password"), "{err}");
    api.keyfile_password = None;
    let err = ApiSettings::from_config(&api, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("set keyfile_password"), "{err}");
}

#[tokio::test]
async fn client_certificates() {
    let pki = Pki::generate();
    let ca = pki.path("ca.pem");
    let cert = (pki.path("client.pem"), pki.path("client.key"));

    // required: no certificate, no connection.
    let (port, stop) = https_server(&restapi(&pki, VerifyClient::Required)).await;
    let url = format!("https://127.0.0.1:{port}/config");
    assert!(client(Some(&ca), None, false)
        .get(&url)
        .send()
        .await
        .is_err());
    let r = client(Some(&ca), Some((&cert.0, &cert.1)), false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = stop.send(());

    // optional: GET without a certificate, but unsafe calls need one.
    let (port, stop) = https_server(&restapi(&pki, VerifyClient::Optional)).await;
    let url = format!("https://127.0.0.1:{port}/config");
    let anonymous = client(Some(&ca), None, false);
    assert_eq!(anonymous.get(&url).send().await.unwrap().status(), 200);
    let r = anonymous
        .patch(&url)
        .body(r#"{"pause":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "client certificate required");
    // With a certificate the request passes access control (the fixed DCS then refuses
    // the write: 409/503 rather than 403).
    let r = client(Some(&ca), Some((&cert.0, &cert.1)), false)
        .patch(&url)
        .body(r#"{"pause":true}"#)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 403);
    let _ = stop.send(());
}

/// Patroni's common setup: one `openssl req -x509` certificate (OpenSSL marks it `CA:TRUE`)
/// as `cafile`, `certfile` and client certificate, with `verify_client: required`.
#[tokio::test]
async fn a_single_openssl_certificate_as_ca_server_and_client() {
    use pgherd_testkit::pki::openssl_self_signed;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_self_signed(dir.path(), "single").unwrap();
    let (stranger, stranger_key) = openssl_self_signed(dir.path(), "stranger").unwrap();
    let api = RestApi {
        certfile: Some(cert.clone()),
        keyfile: Some(key.clone()),
        cafile: Some(cert.clone()),
        verify_client: VerifyClient::Required,
        ..Default::default()
    };
    let (port, stop) = https_server(&api).await;
    let url = format!("https://127.0.0.1:{port}/config");

    let same = client(Some(&cert), Some((&cert, &key)), false);
    assert_eq!(same.get(&url).send().await.unwrap().status(), 200);
    let r = same
        .patch(&url)
        .body(r#"{"pause":true}"#)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 403);

    // Another self-signed certificate is refused as a client certificate; a server whose
    // certificate is not in our CA file is refused by the client.
    let unknown_client = client(Some(&cert), Some((&stranger, &stranger_key)), false);
    assert!(unknown_client.get(&url).send().await.is_err());
    let unknown_server = client(Some(&stranger), Some((&cert, &key)), false);
    assert!(unknown_server.get(&url).send().await.is_err());
    let _ = stop.send(());
}

/// SIGHUP with a renewed certificate and new credentials: the running API serves the new
/// certificate to the next client and requires the credentials on the next unsafe request.
#[tokio::test]
async fn reload_swaps_certificate_and_credentials() {
    let old = Pki::generate();
    let new = Pki::generate();
    let (port, stop, updater) = reloadable_https_server(&restapi(&old, VerifyClient::None)).await;
    let url = format!("https://127.0.0.1:{port}/config");
    let trusts_old = client(Some(&old.path("ca.pem")), None, false);
    let trusts_new = client(Some(&new.path("ca.pem")), None, false);
    assert_eq!(trusts_old.get(&url).send().await.unwrap().status(), 200);
    assert!(trusts_new.get(&url).send().await.is_err());

    let mut renewed = restapi(&new, VerifyClient::None);
    renewed.authentication = Some(pgherd_config::BasicAuth {
        username: Some("admin".into()),
        password: Some("s3cret".into()),
    });
    let settings = ApiSettings::from_config(&renewed, &Default::default()).unwrap();
    assert_eq!(updater.replace(settings), None);
    // New connections (each client above keeps its own pool: build fresh ones).
    let trusts_old = client(Some(&old.path("ca.pem")), None, false);
    let trusts_new = client(Some(&new.path("ca.pem")), None, false);
    assert!(trusts_old.get(&url).send().await.is_err());
    assert_eq!(trusts_new.get(&url).send().await.unwrap().status(), 200);
    let r = trusts_new
        .patch(&url)
        .body(r#"{"pause":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "unsafe calls need the new credentials");

    // Dropping TLS on reload cannot turn this listener into plain HTTP: TLS is kept.
    let plain = ApiSettings::from_config(&RestApi::default(), &Default::default()).unwrap();
    assert!(updater.replace(plain).is_some());
    assert_eq!(trusts_new.get(&url).send().await.unwrap().status(), 200);
    let _ = stop.send(());
}
