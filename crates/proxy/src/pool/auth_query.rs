//! `auth_query`: the secret of a user missing from the `auth_file`, looked up on a server of
//! the listener's rotation (the primary for a primary listener) as `auth_user`, whose own
//! secret is in the `auth_file` (pgbouncer's `auth_user` + `auth_query`, default
//! `SELECT usename, passwd FROM pg_shadow WHERE usename=$1`).

use super::auth::{Secret, User};
use super::codec::{self, error_fields, put_message};
use super::server::ServerConn;
use bytes::{BufMut, BytesMut};

/// Runs `query` with `user` as `$1` on `conn`; the user's secret when a row names it with a
/// non-null password. `Err`: the query failed or the connection broke (drop it).
pub async fn lookup(
    conn: &mut ServerConn,
    query: &str,
    user: &str,
) -> Result<Option<User>, String> {
    let mut out = BytesMut::new();
    let mut parse = Vec::new();
    parse.push(0); // unnamed statement
    parse.extend_from_slice(query.as_bytes());
    parse.push(0);
    parse.extend_from_slice(&0u16.to_be_bytes());
    put_message(&mut out, b'P', &parse);
    let mut bind = BytesMut::new();
    bind.put_u8(0); // unnamed portal
    bind.put_u8(0); // unnamed statement
    bind.put_u16(0); // parameter formats: text
    bind.put_u16(1);
    bind.put_i32(user.len() as i32);
    bind.put_slice(user.as_bytes());
    bind.put_u16(0); // result formats: text
    put_message(&mut out, b'B', &bind);
    put_message(&mut out, b'E', &[0, 0, 0, 0, 0]);
    put_message(&mut out, b'S', &[]);
    conn.stream.send(&out).await.map_err(|e| e.to_string())?;
    let mut found = None;
    let mut failed = None;
    loop {
        let m = codec::read_message(&mut conn.stream, &mut conn.buf)
            .await
            .map_err(|e| e.to_string())?;
        match m.tag {
            b'D' => found = row(&m.body),
            b'E' => failed = Some(error_fields(&m.body).1),
            b'Z' => break,
            _ => {}
        }
    }
    if let Some(e) = failed {
        return Err(format!("auth_query failed: {e}"));
    }
    Ok(found.map(|(name, secret)| User::new(&name, Secret::parse(&secret))))
}

/// The first two text columns of a `DataRow` (name, password), when both are not null.
fn row(body: &[u8]) -> Option<(String, String)> {
    let mut b = body;
    let n = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    b = &b[2..];
    let mut fields = Vec::new();
    for _ in 0..n.min(2) {
        let len = i32::from_be_bytes(b.get(..4)?.try_into().ok()?);
        b = &b[4..];
        if len < 0 {
            return None;
        }
        let len = len as usize;
        fields.push(String::from_utf8_lossy(b.get(..len)?).into_owned());
        b = &b[len..];
    }
    let mut it = fields.into_iter();
    Some((it.next()?, it.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows() {
        let mut body = 2u16.to_be_bytes().to_vec();
        body.extend(3i32.to_be_bytes());
        body.extend(b"bob");
        body.extend(5i32.to_be_bytes());
        body.extend(b"md5ab");
        assert_eq!(row(&body), Some(("bob".into(), "md5ab".into())));
        let mut null = 2u16.to_be_bytes().to_vec();
        null.extend(3i32.to_be_bytes());
        null.extend(b"bob");
        null.extend((-1i32).to_be_bytes());
        assert_eq!(row(&null), None);
        assert_eq!(row(&[0]), None);
    }
}
