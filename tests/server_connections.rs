//! Connection bounds over real sockets: the connection cap (idle sockets past the open-file
//! limit never stop `/health`), the header, body and keep-alive timeouts, and the 503 for a
//! newcomer when every connection is serving a request.

mod common_server;

use common_server::{MODEL_NAME, TestServer, assert_error_shape};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: CI runs on two loaded cores.
const PATIENCE: Duration = Duration::from_secs(20);

struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

/// Reads one HTTP/1.1 response (head, then `content-length` bytes); `None` if the
/// connection closed first.
async fn read_response(sock: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(RawResponse {
        status,
        head,
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    })
}

/// Waits until the server closes `sock` (EOF or reset); how long that took.
async fn wait_closed(sock: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server never closed the connection");
    started.elapsed()
}

async fn get_health(s: &TestServer) -> (u16, Duration) {
    let started = Instant::now();
    let resp = tokio::time::timeout(PATIENCE, reqwest::get(s.url("/health")))
        .await
        .expect("/health hung")
        .expect("/health");
    (resp.status().as_u16(), started.elapsed())
}

fn completion_head(content_length: usize) -> String {
    format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

fn completion_body() -> String {
    serde_json::json!({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2}).to_string()
}

#[tokio::test]
async fn idle_sockets_past_the_fd_limit_never_stop_health() {
    // The client needs more descriptors than the server is given.
    let _ = indus::server::conn::fd_limit::raise_nofile_limit();
    let s = TestServer::start_with_fd_limit(
        512,
        &[
            "--http-keep-alive-timeout",
            "600",
            "--http-header-timeout",
            "600",
        ],
    );
    let logs = s.logs().join("\n");
    assert!(logs.contains("open-file limit"), "{logs}");
    assert!(logs.contains("\"soft\":512"), "{logs}");
    let (status, unloaded) = get_health(&s).await;
    assert_eq!(status, 200);

    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(
            TcpStream::connect(s.addr)
                .await
                .expect("connect an idle socket"),
        );
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let (status, took) = get_health(&s).await;
        assert_eq!(status, 200);
        worst = worst.max(took);
    }
    eprintln!("1100 idle sockets, fd limit 512: /health worst {worst:?} (unloaded {unloaded:?})");
    assert!(worst < Duration::from_secs(5), "{worst:?}");
    // A real request still gets through.
    let resp = reqwest::Client::new()
        .post(s.url("/v1/completions"))
        .body(completion_body())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The oldest idle sockets were closed to make room.
    wait_closed(&mut idle[0]).await;
    assert!(
        s.logs().join("\n").contains("open-file limit"),
        "the server is still up"
    );
}

#[tokio::test]
async fn a_half_sent_or_trickled_head_is_closed_after_the_header_timeout() {
    let s = TestServer::start(&[
        "--http-header-timeout",
        "1",
        "--http-keep-alive-timeout",
        "600",
    ]);
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = wait_closed(&mut half).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // A byte every 200 ms does not extend the deadline: it runs from the first byte.
    let mut trickle = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in head {
        if trickle.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            started.elapsed() < PATIENCE,
            "still open after {PATIENCE:?}"
        );
    }
    wait_closed(&mut trickle).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(get_health(&s).await.0, 200);
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_gets_408() {
    let s = TestServer::start(&["--http-body-timeout", "1"]);
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(format!("{}{{\"prompt\"", completion_head(100)).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(PATIENCE, read_response(&mut sock))
        .await
        .expect("no answer to a short body")
        .expect("closed without an answer");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(resp.status, 408, "{}{}", resp.head, resp.body);
    let v: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    let err = assert_error_shape(&v);
    assert_eq!(err["code"], "request_timeout");
}

#[tokio::test]
async fn idle_connections_close_after_the_keep_alive_timeout_busy_ones_do_not() {
    let s = TestServer::start(&["--http-keep-alive-timeout", "1"]);
    // Never sent a byte.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let took = wait_closed(&mut silent).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // Idle after one request.
    let mut used = TcpStream::connect(s.addr).await.unwrap();
    used.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut used).await.expect("a response");
    assert_eq!(resp.status, 200);
    let took = wait_closed(&mut used).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // A request in progress (its body still coming) outlives the keep-alive timeout.
    let body = completion_body();
    let mut busy = TcpStream::connect(s.addr).await.unwrap();
    busy.write_all(completion_head(body.len()).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    busy.write_all(body.as_bytes()).await.unwrap();
    let resp = tokio::time::timeout(PATIENCE, read_response(&mut busy))
        .await
        .expect("no answer")
        .expect("closed while busy");
    assert_eq!(resp.status, 200, "{}{}", resp.head, resp.body);
}

#[tokio::test]
async fn at_the_cap_a_newcomer_gets_503_while_every_connection_is_busy() {
    let s = TestServer::start(&["--max-connections", "2"]);
    let body = completion_body();
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        let head =
            completion_head(body.len()).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
        c.write_all(head.as_bytes()).await.unwrap();
        // `100 Continue` comes once the handler reads the body: the connection is busy.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(PATIENCE, c.read(&mut buf))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", &buf[..n]);
        busy.push(c);
    }
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let refused = tokio::time::timeout(PATIENCE, read_response(&mut c))
        .await
        .expect("no answer at the cap")
        .expect("closed without an answer at the cap");
    assert_eq!(refused.status, 503, "{}{}", refused.head, refused.body);
    assert!(refused.head.contains("retry-after:"), "{}", refused.head);
    let v: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_error_shape(&v);
    // The busy ones were never evicted: they finish normally.
    for c in &mut busy {
        c.write_all(body.as_bytes()).await.unwrap();
        let resp = tokio::time::timeout(PATIENCE, read_response(c))
            .await
            .expect("no answer")
            .expect("a busy connection was closed");
        assert_eq!(resp.status, 200);
    }
    // Idle now: a newcomer takes an idle one's place.
    assert_eq!(get_health(&s).await.0, 200);
}
