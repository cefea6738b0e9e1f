//! Client authentication at the proxy, against a pgbouncer-format `auth_file`
//! (`userlist.txt`: one `"user" "secret"` per line, `""` for a quote inside a field, other
//! lines ignored), where a secret is a plaintext password, `md5<md5(password || user)>` or a
//! SCRAM verifier `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
//!
//! `auth_type` as pgbouncer names it: `scram-sha-256` (every user proves its password with
//! SCRAM), `md5` (md5 for plaintext and md5 secrets, SCRAM for users with a SCRAM verifier),
//! `plain` (the password in clear text; only over TLS or a trusted network).
//!
//! What the proxy then logs in to servers with ([`ServerCredentials`]): the plaintext
//! password; for an md5 secret, md5 answers computed from it; for a SCRAM verifier, the
//! ClientKey of the last client that authenticated with SCRAM (the server must store the same
//! verifier).

use super::codec::{self, put_auth, put_error, CodecError};
use super::scram::{self, Key, ServerExchange, Verifier};
use bytes::BytesMut;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// `auth_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthType {
    ScramSha256,
    Md5,
    Plain,
}

pub const AUTH_TYPE_EXPECTED: &str = "scram-sha-256, md5 or plain";

impl AuthType {
    pub fn parse(s: &str) -> Option<AuthType> {
        Some(match s {
            "scram-sha-256" => AuthType::ScramSha256,
            "md5" => AuthType::Md5,
            "plain" => AuthType::Plain,
            _ => return None,
        })
    }
}

/// A secret from the auth file.
#[derive(Clone)]
pub enum Secret {
    Plain(String),
    /// `md5` followed by 32 hex digits.
    Md5(String),
    Scram(Verifier),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Plain(_) => "Plain(..)",
            Secret::Md5(_) => "Md5(..)",
            Secret::Scram(_) => "Scram(..)",
        })
    }
}

impl Secret {
    pub fn parse(s: &str) -> Secret {
        if s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
            return Secret::Md5(s.to_ascii_lowercase());
        }
        match Verifier::parse(s) {
            Some(v) => Secret::Scram(v),
            None => Secret::Plain(s.to_string()),
        }
    }
}

/// One user of the auth file.
pub struct User {
    pub name: String,
    pub secret: Secret,
    /// The SCRAM verifier clients are checked against: the file's, or one derived once from
    /// a plaintext password (a random salt per proxy start; the iterations are paid here, not
    /// per connection).
    scram: Option<Verifier>,
    /// How the proxy logs in to servers as this user: from the file, or (SCRAM-verifier
    /// users) with the ClientKey learnt from the last SCRAM login. Shared by every session
    /// of the user (one allocation per user, not per client).
    creds: Mutex<Option<Arc<ServerCredentials>>>,
}

impl User {
    pub fn new(name: &str, secret: Secret) -> User {
        let scram = match &secret {
            Secret::Plain(p) => {
                let salt: [u8; 16] = rand::random();
                Some(Verifier::from_password(p, &salt, scram::DEFAULT_ITERATIONS).0)
            }
            Secret::Md5(_) => None,
            Secret::Scram(v) => Some(v.clone()),
        };
        let creds = match &secret {
            Secret::Plain(p) => Some(Arc::new(ServerCredentials::Password(p.clone()))),
            Secret::Md5(m) => Some(Arc::new(ServerCredentials::Md5(m.clone()))),
            Secret::Scram(_) => None,
        };
        User {
            name: name.to_string(),
            secret,
            scram,
            creds: Mutex::new(creds),
        }
    }

    /// How the proxy logs in to servers as this user, when it can.
    pub fn server_credentials(&self) -> Option<Arc<ServerCredentials>> {
        self.creds.lock().ok()?.clone()
    }
}

/// What the proxy presents to a server.
#[derive(Clone)]
pub enum ServerCredentials {
    Password(String),
    /// `md5...`: answers md5 challenges (and nothing else).
    Md5(String),
    ClientKey {
        verifier: Verifier,
        client_key: Key,
    },
}

/// The users of an auth file.
#[derive(Default)]
pub struct UserList {
    users: HashMap<String, Arc<User>>,
}

impl UserList {
    /// Parses a pgbouncer userlist; errors name the line.
    pub fn parse(text: &str) -> Result<UserList, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.starts_with('"') {
                continue;
            }
            let mut fields = Vec::new();
            let mut rest = line;
            while let Some(r) = rest.trim_start().strip_prefix('"') {
                let (field, after) = quoted(r)
                    .ok_or_else(|| format!("line {}: unterminated quoted field", n + 1))?;
                fields.push(field);
                rest = after;
            }
            let [user, secret] = <[String; 2]>::try_from(fields).map_err(|f| {
                format!(
                    "line {}: expected \"user\" \"secret\", found {} field(s)",
                    n + 1,
                    f.len()
                )
            })?;
            let u = User::new(&user, Secret::parse(&secret));
            users.insert(user, Arc::new(u));
        }
        Ok(UserList { users })
    }

    pub fn get(&self, user: &str) -> Option<Arc<User>> {
        self.users.get(user).cloned()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A listener's users: its `auth_file`'s list, replaced whole when the file is read again
/// (SIGHUP, as pgbouncer's RELOAD); logins in progress keep the user they looked up.
pub struct Users {
    current: RwLock<Arc<UserList>>,
}

impl Users {
    pub fn new(list: UserList) -> Users {
        Users {
            current: RwLock::new(Arc::new(list)),
        }
    }

    pub fn get(&self, user: &str) -> Option<Arc<User>> {
        self.list().get(user)
    }

    /// The list in force now.
    pub fn list(&self) -> Arc<UserList> {
        // A poisoned lock still holds a whole list: replace() swaps an Arc and cannot panic
        // half-way.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, list: UserList) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(list);
    }
}

/// The inside of a `"..."` field (`""` is a quote), and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if let Some((_, '"')) = chars.peek() {
                chars.next();
                out.push('"');
                continue;
            }
            return Some((out, &s[i + 1..]));
        }
        out.push(c);
    }
    None
}

/// Why a client was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("password authentication failed for user \"{0}\"")]
    Password(String),
    #[error("{0}")]
    Protocol(String),
    #[error("client went away: {0}")]
    Gone(#[from] CodecError),
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// Authenticates `user` on `stream` (no AuthenticationOk yet: the caller sends it with the
/// rest of the welcome). An unknown user (`None`) goes through the same exchange and fails,
/// so that user names cannot be probed.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    name: &str,
    user: Option<&User>,
    auth_type: AuthType,
) -> Result<(), AuthFailure> {
    let fail = || AuthFailure::Password(name.to_string());
    let scram = match (auth_type, user.map(|u| &u.secret)) {
        (AuthType::ScramSha256, _) | (AuthType::Md5, Some(Secret::Scram(_))) => true,
        (AuthType::Md5, _) | (AuthType::Plain, _) => false,
    };
    if scram {
        let (dummy, _) = Verifier::from_password("", b"unknown user", 1);
        let verifier = user.and_then(|u| u.scram.as_ref());
        let v = verifier.unwrap_or(&dummy);
        let key = scram_exchange(stream, buf, v).await?;
        let (Some(user), Some(key)) = (user.filter(|_| verifier.is_some()), key) else {
            return Err(fail());
        };
        if let Secret::Scram(v) = &user.secret {
            if let Ok(mut creds) = user.creds.lock() {
                // Kept when it is the same key: the sessions of the user then share it.
                let known = matches!(creds.as_deref(), Some(ServerCredentials::ClientKey { client_key, .. }) if bool::from(client_key.ct_eq(&key)));
                if !known {
                    *creds = Some(Arc::new(ServerCredentials::ClientKey {
                        verifier: v.clone(),
                        client_key: key,
                    }));
                }
            }
        }
        return Ok(());
    }
    if auth_type == AuthType::Md5 {
        let salt: [u8; 4] = rand::random();
        let mut out = BytesMut::new();
        put_auth(&mut out, 5, &salt);
        send(stream, &out).await?;
        let answer = password_message(stream, buf).await?;
        let inner = match user.map(|u| &u.secret) {
            Some(Secret::Plain(p)) => md5_hex(&[p.as_bytes(), name.as_bytes()]),
            Some(Secret::Md5(m)) => m[3..].to_string(),
            _ => return Err(fail()),
        };
        let expected = format!("md5{}", md5_hex(&[inner.as_bytes(), &salt]));
        return if bool::from(expected.as_bytes().ct_eq(&answer)) {
            Ok(())
        } else {
            Err(fail())
        };
    }
    // plain
    let mut out = BytesMut::new();
    put_auth(&mut out, 3, &[]);
    send(stream, &out).await?;
    let answer = password_message(stream, buf).await?;
    let given = String::from_utf8_lossy(&answer).into_owned();
    let ok = match user.map(|u| &u.secret) {
        Some(Secret::Plain(p)) => bool::from(p.as_bytes().ct_eq(given.as_bytes())),
        Some(Secret::Md5(m)) => {
            let h = format!("md5{}", md5_hex(&[given.as_bytes(), name.as_bytes()]));
            bool::from(m.as_bytes().ct_eq(h.as_bytes()))
        }
        Some(Secret::Scram(v)) => Verifier::from_password(&given, &v.salt, v.iterations).0 == *v,
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(fail())
    }
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, b: &[u8]) -> Result<(), AuthFailure> {
    stream
        .write_all(b)
        .await
        .map_err(|e| AuthFailure::Gone(e.into()))?;
    // TLS buffers records until flushed.
    stream
        .flush()
        .await
        .map_err(|e| AuthFailure::Gone(e.into()))
}

/// The next `p` message's body without its final NUL.
async fn password_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Vec<u8>, AuthFailure> {
    let m = codec::read_message(stream, buf).await?;
    if m.tag != b'p' {
        return Err(AuthFailure::Protocol(format!(
            "expected a password message, found {:?}",
            m.tag as char
        )));
    }
    Ok(codec::query_text(&m.body).to_vec())
}

/// The SCRAM exchange; `Ok(None)`: the proof was wrong.
async fn scram_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    v: &Verifier,
) -> Result<Option<Key>, AuthFailure> {
    let mut out = BytesMut::new();
    let mut mechs = scram::MECHANISM.as_bytes().to_vec();
    mechs.extend_from_slice(&[0, 0]);
    put_auth(&mut out, 10, &mechs);
    send(stream, &out).await?;
    let m = codec::read_message(stream, buf).await?;
    let mut b = &m.body[..];
    let mech = codec::cstr(&mut b).unwrap_or_default();
    if m.tag != b'p' || mech != scram::MECHANISM || b.len() < 4 {
        return Err(AuthFailure::Protocol(
            "expected a SASLInitialResponse for SCRAM-SHA-256".into(),
        ));
    }
    let first = String::from_utf8_lossy(&b[4..]).into_owned();
    let (exchange, server_first) =
        ServerExchange::start(&first, v).map_err(|e| AuthFailure::Protocol(e.to_string()))?;
    out.clear();
    put_auth(&mut out, 11, server_first.as_bytes());
    send(stream, &out).await?;
    let m = codec::read_message(stream, buf).await?;
    if m.tag != b'p' {
        return Err(AuthFailure::Protocol("expected a SASLResponse".into()));
    }
    let fin = String::from_utf8_lossy(&m.body).into_owned();
    match exchange.finish(&fin, v) {
        Ok((key, server_final)) => {
            out.clear();
            put_auth(&mut out, 12, server_final.as_bytes());
            send(stream, &out).await?;
            Ok(Some(key))
        }
        Err(scram::ScramError::WrongProof) => Ok(None),
        Err(e) => Err(AuthFailure::Protocol(e.to_string())),
    }
}

/// The ErrorResponse a refused client gets.
pub fn refusal(out: &mut BytesMut, failure: &AuthFailure) {
    let code = match failure {
        AuthFailure::Password(_) => "28P01",
        _ => "08P01",
    };
    put_error(out, "FATAL", code, &failure.to_string());
}

/// The md5 answer to a server's challenge, from a plaintext password or an md5 secret.
pub fn md5_answer(user: &str, creds: &ServerCredentials, salt: [u8; 4]) -> Option<String> {
    match creds {
        ServerCredentials::Password(p) => Some(postgres_protocol::authentication::md5_hash(
            user.as_bytes(),
            p.as_bytes(),
            salt,
        )),
        ServerCredentials::Md5(m) => Some(format!("md5{}", md5_hex(&[&m.as_bytes()[3..], &salt]))),
        ServerCredentials::ClientKey { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use tokio::io::AsyncReadExt;

    #[test]
    fn userlist_format() {
        let text = r#"
; a comment
"alice" "secret"
"bob" "md5ce6b6d2a0f69b1b7a9e1f1f9e0a1b2c3"
"carol ""c""" "SCRAM-SHA-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"#;
        let l = UserList::parse(text).unwrap();
        assert_eq!(l.len(), 3);
        assert!(matches!(l.get("alice").unwrap().secret, Secret::Plain(_)));
        assert!(matches!(l.get("bob").unwrap().secret, Secret::Md5(_)));
        assert!(matches!(
            l.get("carol \"c\"").unwrap().secret,
            Secret::Scram(_)
        ));
        assert_eq!(
            UserList::parse("\"a\" \"b\" \"c\"").err().unwrap(),
            "line 1: expected \"user\" \"secret\", found 3 field(s)"
        );
        assert!(UserList::parse("\"a\" \"b").is_err());
    }

    #[test]
    fn a_reload_replaces_the_whole_list_and_keeps_looked_up_users() {
        let users = Users::new(UserList::parse("\"alice\" \"one\"\n\"bob\" \"two\"").unwrap());
        let alice = users.get("alice").unwrap();
        users.replace(UserList::parse("\"alice\" \"three\"\n\"dave\" \"four\"").unwrap());
        assert!(
            users.get("bob").is_none(),
            "a user gone from the file is gone"
        );
        assert!(users.get("dave").is_some());
        assert!(matches!(&users.get("alice").unwrap().secret, Secret::Plain(p) if p == "three"));
        // A login that had looked alice up before keeps the secret it started with.
        assert!(matches!(&alice.secret, Secret::Plain(p) if p == "one"));
    }

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// A libpq-like client: answers whatever the proxy asks with `password`.
    async fn client(mut s: tokio::net::TcpStream, user: String, password: String) {
        let mut buf = BytesMut::new();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let Ok(m) = codec::read_message(&mut s, &mut buf).await else {
                return;
            };
            let code = u32::from_be_bytes(m.body[..4].try_into().unwrap());
            let mut out = BytesMut::new();
            match code {
                3 => {
                    let mut b = password.as_bytes().to_vec();
                    b.push(0);
                    codec::put_message(&mut out, b'p', &b);
                }
                5 => {
                    let salt: [u8; 4] = m.body[4..8].try_into().unwrap();
                    let h = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password.as_bytes(),
                        salt,
                    );
                    let mut b = h.into_bytes();
                    b.push(0);
                    codec::put_message(&mut out, b'p', &b);
                }
                10 => {
                    let c = ScramSha256::new(password.as_bytes(), ChannelBinding::unrequested());
                    let mut b = b"SCRAM-SHA-256\0".to_vec();
                    b.extend((c.message().len() as u32).to_be_bytes());
                    b.extend_from_slice(c.message());
                    codec::put_message(&mut out, b'p', &b);
                    scram = Some(c);
                }
                11 => {
                    let c = scram.as_mut().unwrap();
                    c.update(&m.body[4..]).unwrap();
                    codec::put_message(&mut out, b'p', c.message());
                }
                12 => {
                    scram.as_mut().unwrap().finish(&m.body[4..]).unwrap();
                    // Stay until the proxy closes.
                    let _ = s.read_u8().await;
                    return;
                }
                _ => return,
            }
            if s.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    async fn login(list: &UserList, auth: AuthType, user: &str, password: &str) -> bool {
        let (c, mut p) = pair().await;
        let client = tokio::spawn(client(c, user.to_string(), password.to_string()));
        let mut buf = BytesMut::new();
        let r = authenticate(&mut p, &mut buf, user, list.get(user).as_deref(), auth).await;
        drop(p);
        client.await.unwrap();
        r.is_ok()
    }

    #[tokio::test]
    async fn every_secret_kind_with_every_auth_type() {
        let scram = postgres_protocol::password::scram_sha_256(b"pw-c");
        let md5 = postgres_protocol::password::md5(b"pw-b", "bob");
        let text = format!("\"alice\" \"pw-a\"\n\"bob\" \"{md5}\"\n\"carol\" \"{scram}\"\n");
        let list = UserList::parse(&text).unwrap();
        for auth in [AuthType::ScramSha256, AuthType::Md5, AuthType::Plain] {
            assert!(login(&list, auth, "alice", "pw-a").await, "{auth:?}");
            assert!(!login(&list, auth, "alice", "nope").await, "{auth:?}");
            assert!(login(&list, auth, "carol", "pw-c").await, "{auth:?}");
            assert!(!login(&list, auth, "carol", "pw-a").await, "{auth:?}");
            assert!(!login(&list, auth, "nobody", "pw-a").await, "{auth:?}");
        }
        // An md5 secret cannot answer SCRAM.
        assert!(login(&list, AuthType::Md5, "bob", "pw-b").await);
        assert!(login(&list, AuthType::Plain, "bob", "pw-b").await);
        assert!(!login(&list, AuthType::ScramSha256, "bob", "pw-b").await);
        // The SCRAM user's ClientKey was learnt: the proxy can now log in to servers.
        assert!(matches!(
            list.get("carol").unwrap().server_credentials().as_deref(),
            Some(ServerCredentials::ClientKey { .. })
        ));
        assert!(matches!(
            list.get("alice").unwrap().server_credentials().as_deref(),
            Some(ServerCredentials::Password(_))
        ));
    }

    #[test]
    fn md5_answers() {
        let salt = [1, 2, 3, 4];
        let from_pw = md5_answer("bob", &ServerCredentials::Password("pw".into()), salt);
        let secret = postgres_protocol::password::md5(b"pw", "bob");
        let from_secret = md5_answer("bob", &ServerCredentials::Md5(secret), salt);
        assert_eq!(from_pw, from_secret);
    }
}
