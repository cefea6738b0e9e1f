//! The PROXY protocol header (v1 text and v2 binary, as HAProxy's `send-proxy[-v2]` and cloud
//! load balancers send it) on listeners with `accept_proxy: true`. The header names the
//! client's origin address; it is read and removed before the PostgreSQL bytes, which
//! PostgreSQL itself would not understand.
//!
//! Only the header is consumed: the bytes after it stay in the socket for the session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 line is at most 107 bytes including `\r\n`.
const V1_MAX: usize = 107;
/// Addresses plus TLVs; load balancers send a few hundred bytes at most.
const V2_MAX_BODY: usize = 4096;
/// Pause while a header arrives in several segments (rare: senders write it at once).
const PARTIAL_RETRY: Duration = Duration::from_millis(2);

/// Where the client came from, per the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client(SocketAddr),
    /// v2 `LOCAL` or v1 `UNKNOWN`: the sender's own connection (a health check), or an
    /// address family the header does not carry; the socket's peer address applies.
    Unknown,
}

/// Reads and removes one PROXY header, waiting at most `wait` for it.
pub async fn read_header(stream: &mut TcpStream, wait: Duration) -> Result<Origin, String> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; V1_MAX];
    loop {
        let n = match timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) => return Err("the client closed before sending a PROXY header".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(format!("reading the PROXY header: {e}")),
            Err(_) => return Err(format!("no complete PROXY header within {wait:?}")),
        };
        match header_length(&buf[..n])? {
            Some(len) => {
                let mut header = vec![0u8; len];
                match timeout_at(deadline, stream.read_exact(&mut header)).await {
                    Ok(Ok(_)) => return parse(&header),
                    Ok(Err(e)) => return Err(format!("reading the PROXY header: {e}")),
                    Err(_) => return Err(format!("no complete PROXY header within {wait:?}")),
                }
            }
            None => {
                if Instant::now() >= deadline {
                    return Err(format!("no complete PROXY header within {wait:?}"));
                }
                tokio::time::sleep(PARTIAL_RETRY).await;
            }
        }
    }
}

/// The total header length once enough of it is visible; `None`: need more bytes.
fn header_length(seen: &[u8]) -> Result<Option<usize>, String> {
    let Some(&first) = seen.first() else {
        return Ok(None);
    };
    if first == b'\r' {
        let known = seen.len().min(V2_SIGNATURE.len());
        if seen[..known] != V2_SIGNATURE[..known] {
            return Err("not a PROXY protocol header".into());
        }
        if seen.len() < 16 {
            return Ok(None);
        }
        let body = u16::from_be_bytes([seen[14], seen[15]]) as usize;
        if body > V2_MAX_BODY {
            return Err(format!(
                "PROXY v2 header announces {body} bytes, more than {V2_MAX_BODY}"
            ));
        }
        return Ok(Some(16 + body));
    }
    let known = seen.len().min(6);
    if seen[..known] != b"PROXY "[..known] {
        return Err("not a PROXY protocol header".into());
    }
    match seen.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(i + 2)),
        None if seen.len() >= V1_MAX => Err("PROXY v1 line longer than 107 bytes".into()),
        None => Ok(None),
    }
}

/// Parses one complete header (v1 line or v2 block).
pub fn parse(header: &[u8]) -> Result<Origin, String> {
    if header.starts_with(&V2_SIGNATURE) {
        parse_v2(header)
    } else {
        parse_v1(header)
    }
}

fn parse_v1(line: &[u8]) -> Result<Origin, String> {
    let text = std::str::from_utf8(line)
        .ok()
        .and_then(|t| t.strip_suffix("\r\n"))
        .ok_or("PROXY v1 line is not ASCII text ending in CRLF")?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Origin::Unknown),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| format!("PROXY v1 source address {src:?} is not an IP address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(format!("PROXY v1 source {src} does not match {family}"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| format!("PROXY v1 source port {sport:?} is not a port"))?;
            Ok(Origin::Client(SocketAddr::new(ip, port)))
        }
        _ => Err(format!("malformed PROXY v1 line {text:?}")),
    }
}

fn parse_v2(h: &[u8]) -> Result<Origin, String> {
    let version = h[12] >> 4;
    let command = h[12] & 0x0f;
    if version != 2 {
        return Err(format!("PROXY header version {version}, expected 2"));
    }
    let body = &h[16..];
    match command {
        0 => return Ok(Origin::Unknown),
        1 => {}
        other => {
            return Err(format!(
                "PROXY v2 command {other} is neither LOCAL nor PROXY"
            ))
        }
    }
    let short = || format!("PROXY v2 address block too short ({} bytes)", body.len());
    match h[13] >> 4 {
        // AF_INET: src(4) dst(4) sport(2) dport(2)
        1 => {
            let a = body.get(..12).ok_or_else(short)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Origin::Client(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        // AF_INET6: src(16) dst(16) sport(2) dport(2)
        2 => {
            let a = body.get(..36).ok_or_else(short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Ok(Origin::Client(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        // AF_UNSPEC, AF_UNIX: no IP origin to report.
        _ => Ok(Origin::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family << 4 | 1);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn parses_v1_lines() {
        assert_eq!(
            parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 40123 5432\r\n"),
            Ok(Origin::Client("192.0.2.7:40123".parse().unwrap()))
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 40123 5432\r\n"),
            Ok(Origin::Client("[2001:db8::7]:40123".parse().unwrap()))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Origin::Unknown));
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 40123\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 5432\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_v2_blocks() {
        let mut inet = vec![192, 0, 2, 7, 10, 0, 0, 1];
        inet.extend_from_slice(&40123u16.to_be_bytes());
        inet.extend_from_slice(&5432u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 1, &inet)),
            Ok(Origin::Client("192.0.2.7:40123".parse().unwrap()))
        );
        let mut inet6 = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        inet6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        inet6.extend_from_slice(&40123u16.to_be_bytes());
        inet6.extend_from_slice(&5432u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 2, &inet6)),
            Ok(Origin::Client("[2001:db8::7]:40123".parse().unwrap()))
        );
        // LOCAL (a load balancer's health check) and TLVs after the addresses.
        assert_eq!(parse(&v2(0, 0, &[])), Ok(Origin::Unknown));
        let mut with_tlv = inet.clone();
        with_tlv.extend_from_slice(&[0x04, 0, 2, 0xab, 0xcd]);
        assert_eq!(
            parse(&v2(1, 1, &with_tlv)),
            Ok(Origin::Client("192.0.2.7:40123".parse().unwrap()))
        );
        assert!(parse(&v2(1, 1, &inet[..6])).is_err());
        assert!(parse(&v2(5, 1, &inet)).is_err());
    }

    #[test]
    fn header_length_waits_for_more_and_rejects_other_protocols() {
        assert_eq!(header_length(b"PROXY TCP4 1.2"), Ok(None));
        assert_eq!(header_length(b"PROXY UNKNOWN\r\nrest"), Ok(Some(15)));
        assert_eq!(header_length(&V2_SIGNATURE[..5]), Ok(None));
        assert!(header_length(&[0, 0, 0, 8, 4, 210, 22, 47]).is_err());
        assert!(header_length(b"GET / HTTP/1.1\r\n").is_err());
        assert!(header_length(&[b'P'; 107]).is_err());
    }

    #[tokio::test]
    async fn consumes_only_the_header() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (mut client, (mut server, _)) = (client.unwrap(), accepted.unwrap());
        // The header split across two writes, the PostgreSQL bytes right behind it.
        client.write_all(b"PROXY TCP4 192.0.2.7 ").await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client
                .write_all(b"10.0.0.1 40123 5432\r\n\x00\x00\x00\x08")
                .await
                .unwrap();
            client
        });
        let origin = read_header(&mut server, Duration::from_secs(5)).await;
        assert_eq!(
            origin,
            Ok(Origin::Client("192.0.2.7:40123".parse().unwrap()))
        );
        let mut rest = [0u8; 4];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, [0, 0, 0, 8]);
        drop(writer.await.unwrap());
        // No header at all: refused.
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (mut client, (mut server, _)) = (client.unwrap(), accepted.unwrap());
        client
            .write_all(&[0, 0, 0, 8, 4, 210, 22, 47])
            .await
            .unwrap();
        assert!(read_header(&mut server, Duration::from_secs(5))
            .await
            .is_err());
    }
}
