//! What the hostile-input tests share: requests written byte by byte (a client library
//! would normalise `..`, percent-encode bytes or refuse invalid UTF-8), and a tally of
//! the hostile inputs each test sends.

use annostore_tests::{Api, Resp};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Counts the hostile inputs a test sends and checks each answer.
pub struct Hostile<'a> {
    pub api: &'a Api,
    sent: AtomicUsize,
    name: &'static str,
}

impl<'a> Hostile<'a> {
    pub fn new(api: &'a Api, name: &'static str) -> Hostile<'a> {
        Hostile {
            api,
            sent: AtomicUsize::new(0),
            name,
        }
    }

    /// Counts one hostile input whose answer is `r`, and checks it is the problem `want`.
    #[track_caller]
    pub fn check(&self, r: &Resp, want: u16, what: &str) -> Value {
        self.sent.fetch_add(1, Ordering::Relaxed);
        assert_eq!(r.status, want, "{what}: {}", r.text);
        r.problem(want).clone()
    }

    /// Counts one hostile input whose answer is `r`; it must be a 4xx problem.
    #[track_caller]
    pub fn refused(&self, r: &Resp, what: &str) -> u16 {
        self.sent.fetch_add(1, Ordering::Relaxed);
        assert!((400..500).contains(&r.status), "{what}: {}", r.text);
        r.problem(r.status);
        r.status
    }

    /// Counts a hostile input that must be answered as an ordinary success.
    pub fn count(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A raw request: `head` is the request line and headers without the final blank
    /// line (Host and Connection are added), `body` the bytes after it.
    pub async fn raw(&self, head: &[u8], body: &[u8]) -> Resp {
        raw(&self.api.base, head, body).await
    }
}

impl Drop for Hostile<'_> {
    fn drop(&mut self) {
        // Read by the report: how many hostile inputs the suite sends.
        eprintln!(
            "hostile inputs sent by {}: {}",
            self.name,
            self.sent.load(Ordering::Relaxed)
        );
    }
}

/// Sends one HTTP/1.1 request as the given bytes and reads the whole answer.
pub async fn raw(base: &str, head: &[u8], body: &[u8]) -> Resp {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = head.to_vec();
    req.extend_from_slice(
        format!(
            "\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    req.extend_from_slice(body);
    s.write_all(&req).await.expect("write request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read answer");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&out)));
    let headers = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut body = out[split + 4..].to_vec();
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {headers}"));
    let header = |name: &str| {
        headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let r = Resp {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body: serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(text.clone())),
        text,
    };
    assert!(
        r.status < 500,
        "the server answered {}: {}",
        r.status,
        r.text
    );
    r
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}
