//! The data fetcher against HTTP servers on loopback (and refusals that never connect).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kaito_adapter::fetch::{FetchError, FetchOptions, fetch_all};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the test server answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    content_length: bool,
}

impl Reply {
    fn ok(body: &[u8]) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.to_vec(),
            content_length: true,
        }
    }
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: b"no".to_vec(),
            content_length: true,
        }
    }
    fn redirect(to: &str) -> Self {
        Self {
            status: 302,
            headers: vec![("Location", to.to_string())],
            body: Vec::new(),
            content_length: true,
        }
    }
}

type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1 (one request per connection); stops on drop.
struct TestServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(handler: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let handler = handler.clone();
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let reply = handler(&path, n);
                    let mut out =
                        format!("HTTP/1.1 {} Test\r\nConnection: close\r\n", reply.status);
                    for (k, v) in &reply.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    if reply.content_length {
                        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
                    }
                    out.push_str("\r\n");
                    let _ = conn.write_all(out.as_bytes()).await;
                    let _ = conn.write_all(&reply.body).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Self { addr, hits, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn opts(dir: &Path, allow_loopback: bool) -> FetchOptions {
    FetchOptions {
        allow_loopback,
        backoff: Duration::from_millis(20),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        ..FetchOptions::new(dir)
    }
}

async fn fetch_err(url: &str, opts: &FetchOptions) -> FetchError {
    fetch_all(&[url.to_string()], opts)
        .await
        .expect_err("the fetch must fail")
}

fn dir_entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaito-adapter"));
    cmd.env_remove("KAITO_FETCH_ALLOW_LOOPBACK");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_is_refused_without_the_allow_flag() {
    let server = TestServer::start(|_, _| Reply::ok(b"data")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url("/x");
    let out = bin()
        .args(["fetch", "--output"])
        .arg(dir.path())
        .arg(&url)
        .output()
        .expect("run kaito-adapter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {stderr}");
    assert!(stderr.contains(&url), "names the URL: {stderr}");
    assert!(stderr.contains("loopback"), "names the cause: {stderr}");
    // The plain http://127.0.0.1/x of the admission rule, too.
    let err = fetch_err("http://127.0.0.1/x", &opts(dir.path(), false)).await;
    assert!(!err.transient && err.cause.contains("refused"), "{err}");
    assert_eq!(server.hits(), 0, "no request may reach a refused address");
    assert!(dir_entries(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_private_and_non_http_targets_are_refused_even_with_allow_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
        "http://192.168.1.1/x",
        "http://100.64.0.1/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://[fd00:ec2::254]/x",
        "http://127.0.0.2/x",
        "ftp://example.com/x",
        "file:///etc/passwd",
        "gopher://example.com/x",
    ] {
        let err = fetch_err(url, &opts(dir.path(), true)).await;
        assert!(!err.transient, "{url}: a refusal is not retried: {err}");
        assert!(err.to_string().contains(url), "{err}");
        assert!(
            err.cause.contains("refused") || err.cause.contains("scheme"),
            "{url}: {err}"
        );
    }
    assert!(dir_entries(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_followed_and_each_hop_is_checked() {
    let server = TestServer::start(|path, _| match path {
        "/hop" => Reply::redirect("/file.bin"),
        "/file.bin" => Reply::ok(b"payload"),
        "/metadata" => Reply::redirect("http://169.254.169.254/latest/meta-data"),
        "/private" => Reply::redirect("http://10.0.0.1/x"),
        _ => Reply::redirect("/loop"),
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(dir.path(), true);

    let files = fetch_all(&[server.url("/hop")], &o)
        .await
        .expect("a redirect within loopback is followed");
    assert_eq!(files, vec![dir.path().join("hop")]);
    assert_eq!(std::fs::read(&files[0]).expect("read"), b"payload");

    for (path, target) in [("/metadata", "169.254.169.254"), ("/private", "10.0.0.1")] {
        let before = server.hits();
        let err = fetch_err(&server.url(path), &o).await;
        assert!(!err.transient, "{err}");
        assert!(
            err.cause.contains(target) && err.cause.contains("refused"),
            "{err}"
        );
        assert_eq!(server.hits(), before + 1, "not retried");
    }

    let before = server.hits();
    let err = fetch_err(&server.url("/loop"), &o).await;
    assert!(err.cause.contains("more than 5 redirects"), "{err}");
    assert_eq!(server.hits(), before + 6);
    assert_eq!(dir_entries(dir.path()), vec!["hop".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_from_loopback_with_the_allow_flag_or_env() {
    let server = TestServer::start(|path, _| match path {
        "/data/train.jsonl" => Reply::ok(b"{\"text\":\"hi\"}\n"),
        _ => Reply::ok(b"other"),
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = bin()
        .args(["fetch", "--allow-loopback", "--output"])
        .arg(dir.path())
        .arg(server.url("/data/train.jsonl"))
        .arg(server.url("/x/..%2F..%2Fescape?q=1"))
        .output()
        .expect("run kaito-adapter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read(dir.path().join("train.jsonl")).expect("downloaded file"),
        b"{\"text\":\"hi\"}\n"
    );
    let mut names = dir_entries(dir.path());
    names.sort();
    assert_eq!(
        names,
        vec!["_2F.._2Fescape".to_string(), "train.jsonl".to_string()]
    );

    let env_dir = tempfile::tempdir().expect("tempdir");
    let out = bin()
        .env("KAITO_FETCH_ALLOW_LOOPBACK", "1")
        .args(["fetch", "--output"])
        .arg(env_dir.path())
        .arg(server.url("/data/train.jsonl"))
        .output()
        .expect("run kaito-adapter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env_dir.path().join("train.jsonl").is_file());

    // A host name goes through the fetcher's own resolution and the pinned connection.
    let by_name = format!("http://localhost:{}/data/train.jsonl", server.addr.port());
    let name_dir = tempfile::tempdir().expect("tempdir");
    let files = fetch_all(std::slice::from_ref(&by_name), &opts(name_dir.path(), true))
        .await
        .expect("localhost resolves to loopback, allowed with the flag");
    assert_eq!(files, vec![name_dir.path().join("train.jsonl")]);
    let err = fetch_err(&by_name, &opts(name_dir.path(), false)).await;
    assert!(err.cause.contains("refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_and_client_errors_are_not() {
    let server = TestServer::start(|path, n| match (path, n) {
        ("/flaky", 0) => Reply::status(503),
        ("/flaky", 1) => Reply::status(429),
        ("/flaky", _) => Reply::ok(b"finally"),
        ("/down", _) => Reply::status(502),
        _ => Reply::status(404),
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(dir.path(), true);
    let files = fetch_all(&[server.url("/flaky")], &o)
        .await
        .expect("503 then 429 then 200 succeeds");
    assert_eq!(std::fs::read(&files[0]).expect("read"), b"finally");
    assert_eq!(server.hits(), 3);

    let before = server.hits();
    let err = fetch_err(&server.url("/missing"), &o).await;
    assert!(err.cause.contains("404"), "{err}");
    assert_eq!(server.hits(), before + 1, "a 404 is not retried");

    let before = server.hits();
    let err = fetch_err(&server.url("/down"), &o).await;
    assert!(err.transient && err.cause.contains("502"), "{err}");
    assert_eq!(server.hits(), before + 4, "first attempt and 3 retries");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_max_bytes_fails_and_leaves_no_file() {
    let server = TestServer::start(|path, _| {
        let mut reply = Reply::ok(&[b'x'; 5000]);
        reply.content_length = path == "/with-length";
        reply
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let o = FetchOptions {
        max_bytes: 1000,
        ..opts(dir.path(), true)
    };
    for path in ["/with-length", "/streamed"] {
        let err = fetch_err(&server.url(path), &o).await;
        assert!(!err.transient, "{err}");
        assert!(err.cause.contains("--max-bytes"), "{path}: {err}");
    }
    assert_eq!(
        dir_entries(dir.path()),
        Vec::<String>::new(),
        "no file, no .part"
    );

    let out = bin()
        .args(["fetch", "--allow-loopback", "--max-bytes", "10", "--output"])
        .arg(dir.path())
        .arg(server.url("/streamed"))
        .output()
        .expect("run kaito-adapter");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-bytes"));
    assert!(dir_entries(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_only_address_is_reached_and_no_other() {
    let server = TestServer::start(|_, _| Reply::ok(b"rows")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed = FetchOptions {
        test_only_allow_address: Some("127.0.0.1".parse().expect("ip")),
        ..opts(dir.path(), false)
    };
    let files = fetch_all(&[server.url("/train.parquet")], &allowed)
        .await
        .expect("the allowed address is fetched");
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read(&files[0]).expect("read"), b"rows");
    // Any other non-public address stays refused, before a connection is made.
    for url in [
        "http://10.0.0.1/x",
        "http://169.254.169.254/x",
        "http://[::1]/x",
    ] {
        let err = fetch_err(url, &allowed).await;
        assert!(
            !err.transient && err.cause.contains("refused"),
            "{url}: {err}"
        );
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_trickles_bytes_is_cut_off_at_the_deadline_and_leaves_no_file() {
    // One byte every 100 ms of a 10 000-byte body: every read arrives well within the read
    // timeout, so only an overall deadline ends it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\nConnection: close\r\n\r\n";
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..10_000 {
                    if conn.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let o = FetchOptions {
        deadline: Duration::from_secs(2),
        ..opts(dir.path(), true)
    };
    let started = std::time::Instant::now();
    let err = fetch_err(&format!("http://{addr}/slow.jsonl"), &o).await;
    let took = started.elapsed();
    server.abort();
    assert!(
        err.cause
            .contains("did not finish within --deadline-secs 2"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        dir_entries(dir.path()),
        Vec::<String>::new(),
        "no .part left"
    );
}
