//! `GET /link-preview?url=` and `POST /link-preview`: previews through the test-only loopback
//! allowance from a page server started here, and every SSRF refusal (blocked literal addresses,
//! loopback without the allowance, redirects into blocked ranges, size, time, content type).
//!
//! Blocked addresses in these tests are refused before any connection: nothing here ever sends a
//! packet anywhere but 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Backend, TestApp, spawn_app, spawn_app_with};

/// What the page server answers for a path.
#[derive(Clone)]
enum Page {
    Html(String),
    Typed(&'static str, String),
    Status(u16),
    Redirect(u16, String),
    /// 200 text/html: `head`, then filler forever (until the reader goes away or 64 MB).
    Endless(String),
    /// Sends headers, then nothing for 30 s.
    Stall,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that records the paths it was asked for.
struct PageServer {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    /// Bytes written by `Endless` pages.
    endless_written: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PageServer {
    async fn start(routes: impl Fn(&str) -> Page + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page server");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let endless_written = Arc::new(AtomicUsize::new(0));
        let routes = Arc::new(routes);
        let (h, w) = (hits.clone(), endless_written.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (routes, hits, written) = (routes.clone(), h.clone(), w.clone());
                tokio::spawn(async move {
                    let _ = handle(stream, routes.as_ref(), &hits, &written).await;
                });
            }
        });
        Self { addr, hits, endless_written, task }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }

    fn hits_of(&self, path: &str) -> usize {
        self.hits().iter().filter(|p| *p == path).count()
    }
}

async fn handle(
    mut stream: TcpStream,
    routes: &(dyn Fn(&str) -> Page + Send + Sync),
    hits: &Mutex<Vec<String>>,
    written: &AtomicUsize,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    hits.lock().unwrap().push(path.clone());
    let simple = |status: u16, headers: String, body: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    match routes(&path) {
        Page::Html(body) => {
            stream
                .write_all(&simple(200, "Content-Type: text/html; charset=utf-8\r\n".into(), body.as_bytes()))
                .await?
        }
        Page::Typed(ct, body) => {
            let headers = if ct.is_empty() { String::new() } else { format!("Content-Type: {ct}\r\n") };
            stream.write_all(&simple(200, headers, body.as_bytes())).await?
        }
        Page::Status(status) => {
            stream
                .write_all(&simple(status, "Content-Type: text/html\r\n".into(), b"<title>error</title>"))
                .await?
        }
        Page::Redirect(status, to) => {
            stream.write_all(&simple(status, format!("Location: {to}\r\n"), b"")).await?
        }
        Page::Endless(head) => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n")
                .await?;
            stream.write_all(head.as_bytes()).await?;
            let filler = vec![b'x'; 64 * 1024];
            while written.load(Ordering::Relaxed) < 64 * 1024 * 1024 {
                stream.write_all(&filler).await?;
                written.fetch_add(filler.len(), Ordering::Relaxed);
            }
        }
        Page::Stall => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100\r\n\r\n")
                .await?;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
    stream.shutdown().await
}

fn encode(url: &str) -> String {
    url::form_urlencoded::byte_serialize(url.as_bytes()).collect()
}

async fn preview(app: &TestApp, token: &str, url: &str) -> crate::common::Reply {
    app.get(&format!("/link-preview?url={}", encode(url)), token).await
}

/// Asserts a 400 that names an internal/private address as the reason.
#[track_caller]
fn assert_blocked(reply: crate::common::Reply, what: &str) {
    let body = reply.body.clone();
    assert_eq!(reply.expect_error(400), "validation_error", "{what}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("internal or private addresses cannot be previewed"), "{what}: {body}");
}

const ARTICLE: &str = r#"<!doctype html><html><head>
  <title>HTML title</title>
  <meta name="description" content="Plain description">
  <meta property="og:title" content="The OG title">
  <meta property="og:description" content="The OG description">
  <meta property="og:image" content="/images/cover.png">
  <meta property="og:site_name" content="Local Test Site">
</head><body><h1>Hello</h1></body></html>"#;

const PLAIN: &str = "<html><head><title>  Just a\n title </title>\
    <meta name=\"description\" content=\"Only the basics\"></head><body>hi</body></html>";

async fn preview_reads_page_metadata_through_the_test_allowance(backend: Backend) {
    let pages = PageServer::start(|path| match path {
        "/article" => Page::Html(ARTICLE.into()),
        "/plain" => Page::Html(PLAIN.into()),
        _ => Page::Status(404),
    })
    .await;
    let port = pages.port();
    let app = spawn_app_with(backend, |c| c.allow_loopback_previews_for_tests = vec![port]).await;
    let owner = app.register("owner").await;

    let url = pages.url("/article");
    let body = preview(&app, &owner.token, &url).await.expect(200);
    assert_eq!(
        body,
        json!({
            "url": url,
            "title": "The OG title",
            "description": "The OG description",
            "image": pages.url("/images/cover.png"),
            "site_name": "Local Test Site",
        })
    );

    // Fallbacks: <title> and meta description; absent fields are null, never missing.
    let plain = preview(&app, &owner.token, &pages.url("/plain#section")).await.expect(200);
    assert_eq!(plain["url"], pages.url("/plain#section"));
    assert_eq!(plain["title"], "Just a title");
    assert_eq!(plain["description"], "Only the basics");
    let object = plain.as_object().unwrap();
    assert!(object.contains_key("image") && plain["image"].is_null(), "{plain}");
    assert!(object.contains_key("site_name") && plain["site_name"].is_null(), "{plain}");

    // The seed's POST form answers the same (and is served from the cache: one fetch only).
    let user = app.register("alice").await;
    let posted = app.post("/link-preview", &user.token, json!({"url": url})).await.expect(200);
    assert_eq!(posted, body);
    assert_eq!(pages.hits_of("/article"), 1, "second preview must come from the cache");

    // By name: the host is resolved once, checked, and the fetch connects to that checked address.
    let by_name = format!("http://localhost:{port}/plain");
    let named = preview(&app, &owner.token, &by_name).await.expect(200);
    assert_eq!(named["title"], "Just a title");
    assert_eq!(named["url"], by_name);

    // A page that fails is not cached as a success.
    preview(&app, &owner.token, &pages.url("/missing")).await.expect_error(400);
    app.stop().await;
}

async fn loopback_is_refused_without_the_allowance(backend: Backend) {
    let pages = PageServer::start(|_| Page::Html(ARTICLE.into())).await;
    let port = pages.port();
    let app = spawn_app(backend.clone()).await;
    let owner = app.register("owner").await;
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://LocalHost:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        assert_blocked(preview(&app, &owner.token, &url).await, &url);
    }
    app.stop().await;

    // An allowance for another port does not open this one; nor does it open mapped forms.
    let app =
        spawn_app_with(backend.clone(), |c| c.allow_loopback_previews_for_tests = vec![port.wrapping_add(1)])
            .await;
    let owner = app.register("owner").await;
    assert_blocked(preview(&app, &owner.token, &pages.url("/")).await, "other port");
    app.stop().await;
    let app2 = spawn_app_with(backend, |c| c.allow_loopback_previews_for_tests = vec![port]).await;
    let owner = app2.register("owner").await;
    let mapped = format!("http://[::ffff:127.0.0.1]:{port}/");
    assert_blocked(preview(&app2, &owner.token, &mapped).await, "mapped loopback with allowance");
    app2.stop().await;
    assert!(pages.hits().is_empty(), "no request may reach the server: {:?}", pages.hits());
}

async fn every_blocked_range_is_refused_before_connecting(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let started = Instant::now();
    for url in [
        "http://0.0.0.0/",
        "http://0.1.2.3/",
        "http://10.0.0.1/",
        "http://10.1/",
        "http://172.16.5.4/",
        "http://172.31.255.255/",
        "http://192.168.1.1:8080/admin",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://192.0.2.1/",
        "http://198.51.100.1/",
        "http://203.0.113.1/",
        "http://198.18.0.1/",
        "http://192.0.0.170/",
        "http://240.0.0.1/",
        "https://10.0.0.1/",
        "http://[::]/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[fec0::1]/",
        "http://[ff02::1]/",
        "http://[2001:db8::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::ffff:8.8.8.8]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::a00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://[100::1]/",
    ] {
        assert_blocked(preview(&app, &owner.token, url).await, url);
    }
    // Refusals are decided on the address: no connection attempt, no waiting.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    app.stop().await;
}

async fn redirects_into_blocked_ranges_are_refused(backend: Backend) {
    // `inner` is a real, working server the allowance does NOT cover.
    let inner = PageServer::start(|_| Page::Html("<title>secret</title>".into())).await;
    let inner_port = inner.port();
    let pages = PageServer::start(move |path| match path {
        "/to-metadata" => Page::Redirect(302, "http://169.254.169.254/latest/meta-data/".into()),
        "/to-private" => Page::Redirect(307, "http://10.0.0.1/".into()),
        "/to-inner" => Page::Redirect(302, format!("http://127.0.0.1:{inner_port}/secret")),
        "/to-inner-by-name" => Page::Redirect(301, format!("http://localhost:{inner_port}/secret")),
        "/to-inner-mapped" => Page::Redirect(308, format!("http://[::ffff:127.0.0.1]:{inner_port}/secret")),
        "/to-inner-decimal" => Page::Redirect(303, format!("http://2130706433:{inner_port}/secret")),
        "/to-ftp" => Page::Redirect(302, "ftp://example.com/file".into()),
        "/to-file" => Page::Redirect(302, "file:///etc/passwd".into()),
        "/loop" => Page::Redirect(302, "/loop".into()),
        "/r1" => Page::Redirect(301, "/r2".into()),
        "/r2" => Page::Redirect(302, "r3".into()),
        "/r3" => Page::Redirect(307, "/final".into()),
        "/final" => Page::Html("<title>Arrived</title>".into()),
        _ => Page::Status(404),
    })
    .await;
    let port = pages.port();
    let app = spawn_app_with(backend, |c| c.allow_loopback_previews_for_tests = vec![port]).await;
    let owner = app.register("owner").await;

    // Redirects are followed (three hops, relative Locations) within allowed addresses.
    let ok = preview(&app, &owner.token, &pages.url("/r1")).await.expect(200);
    assert_eq!(ok["title"], "Arrived");
    assert_eq!(ok["url"], pages.url("/r1"), "the requested URL is echoed, not the final one");

    for path in [
        "/to-metadata",
        "/to-private",
        "/to-inner",
        "/to-inner-by-name",
        "/to-inner-mapped",
        "/to-inner-decimal",
    ] {
        assert_blocked(preview(&app, &owner.token, &pages.url(path)).await, path);
    }
    for path in ["/to-ftp", "/to-file", "/loop"] {
        let reply = preview(&app, &owner.token, &pages.url(path)).await;
        assert_eq!(reply.expect_error(400), "validation_error", "{path}");
    }
    // The loop was cut after the redirect cap (first request + 3 redirects).
    assert_eq!(pages.hits_of("/loop"), 4);
    assert!(inner.hits().is_empty(), "the unallowed server was reached: {:?}", inner.hits());
    app.stop().await;
}

async fn size_time_and_content_type_are_capped(backend: Backend) {
    let big_page = format!(
        "<html><head><meta property=\"og:title\" content=\"Big page\"></head><body>{}\
         <meta property=\"og:description\" content=\"beyond the cap\"></body></html>",
        "y".repeat(2 * 1024 * 1024)
    );
    let pages = PageServer::start(move |path| match path {
        "/big" => Page::Html(big_page.clone()),
        "/endless" => Page::Endless("<html><head><title>Never ends</title></head><body>".into()),
        "/stall" => Page::Stall,
        "/json" => Page::Typed("application/json", r#"{"title": "nope"}"#.into()),
        "/png" => Page::Typed("image/png", "\u{89}PNG".into()),
        "/untyped" => Page::Typed("", "<title>no type</title>".into()),
        "/xhtml" => Page::Typed("application/xhtml+xml; charset=utf-8", "<title>XHTML</title>".into()),
        "/latin1" => Page::Typed("text/html; charset=iso-8859-1", "<title>caf\u{e9}</title>".into()),
        "/gone" => Page::Status(500),
        _ => Page::Status(404),
    })
    .await;
    let port = pages.port();
    let app = spawn_app_with(backend, |c| {
        c.allow_loopback_previews_for_tests = vec![port];
        c.link_preview.timeout = Duration::from_secs(2);
    })
    .await;
    let owner = app.register("owner").await;

    // Only the first 512 000 bytes are read: the head is there, the tail is not.
    let big = preview(&app, &owner.token, &pages.url("/big")).await.expect(200);
    assert_eq!(big["title"], "Big page");
    assert!(big["description"].is_null(), "read past the cap: {big}");

    // A body that never ends is cut, not waited for.
    let started = Instant::now();
    let endless = preview(&app, &owner.token, &pages.url("/endless")).await.expect(200);
    assert_eq!(endless["title"], "Never ends");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = pages.endless_written.load(Ordering::Relaxed);
    assert!(written < 32 * 1024 * 1024, "the reader kept reading: {written} bytes");

    // A server that stalls hits the deadline.
    let started = Instant::now();
    let stalled = preview(&app, &owner.token, &pages.url("/stall")).await;
    assert_eq!(stalled.expect_error(400), "validation_error");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6), "took {elapsed:?}");

    // Only HTML is previewed.
    for path in ["/json", "/png", "/untyped", "/gone"] {
        let reply = preview(&app, &owner.token, &pages.url(path)).await;
        let body: Value = reply.body.clone();
        assert_eq!(reply.expect_error(400), "validation_error", "{path}: {body}");
    }
    let xhtml = preview(&app, &owner.token, &pages.url("/xhtml")).await.expect(200);
    assert_eq!(xhtml["title"], "XHTML");
    // The declared charset is honoured (the page server sends é as UTF-8 bytes C3 A9, which
    // Latin-1 reads as two characters).
    let latin1 = preview(&app, &owner.token, &pages.url("/latin1")).await.expect(200);
    assert_eq!(latin1["title"], "cafÃ©");
    app.stop().await;
}

async fn bad_input_and_missing_auth(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;

    // Authentication comes first.
    let reply = app.get_public("/link-preview?url=https%3A%2F%2Fexample.com%2F").await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    let reply = app.post_public("/link-preview", json!({"url": "https://example.com/"})).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    let reply = app.get("/link-preview?url=https%3A%2F%2Fexample.com%2F", "not-a-token").await;
    assert_eq!(reply.expect_error(401), "unauthorized");

    let too_long = format!("https://example.com/{}", "a".repeat(2048));
    for url in [
        "",
        "   ",
        "example.com",
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "http://",
        "http://exa mple.com/",
        "http://[::1/",
        "http://user:secret@example.com/",
        too_long.as_str(),
    ] {
        let reply = preview(&app, &owner.token, url).await;
        assert_eq!(reply.expect_error(400), "validation_error", "{url:?}");
    }
    assert_eq!(app.get("/link-preview", &owner.token).await.expect_error(400), "validation_error");
    assert_eq!(
        app.post("/link-preview", &owner.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    let reply = app.post("/link-preview", &owner.token, json!({"url": 42})).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    app.stop().await;
}

crate::both_backends!(
    preview_reads_page_metadata_through_the_test_allowance,
    loopback_is_refused_without_the_allowance,
    every_blocked_range_is_refused_before_connecting,
    redirects_into_blocked_ranges_are_refused,
    size_time_and_content_type_are_capped,
    bad_input_and_missing_auth,
);
