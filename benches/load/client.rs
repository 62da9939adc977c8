//! A minimal HTTP/1.1 keep-alive client for load generation: it writes
//! pre-built requests and reads answers by Content-Length, so the load
//! generator spends as little CPU as possible.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends one request, reads the whole answer; returns the status.
    pub async fn call(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).unwrap_or("");
                let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let total = end + 4 + length;
                while self.buf.len() < total {
                    self.read_more().await?;
                }
                return Ok(status);
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A POST request with a JSON body.
pub fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A POST request with a JSON body and one extra header.
pub fn post_with(path: &str, header: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\n{header}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A GET request.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes()
}

/// Latencies of one run, in microseconds.
#[derive(Default)]
pub struct Samples {
    /// Every request's latency.
    pub micros: Vec<u64>,
    /// Answers that were not 200.
    pub errors: u64,
}

impl Samples {
    /// Sends one request and records its latency since `since` (its start,
    /// or its due time in an open loop); reconnects after an I/O error.
    async fn send(&mut self, conn: &mut Conn, addr: &str, request: &[u8], since: Instant) {
        match conn.call(request).await {
            Ok(200) => self.micros.push(since.elapsed().as_micros() as u64),
            Ok(_) => self.errors += 1,
            Err(_) => {
                self.errors += 1;
                *conn = Conn::connect(addr).await.expect("reconnect");
            }
        }
    }

    /// The samples of every worker together.
    async fn gather(tasks: Vec<tokio::task::JoinHandle<Samples>>) -> Samples {
        let mut all = Samples::default();
        for t in tasks {
            let s = t.await.expect("worker");
            all.micros.extend(s.micros);
            all.errors += s.errors;
        }
        all
    }

    /// The q-quantile (0..1) in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        self.micros.sort_unstable();
        let i = ((self.micros.len() as f64 - 1.0) * q).round() as usize;
        self.micros[i] as f64 / 1000.0
    }
}

/// Closed loop: `conns` connections send back to back for `duration`, each
/// taking requests from `next`; connection i goes to `addrs[i % len]` (the
/// instances of a run, round-robin). Returns requests per second and samples.
pub async fn closed_loop(
    addrs: &[String],
    conns: usize,
    duration: Duration,
    next: impl Fn(u64) -> Vec<u8> + Send + Sync + Clone + 'static,
) -> (f64, Samples) {
    let start = Instant::now();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..conns {
        let addr = addrs[i % addrs.len()].clone();
        let next = next.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&addr).await.expect("connect");
            let mut samples = Samples::default();
            while start.elapsed() < duration {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let request = next(n);
                samples
                    .send(&mut conn, &addr, &request, Instant::now())
                    .await;
            }
            samples
        }));
    }
    let all = Samples::gather(tasks).await;
    let secs = start.elapsed().as_secs_f64();
    ((all.micros.len() as u64 + all.errors) as f64 / secs, all)
}

/// Open loop at a fixed `rate` for `duration`: request k is due at
/// start + k/rate, and its latency counts from that moment, so a stall is
/// charged to every request it delays (no coordinated omission).
///
/// The schedule is kept by a thread of its own: tokio's timer rounds every
/// sleep up to the next millisecond, which would be charged to every
/// request as latency. Connection i goes to `addrs[i % len]`.
pub async fn open_loop(
    addrs: &[String],
    rate: f64,
    duration: Duration,
    conns: usize,
    next: impl Fn(u64) -> Vec<u8> + Send + Sync + Clone + 'static,
) -> Samples {
    let total = (rate * duration.as_secs_f64()) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let due = move |k: u64| start + Duration::from_secs_f64(k as f64 / rate);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let pacer = std::thread::spawn(move || {
        // Wake within microseconds of the deadline, not the default 50.
        // SAFETY: prctl with PR_SET_TIMERSLACK takes integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
        for k in 0..total {
            let wait = due(k).saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if tx.send(k).is_err() {
                break;
            }
        }
    });
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for i in 0..conns {
        let addr = addrs[i % addrs.len()].clone();
        let next = next.clone();
        let rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&addr).await.expect("connect");
            let mut samples = Samples::default();
            loop {
                // The lock is held while waiting: the next free connection
                // takes the next due request.
                let Some(k) = rx.lock().await.recv().await else {
                    break;
                };
                let request = next(k);
                samples.send(&mut conn, &addr, &request, due(k)).await;
            }
            samples
        }));
    }
    let samples = Samples::gather(tasks).await;
    pacer.join().expect("pacer");
    samples
}
