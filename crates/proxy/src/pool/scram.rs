//! SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: the verifier format
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), the server side of the
//! exchange (the proxy authenticating clients), and the client side from a `ClientKey`
//! instead of a password (pgbouncer's technique: a client that proved itself with SCRAM gave
//! the proxy its ClientKey, which logs in to any server that stores the same verifier).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub type Key = [u8; 32];

/// Iterations of verifiers the proxy derives from plaintext secrets (PostgreSQL's default).
pub const DEFAULT_ITERATIONS: u32 = 4096;
pub const MECHANISM: &str = "SCRAM-SHA-256";

pub fn hmac(key: &[u8], msg: &[u8]) -> Key {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(msg);
    m.finalize().into_bytes().into()
}

pub fn sha256(b: &[u8]) -> Key {
    Sha256::digest(b).into()
}

fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// What a server (or the proxy) stores for a SCRAM user.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Key,
    pub server_key: Key,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
    pub fn parse(s: &str) -> Option<Verifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// The verifier of `password` with `salt`, and the ClientKey it comes from.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> (Verifier, Key) {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let v = Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        };
        (v, client_key)
    }

    /// Checks a client's proof; returns its ClientKey when it is right.
    pub fn verify_proof(&self, auth_message: &[u8], proof: &[u8]) -> Option<Key> {
        let proof: Key = proof.try_into().ok()?;
        let client_key = xor(&proof, &hmac(&self.stored_key, auth_message));
        bool::from(sha256(&client_key).ct_eq(&self.stored_key)).then_some(client_key)
    }

    pub fn server_signature(&self, auth_message: &[u8]) -> Key {
        hmac(&self.server_key, auth_message)
    }
}

/// `Hi(Normalize(password), salt, i)`: PBKDF2-HMAC-SHA-256. Passwords that SASLprep rejects
/// are used as they are, as PostgreSQL does.
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Key {
    let normalized = stringprep::saslprep(password)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(normalized.as_bytes(), salt, iterations, &mut out);
    out
}

/// A nonce of 18 random bytes in base64 (printable, no comma), as libpq makes them.
pub fn nonce() -> String {
    let bytes: [u8; 18] = rand::random();
    B64.encode(bytes)
}

/// `key=value` attributes of a SCRAM message.
fn attr(msg: &str, key: char) -> Option<&str> {
    msg.split(',')
        .find_map(|p| p.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// The proxy's side of one client's SCRAM exchange.
pub struct ServerExchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("wrong password")]
    WrongProof,
    #[error("the server's SCRAM salt or iteration count differs from the auth_file's verifier")]
    OtherVerifier,
    #[error("the server's SCRAM signature is wrong")]
    ServerSignature,
}

impl ServerExchange {
    /// Takes the client-first-message; returns the exchange and the server-first-message.
    pub fn start(client_first: &str, v: &Verifier) -> Result<(ServerExchange, String), ScramError> {
        let bare = match client_first.get(..3) {
            Some("n,,") | Some("y,,") => &client_first[3..],
            _ if client_first.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("gs2 header")),
        };
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed("extensions"));
        }
        let client_nonce = attr(bare, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        let nonce = format!("{client_nonce}{}", self::nonce());
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&v.salt), v.iterations);
        Ok((
            ServerExchange {
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Takes the client-final-message; returns the ClientKey and the server-final-message.
    pub fn finish(&self, client_final: &str, v: &Verifier) -> Result<(Key, String), ScramError> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let binding = attr(without_proof, 'c').ok_or(ScramError::Malformed("no binding"))?;
        if binding != "biws" && binding != "eSws" {
            return Err(ScramError::ChannelBinding);
        }
        if attr(without_proof, 'r') != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof encoding"))?;
        let auth = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_key = v
            .verify_proof(auth.as_bytes(), &proof)
            .ok_or(ScramError::WrongProof)?;
        let sig = v.server_signature(auth.as_bytes());
        Ok((client_key, format!("v={}", B64.encode(sig))))
    }
}

/// The proxy logging in to a server with a ClientKey (no password).
pub struct ClientExchange {
    client_first_bare: String,
    nonce: String,
    expected_signature: Option<Key>,
}

impl ClientExchange {
    /// The exchange and the client-first-message (no channel binding).
    pub fn start() -> (ClientExchange, String) {
        let nonce = nonce();
        let bare = format!("n=,r={nonce}");
        let first = format!("n,,{bare}");
        (
            ClientExchange {
                client_first_bare: bare,
                nonce,
                expected_signature: None,
            },
            first,
        )
    }

    /// Takes the server-first-message; returns the client-final-message.
    pub fn respond(
        &mut self,
        server_first: &str,
        v: &Verifier,
        client_key: &Key,
    ) -> Result<String, ScramError> {
        let nonce = attr(server_first, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let salt = attr(server_first, 's')
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramError::Malformed("salt"))?;
        let iterations: u32 = attr(server_first, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("iterations"))?;
        if salt != v.salt || iterations != v.iterations {
            return Err(ScramError::OtherVerifier);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let proof = xor(client_key, &hmac(&v.stored_key, auth.as_bytes()));
        self.expected_signature = Some(v.server_signature(auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message.
    pub fn finish(&self, server_final: &str) -> Result<(), ScramError> {
        let sig = attr(server_final, 'v')
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramError::Malformed("server signature"))?;
        match &self.expected_signature {
            Some(expected) if bool::from(expected.as_slice().ct_eq(&sig)) => Ok(()),
            _ => Err(ScramError::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// A verifier made by PostgreSQL's own client library (postgres-protocol) for "secret".
    fn pg_verifier() -> Verifier {
        Verifier::parse(&postgres_protocol::password::scram_sha_256(b"secret")).unwrap()
    }

    #[test]
    fn parses_verifiers() {
        let v = pg_verifier();
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert!(Verifier::parse("SCRAM-SHA-256$x:AAAA$AAAA:AAAA").is_none());
        assert!(Verifier::parse("md5abc").is_none());
        // The same password and salt give the same keys as PostgreSQL's derivation.
        let (mine, _) = Verifier::from_password("secret", &v.salt, v.iterations);
        assert_eq!(mine, v);
    }

    /// postgres-protocol's SCRAM client against the proxy's server side.
    fn run_client(password: &str, v: &Verifier) -> Result<Key, ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unrequested());
        let first = String::from_utf8(client.message().to_vec()).unwrap();
        let (exchange, server_first) = ServerExchange::start(&first, v)?;
        client.update(server_first.as_bytes()).unwrap();
        let fin = String::from_utf8(client.message().to_vec()).unwrap();
        let (key, server_final) = exchange.finish(&fin, v)?;
        client.finish(server_final.as_bytes()).unwrap();
        Ok(key)
    }

    #[test]
    fn server_side_accepts_the_password_and_refuses_others() {
        let v = pg_verifier();
        let key = run_client("secret", &v).unwrap();
        assert_eq!(sha256(&key), v.stored_key);
        assert_eq!(run_client("wrong", &v), Err(ScramError::WrongProof));
        assert_eq!(
            ServerExchange::start("p=tls-server-end-point,,n=,r=x", &v).err(),
            Some(ScramError::ChannelBinding)
        );
    }

    #[test]
    fn client_key_logs_in_where_the_same_verifier_is_stored() {
        let v = pg_verifier();
        let key = run_client("secret", &v).unwrap();
        // The proxy as a client, against its own server side standing in for PostgreSQL.
        let (mut c, first) = ClientExchange::start();
        let (server, server_first) = ServerExchange::start(&first, &v).unwrap();
        let fin = c.respond(&server_first, &v, &key).unwrap();
        let (_, server_final) = server.finish(&fin, &v).unwrap();
        c.finish(&server_final).unwrap();
        assert_eq!(
            c.finish("v=AAAA"),
            Err(ScramError::ServerSignature),
            "a server that does not know the verifier is not believed"
        );
        // A server with another salt (another verifier) cannot be logged in to.
        let (other, _) = Verifier::from_password("secret", b"other salt", 4096);
        let (mut c, first) = ClientExchange::start();
        let (_, server_first) = ServerExchange::start(&first, &other).unwrap();
        assert_eq!(
            c.respond(&server_first, &v, &key),
            Err(ScramError::OtherVerifier)
        );
    }
}
