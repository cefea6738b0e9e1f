//! Certificate verification for the REST API (server and clients) and the etcd client, with
//! what OpenSSL (so Patroni, patronictl and etcd's Go TLS) accepts on top of WebPKI: a peer
//! certificate that is itself one of the trusted certificates (docs/compat.md#tls); and the
//! reading of PEM certificates and (encrypted) keys ([`pem`]).
//!
//! The common Patroni setup is one certificate made with `openssl req -x509 -newkey ...` used
//! as CA file, certificate and client certificate everywhere. OpenSSL marks it `CA:TRUE`;
//! webpki refuses a CA certificate as an end entity (`CaUsedAsEndEntity`) and so refused the
//! whole setup. OpenSSL finds such a certificate in its trust store and stops there: it is
//! trusted by identity. So do these verifiers: WebPKI first; if it refuses and the presented
//! certificate is byte-identical to a trusted one, the certificate is accepted when it is
//! within its validity period, its extended key usage (if any) allows the purpose (TLS server
//! or client, as OpenSSL's purpose check) and, for a server, it names the host we connect to.
//! The handshake signature is verified as always, so the peer holds the key. An unknown
//! self-signed certificate is refused as `UnknownIssuer`.

#![forbid(unsafe_code)]

pub mod pem;
mod verify;
mod x509;

#[cfg(test)]
mod tests;

pub use verify::{insecure_server_verifier, TrustError, TrustStore};
