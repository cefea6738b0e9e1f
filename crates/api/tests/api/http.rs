//! The real server on 127.0.0.1:0, spoken to over raw TCP the way HAProxy and curl do.

use crate::common::*;
use pgherd_api::serve;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

struct Server {
    addr: SocketAddr,
    snapshots: watch::Sender<Arc<pgherd_api::NodeSnapshot>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), pgherd_api::ServeError>>,
}

async fn start(snapshot: pgherd_api::NodeSnapshot) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (snapshots, ctx) = context(snapshot, FixedDcs::new(Some(patroni_cluster())));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, ctx, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        snapshots,
        stop,
        task,
    }
}

/// Sends `request` verbatim and reads until the server closes the connection.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
}

#[tokio::test]
async fn haproxy_style_checks_over_tcp() {
    let server = start(leader()).await;
    // `option httpchk` sends HTTP/1.0 OPTIONS / and reads the status line only.
    let (code, _, body) = raw(server.addr, "OPTIONS / HTTP/1.0\r\n\r\n").await;
    assert_eq!(code, 200);
    assert!(body.is_empty());
    let (code, _, body) = raw(server.addr, "HEAD /replica HTTP/1.0\r\n\r\n").await;
    assert_eq!(code, 503);
    assert!(body.is_empty());
    let (code, head, body) = raw(
        server.addr,
        "GET /patroni HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["role"], "master");
    let (code, _, body) = raw(server.addr, "GET /nope HTTP/1.0\r\n\r\n").await;
    assert_eq!(code, 404);
    assert_eq!(body, r#"{"error": "not found", "path": "/nope"}"#);

    // A demotion published by the agent is visible to the next check.
    server.snapshots.send(Arc::new(replica())).unwrap();
    assert_eq!(
        raw(server.addr, "OPTIONS /primary HTTP/1.0\r\n\r\n")
            .await
            .0,
        503
    );
    assert_eq!(
        raw(server.addr, "OPTIONS /replica HTTP/1.0\r\n\r\n")
            .await
            .0,
        200
    );

    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn keep_alive_and_many_concurrent_checks() {
    let server = start(replica()).await;
    // Two requests on one HTTP/1.1 connection.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /replica HTTP/1.1\r\nHost: x\r\n\r\nGET /primary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut both = String::new();
    stream.read_to_string(&mut both).await.unwrap();
    assert!(both.starts_with("HTTP/1.1 200"), "{both}");
    assert!(both.contains("HTTP/1.1 503"), "{both}");

    let checks = (0..200).map(|i| {
        let addr = server.addr;
        tokio::spawn(async move {
            let path = if i % 2 == 0 { "/replica" } else { "/primary" };
            raw(addr, &format!("OPTIONS {path} HTTP/1.0\r\n\r\n"))
                .await
                .0
        })
    });
    let mut codes = Vec::new();
    for check in checks {
        codes.push(check.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 100);
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 100);

    let (code, head, body) = raw(server.addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(code, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/plain; version=0.0.4"));
    assert!(body.contains("patroni_replica{scope=\"batman\"} 1\n"));

    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}
