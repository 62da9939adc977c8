//! Slow and greedy clients on a raw socket: slow headers, slow bodies, idle
//! and keep-alive connections by the thousand, chunked bodies. Each is
//! bounded by a timeout or the connection cap, and other clients keep
//! getting answers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Reads until the server closes the connection; returns what it sent and
/// when it closed. A reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Instant) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let give_up = Instant::now() + limit;
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    (String::from_utf8_lossy(&seen).into_owned(), Instant::now())
}

/// One complete request on a fresh connection; returns the raw response.
async fn raw_request(app: &TestApp, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .0
}

/// The status code of a raw response.
fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// `GET /healthz` answers 200.
async fn healthy(app: &TestApp) -> bool {
    let r = app.client.get(app.url("/healthz")).send().await;
    r.is_ok_and(|r| r.status() == 200)
}

/// Raises the soft open-file limit to the hard one: idle-connection tests
/// hold both ends of thousands of sockets in this process.
fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= needed,
        "this test needs {needed} open files; the hard limit is {}",
        limit.rlim_cur
    );
}

#[tokio::test]
async fn a_slowloris_sending_headers_byte_by_byte_is_cut_off_after_the_header_timeout() {
    let app = spawn_app_with(|c| c.server.header_timeout_ms = 500).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut read, mut write) = stream.split();
    let started = Instant::now();
    let request = format!(
        "POST /webhooks/jivo/{JIVO_TOKEN} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(400)
    );
    let trickle = async {
        for byte in request.as_bytes() {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        // EOF or reset: either way the server let go.
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        Instant::now()
    };
    // The whole header would take over 8 s at this pace.
    let closed_at = tokio::select! {
        at = closed => at,
        () = async { trickle.await; std::future::pending::<()>().await } => unreachable!(),
    };
    let after = closed_at - started;
    assert!(
        after >= Duration::from_millis(450) && after < Duration::from_millis(4000),
        "closed after {after:?}"
    );
    assert!(healthy(&app).await);
}

#[tokio::test]
async fn a_slowloris_does_not_delay_other_clients() {
    let app = spawn_app_with(|c| c.server.header_timeout_ms = 10_000).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"POST /webhooks/jivo/x HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let (status, _) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    assert_eq!(status, 200);
    // Long before the slow ones are cut off.
    assert!(started.elapsed() < Duration::from_millis(3000));
    drop(slow);
}

#[tokio::test]
async fn a_slow_body_is_cut_off_by_the_request_timeout_and_nothing_is_stored() {
    let app = spawn_app_with(|c| {
        c.server.header_timeout_ms = 5_000;
        c.server.request_timeout_ms = 600;
    })
    .await;
    let body = fixture("jivo/chat_finished.json").to_string();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/jivo/{JIVO_TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = stream.split();
    let trickle = async {
        for byte in body.as_bytes() {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::future::pending::<()>().await
    };
    let answer = async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    let response = tokio::select! {
        r = answer => r,
        () = trickle => unreachable!(),
    };
    let after = started.elapsed();
    // The body would take over 20 s at this pace.
    assert!(
        after >= Duration::from_millis(550) && after < Duration::from_millis(5000),
        "closed after {after:?}"
    );
    assert_eq!(status_of(&response), 408, "{response}");
    assert!(response.contains(r#""result":"error""#), "{response}");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 0);
    assert!(healthy(&app).await);
}

#[tokio::test]
async fn a_slow_chunked_body_is_cut_off_by_the_request_timeout() {
    let app = spawn_app_with(|c| c.server.request_timeout_ms = 500).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/jivo/{JIVO_TOKEN} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut response = String::new();
    // One small chunk every 100 ms, never the last one.
    for _ in 0..100 {
        if stream.write_all(b"1\r\n \r\n").await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
        {
            response.push_str(&String::from_utf8_lossy(&buf[..n]));
            if n == 0 || response.contains("\r\n\r\n{") {
                break;
            }
        }
    }
    assert!(started.elapsed() < Duration::from_millis(5000));
    assert_eq!(status_of(&response), 408, "{response}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|c| c.server.header_timeout_ms = 400).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The answer comes, the connection stays open for the next request ...
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    let answered = Instant::now();
    // ... but not forever: an idle connection holds a slot of the cap.
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(rest, "");
    let idle = closed - answered;
    assert!(
        idle >= Duration::from_millis(350) && idle < Duration::from_millis(3000),
        "closed after {idle:?}"
    );

    // A connection that never says anything goes the same way.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let opened = Instant::now();
    let (said, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(said, "");
    assert!(closed - opened < Duration::from_millis(3000));
}

#[tokio::test]
async fn two_thousand_idle_connections_fill_the_cap_and_other_clients_still_get_answers() {
    const IDLE: usize = 2_000;
    raise_fd_limit(2 * IDLE as u64 + 256);
    let app = spawn_app_with(|c| {
        c.server.header_timeout_ms = 1_000;
        c.server.max_connections = 1_000;
    })
    .await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        // Past the cap, connections wait in the kernel backlog; past the
        // backlog, connect itself waits (SYN retries).
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(app.addr)).await {
            Ok(Ok(s)) => idle.push(s),
            _ => break,
        }
    }
    assert!(
        idle.len() >= 1_000,
        "only {} connections opened",
        idle.len()
    );

    // With every slot taken, a real client waits for idle ones to time out
    // (1 s each round), then is answered.
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (status, _) = {
        let r = client
            .post(app.url(&format!("/webhooks/jivo/{JIVO_TOKEN}")))
            .body(fixture("jivo/chat_accepted.json").to_string())
            .send()
            .await
            .expect("answered despite the idle connections");
        (r.status().as_u16(), ())
    };
    let waited = started.elapsed();
    println!(
        "{} idle connections, cap 1000: answered after {waited:?}",
        idle.len()
    );
    assert_eq!(status, 200);
    assert!(waited < Duration::from_secs(8), "waited {waited:?}");

    // The idle connections were all let go: none holds a slot any more.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut open = 0;
    for s in &mut idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            assert_eq!(n, 0);
        } else {
            open += 1;
        }
    }
    assert_eq!(open, 0, "idle connections still open");
    assert!(healthy(&app).await);
}

#[tokio::test]
async fn a_small_chunked_body_without_content_length_is_accepted() {
    let app = spawn_app().await;
    let body = fixture("jivo/chat_finished.json").to_string();
    let (a, b) = body.split_at(body.len() / 2);
    let request = format!(
        "POST /webhooks/jivo/{JIVO_TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let response = raw_request(&app, request.as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 1);
    let stored: Vec<u8> = app.sql("SELECT body FROM deliveries");
    assert_eq!(stored, body.as_bytes(), "stored byte for byte");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_and_not_stored() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 2048).await;
    let chunk = "x".repeat(1000);
    let mut request = format!(
        "POST /webhooks/jivo/{JIVO_TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for _ in 0..3 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let response = raw_request(&app, request.as_bytes()).await;
    assert_eq!(status_of(&response), 413, "{response}");
    assert!(response.contains(r#""result":"error""#), "{response}");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 0);
    assert!(healthy(&app).await);
}
