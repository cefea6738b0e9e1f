//! The verifiers: rustls's WebPKI ones with OpenSSL's trusted-certificate rule as a second
//! look (see the crate documentation).

use crate::x509;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// A CA file that cannot be used to verify peers.
#[derive(Debug, Error)]
pub enum TrustError {
    #[error("certificate #{number} of the file is not a usable CA certificate: {source}")]
    Anchor {
        /// 1-based position in the file.
        number: usize,
        #[source]
        source: Error,
    },
    #[error("the file has no certificate to trust")]
    Empty,
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
}

/// The certificates of a CA file (`restapi.cafile`, `ctl.cacert`, `etcd3.cacert`): the trust
/// anchors of WebPKI, and the certificates trusted as they are.
#[derive(Debug, Clone)]
pub struct TrustStore {
    roots: Arc<RootCertStore>,
    trusted: Arc<[CertificateDer<'static>]>,
    provider: Arc<CryptoProvider>,
}

impl TrustStore {
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<TrustStore, TrustError> {
        if certs.is_empty() {
            return Err(TrustError::Empty);
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|source| TrustError::Anchor {
                    number: i + 1,
                    source,
                })?;
        }
        Ok(TrustStore {
            roots: Arc::new(roots),
            trusted: certs.into(),
            provider,
        })
    }

    /// For clients: verifies servers against these certificates and the name connected to.
    pub fn server_verifier(&self) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()?;
        Ok(Arc::new(ServerVerifier {
            webpki,
            store: self.clone(),
        }))
    }

    /// For servers: verifies client certificates; `mandatory` refuses clients without one
    /// (`verify_client: required`), otherwise they may connect unauthenticated (`optional`).
    pub fn client_verifier(
        &self,
        mandatory: bool,
    ) -> Result<Arc<dyn ClientCertVerifier>, TrustError> {
        let builder =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone());
        let builder = if mandatory {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        Ok(Arc::new(ClientVerifier {
            webpki: builder.build()?,
            store: self.clone(),
        }))
    }

    /// The second look at `end_entity` after WebPKI `refused` it, for `purpose` (an EKU OID).
    pub(crate) fn second_look(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
        purpose: &[u8],
        refused: Error,
    ) -> Result<(), Error> {
        let Some(fields) = x509::parse(end_entity) else {
            return Err(refused);
        };
        if !self
            .trusted
            .iter()
            .any(|t| t.as_ref() == end_entity.as_ref())
        {
            // webpki refuses a CA certificate as an end entity before it looks for an issuer
            // (an opaque `CaUsedAsEndEntity`); an unknown self-signed certificate is simply
            // not trusted (OpenSSL: "self-signed certificate").
            if fields.self_issued()
                && matches!(
                    refused,
                    Error::InvalidCertificate(CertificateError::Other(_))
                )
            {
                return Err(CertificateError::UnknownIssuer.into());
            }
            return Err(refused);
        }
        let at = |secs: u64| UnixTime::since_unix_epoch(Duration::from_secs(secs));
        if now.as_secs() < fields.not_before {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before: at(fields.not_before),
            }
            .into());
        }
        if now.as_secs() > fields.not_after {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after: at(fields.not_after),
            }
            .into());
        }
        if !fields.allows(purpose) {
            return Err(CertificateError::InvalidPurpose.into());
        }
        tracing::debug!(
            "accepted the peer's certificate: it is one of the trusted certificates \
             (self-signed, as OpenSSL accepts it)"
        );
        Ok(())
    }

    fn verify12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct ServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    store: TrustStore,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(refused) => {
                self.store
                    .second_look(end_entity, now, x509::SERVER_AUTH, refused)?;
                verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.store.verify12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.store.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.store.schemes()
    }
}

#[derive(Debug)]
struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    store: TrustStore,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => Ok(verified),
            Err(refused) => {
                self.store
                    .second_look(end_entity, now, x509::CLIENT_AUTH, refused)?;
                Ok(ClientCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.store.verify12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.store.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.store.schemes()
    }
}

/// `ctl.insecure` / `-k`: any server certificate is accepted (the handshake signature is still
/// checked, so the server holds the key of the certificate it sent).
pub fn insecure_server_verifier(provider: Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Insecure(provider))
}

#[derive(Debug)]
struct Insecure(Arc<CryptoProvider>);

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
