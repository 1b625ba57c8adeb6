//! End-to-end tests of the real `medgate` binary through the real Rust `aws-sdk-s3`.
//!
//! Every test starts its own server (fresh data dir, random secret, free loopback port) and
//! stops it with SIGTERM when its guard drops. Most tests use `--chunk-size 65536` so that
//! small bodies and ranges cross many chunk boundaries cheaply; one test also runs the
//! default 1 MiB chunk size.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use md5::{Digest, Md5};
use rand::{Rng, RngCore};

const SMALL_CHUNK: usize = 65536;
const DEFAULT_CHUNK: usize = 1 << 20;
const MIB: usize = 1 << 20;

/// A running `medgate serve`. Dropping it sends SIGTERM and waits for the process.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    key_id: String,
    secret: String,
}

impl Server {
    /// Starts the binary on `data_dir` (created if missing) and waits until it accepts.
    fn start(data_dir: &Path, chunk_size: Option<usize>, key_id: &str, secret: &str) -> Server {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
            l.local_addr().expect("local addr").port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = data_dir
            .parent()
            .expect("data dir has a parent")
            .join(format!("server-{port}.log"));
        let log_file = File::create(&log).expect("create server log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_medgate"));
        // Nothing from the caller's environment may redirect the server elsewhere.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MEDGATE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            // Servers run in parallel: each takes a free ops port.
            .arg("--ops-listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .env("MEDGATE_ACCESS_KEY_ID", key_id)
            .env("MEDGATE_SECRET_ACCESS_KEY", secret)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file);
        if let Some(cs) = chunk_size {
            cmd.arg("--chunk-size").arg(cs.to_string());
        }
        let child = cmd.spawn().expect("spawn medgate");
        let mut server = Server {
            child: Some(child),
            addr,
            log,
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                panic!(
                    "medgate exited early with {status}; its output:\n{}",
                    self.log_text()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "medgate did not accept on {} within 30 s; its output:\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self) -> Client {
        client_for(self.addr, &self.key_id, &self.secret)
    }

    /// SIGTERM, then wait (bounded) for a graceful exit; SIGKILL if it hangs.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- medgate output ({}) ---\n{}",
                self.addr,
                self.log_text()
            );
        }
    }
}

/// A server on a fresh temp data dir; keep the `TempDir` alive as long as the server.
fn start_fresh(chunk_size: Option<usize>) -> (tempfile::TempDir, Server) {
    let root = tempfile::tempdir().expect("tempdir");
    let key_id = format!(
        "TESTKEY{:012X}",
        rand::thread_rng().gen::<u64>() & 0xffff_ffff_ffff
    );
    let secret = random_secret();
    let server = Server::start(&root.path().join("data"), chunk_size, &key_id, &secret);
    (root, server)
}

fn random_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    (0..40)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn client_for(addr: SocketAddr, key_id: &str, secret: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{addr}"))
        .credentials_provider(Credentials::new(key_id, secret, None, None, "medgate-test"))
        .force_path_style(true)
        // Recent SDKs add a CRC32 checksum to every upload by default, which for streaming
        // bodies means an aws-chunked body with a trailing checksum, and validate response
        // checksums where present. These tests pin plain PutObject/GetObject semantics
        // (Content-Length bodies, optional Content-MD5, e.g. BadDigest must come from our
        // Content-MD5 and nothing else), so checksums are sent/validated only when an
        // operation requires them; `default_sdk_checksums` covers the SDK defaults.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        // A gateway error must show up as itself, not be hidden behind a retry.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", md5_hex(data))
}

/// The S3 error code of a failed call; panics (with the request) if the call succeeded or
/// the error has no code.
macro_rules! err_code {
    ($call:expr) => {{
        match $call {
            Ok(_) => panic!("expected an error, but it succeeded: {}", stringify!($call)),
            Err(err) => {
                let debug = format!("{err:?}");
                match err.into_service_error().code() {
                    Some(code) => code.to_owned(),
                    None => panic!(
                        "error without an S3 code from {}: {debug}",
                        stringify!($call)
                    ),
                }
            }
        }
    }};
}

async fn create_bucket(client: &Client, bucket: &str) {
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {e:?}"));
}

async fn put(client: &Client, bucket: &str, key: &str, body: &[u8]) -> String {
    let out = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {bucket}/{key} ({} bytes): {e:?}", body.len()));
    out.e_tag().unwrap_or_default().to_owned()
}

async fn get(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject {bucket}/{key}: {e:?}"));
    out.body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("GetObject {bucket}/{key} body: {e:?}"))
        .into_bytes()
        .to_vec()
}

/// Asserts equality of two byte strings without dumping megabytes on failure.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {} bytes, first difference at {:?}",
            got.len(),
            want.len(),
            first
        );
    }
}

async fn put_get_sizes(chunk: usize) {
    let (_dir, server) = start_fresh(if chunk == DEFAULT_CHUNK {
        None
    } else {
        Some(chunk)
    });
    let client = server.client();
    let bucket = "sizes";
    create_bucket(&client, bucket).await;
    for size in [0, 1, chunk - 1, chunk, chunk + 1, 5 * MIB + 1] {
        let key = format!("obj-{size}");
        let body = random_bytes(size);
        let etag = put(&client, bucket, &key, &body).await;
        assert_eq!(etag, quoted_md5(&body), "PUT ETag for {size} bytes");
        let out = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject {key}: {e:?}"));
        assert_eq!(out.e_tag(), Some(quoted_md5(&body).as_str()), "GET ETag");
        assert_eq!(
            out.content_length(),
            Some(size as i64),
            "GET Content-Length"
        );
        let got = out.body.collect().await.expect("GET body").into_bytes();
        assert_same(&got, &body, &format!("GET of {size} bytes (chunk {chunk})"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_sizes_small_chunks() {
    put_get_sizes(SMALL_CHUNK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_sizes_default_chunks() {
    put_get_sizes(DEFAULT_CHUNK).await;
}

async fn check_range(
    client: &Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    range: &str,
    want: std::ops::RangeInclusive<usize>,
) {
    let n = body.len();
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(range)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject {key} Range: {range}: {e:?}"));
    assert_eq!(
        out.content_range(),
        Some(format!("bytes {}-{}/{n}", want.start(), want.end()).as_str()),
        "Content-Range for Range: {range}"
    );
    assert_eq!(
        out.content_length(),
        Some((want.end() - want.start() + 1) as i64),
        "Content-Length for Range: {range}"
    );
    let got = out.body.collect().await.expect("range body").into_bytes();
    assert_same(&got, &body[want], &format!("body for Range: {range}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads() {
    let (_dir, server) = start_fresh(Some(SMALL_CHUNK));
    let client = server.client();
    let bucket = "ranges";
    create_bucket(&client, bucket).await;
    let cs = SMALL_CHUNK;
    let n = 4 * cs + 1000;
    let body = random_bytes(n);
    put(&client, bucket, "r", &body).await;
    let cases: Vec<(String, std::ops::RangeInclusive<usize>)> = vec![
        ("bytes=0-0".into(), 0..=0),
        (format!("bytes={}-{}", n - 1, n - 1), n - 1..=n - 1),
        (format!("bytes={}-{}", cs - 1, cs), cs - 1..=cs),
        (
            format!("bytes={}-{}", cs - 10, 2 * cs + 10),
            cs - 10..=2 * cs + 10,
        ),
        (format!("bytes={}-{}", cs, 2 * cs - 1), cs..=2 * cs - 1),
        ("bytes=-1".into(), n - 1..=n - 1),
        (format!("bytes=-{}", cs + 1), n - cs - 1..=n - 1),
        (format!("bytes={cs}-"), cs..=n - 1),
        // An end past the object is clipped to the last byte.
        (
            format!("bytes={}-{}", 3 * cs + 5, n + 100),
            3 * cs + 5..=n - 1,
        ),
        // A suffix longer than the object is the whole object.
        (format!("bytes=-{}", n + 7), 0..=n - 1),
    ];
    for (range, want) in cases {
        check_range(&client, bucket, "r", &body, &range, want).await;
    }
    for range in [format!("bytes={n}-"), format!("bytes={}-{}", n + 5, n + 10)] {
        let code = err_code!(
            client
                .get_object()
                .bucket(bucket)
                .key("r")
                .range(&range)
                .send()
                .await
        );
        assert_eq!(code, "InvalidRange", "Range: {range} on a {n}-byte object");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_default_chunks() {
    let (_dir, server) = start_fresh(None);
    let client = server.client();
    let bucket = "ranges";
    create_bucket(&client, bucket).await;
    let cs = DEFAULT_CHUNK;
    let n = 3 * cs + 17;
    let body = random_bytes(n);
    put(&client, bucket, "r", &body).await;
    check_range(&client, bucket, "r", &body, "bytes=0-0", 0..=0).await;
    let r = format!("bytes={}-{}", cs - 1, cs);
    check_range(&client, bucket, "r", &body, &r, cs - 1..=cs).await;
    let r = format!("bytes={}-{}", cs - 3, 2 * cs + 3);
    check_range(&client, bucket, "r", &body, &r, cs - 3..=2 * cs + 3).await;
    let r = format!("bytes=-{}", cs + 1);
    check_range(&client, bucket, "r", &body, &r, n - cs - 1..=n - 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_content_type() {
    let (_dir, server) = start_fresh(Some(SMALL_CHUNK));
    let client = server.client();
    let bucket = "meta";
    create_bucket(&client, bucket).await;
    let body = random_bytes(3 * SMALL_CHUNK + 11);
    client
        .put_object()
        .bucket(bucket)
        .key("study/1.dcm")
        .body(ByteStream::from(body.clone()))
        .content_type("application/dicom")
        .metadata("patient-id", "P-0042")
        .metadata("modality", "CT")
        .send()
        .await
        .expect("PutObject with metadata");

    let got = client
        .get_object()
        .bucket(bucket)
        .key("study/1.dcm")
        .send()
        .await
        .expect("GetObject");
    assert_eq!(
        got.content_type(),
        Some("application/dicom"),
        "GET Content-Type"
    );
    let meta = got.metadata().cloned().unwrap_or_default();
    assert_eq!(meta.get("patient-id").map(String::as_str), Some("P-0042"));
    assert_eq!(meta.get("modality").map(String::as_str), Some("CT"));
    assert_eq!(meta.len(), 2, "GET metadata: {meta:?}");
    let data = got.body.collect().await.expect("body").into_bytes();
    assert_same(&data, &body, "GET body with metadata");

    let head = client
        .head_object()
        .bucket(bucket)
        .key("study/1.dcm")
        .send()
        .await
        .expect("HeadObject");
    assert_eq!(
        head.content_type(),
        Some("application/dicom"),
        "HEAD Content-Type"
    );
    assert_eq!(
        head.content_length(),
        Some(body.len() as i64),
        "HEAD Content-Length"
    );
    assert_eq!(head.e_tag(), Some(quoted_md5(&body).as_str()), "HEAD ETag");
    let meta = head.metadata().cloned().unwrap_or_default();
    assert_eq!(meta.get("patient-id").map(String::as_str), Some("P-0042"));
    assert_eq!(meta.get("modality").map(String::as_str), Some("CT"));
    assert_eq!(meta.len(), 2, "HEAD metadata: {meta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_objects_v2() {
    let (_dir, server) = start_fresh(Some(SMALL_CHUNK));
    let client = server.client();
    let bucket = "listing";
    create_bucket(&client, bucket).await;
    let mut keys: Vec<String> = Vec::new();
    keys.extend((0..10).map(|i| format!("a/b/k{i:02}")));
    keys.extend((0..5).map(|i| format!("a/x{i}")));
    keys.extend((0..8).map(|i| format!("c/d{i}")));
    keys.extend(["root0".to_owned(), "root1".to_owned()]);
    assert_eq!(keys.len(), 25);
    for k in &keys {
        put(&client, bucket, k, k.as_bytes()).await;
    }
    keys.sort();

    // Everything, one page.
    let all = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("ListObjectsV2");
    let got: Vec<&str> = all.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(got, keys, "full listing");
    assert_eq!(all.key_count(), Some(25));
    assert_eq!(all.is_truncated(), Some(false));
    let a_x0 = all
        .contents()
        .iter()
        .find(|o| o.key() == Some("a/x0"))
        .unwrap();
    assert_eq!(a_x0.size(), Some(4), "Size in listing");
    assert_eq!(
        a_x0.e_tag(),
        Some(quoted_md5(b"a/x0").as_str()),
        "ETag in listing"
    );

    // Delimiter at the top.
    let top = client
        .list_objects_v2()
        .bucket(bucket)
        .delimiter("/")
        .send()
        .await
        .expect("ListObjectsV2 delimiter");
    let prefixes: Vec<&str> = top
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    let contents: Vec<&str> = top.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(prefixes, ["a/", "c/"], "top-level CommonPrefixes");
    assert_eq!(contents, ["root0", "root1"], "top-level Contents");

    // Delimiter under a prefix.
    let under_a = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("a/")
        .delimiter("/")
        .send()
        .await
        .expect("ListObjectsV2 prefix+delimiter");
    let prefixes: Vec<&str> = under_a
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    let contents: Vec<&str> = under_a.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(prefixes, ["a/b/"], "CommonPrefixes under a/");
    assert_eq!(
        contents,
        ["a/x0", "a/x1", "a/x2", "a/x3", "a/x4"],
        "Contents under a/"
    );

    // Prefix without delimiter.
    let under_c = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("c/")
        .send()
        .await
        .expect("ListObjectsV2 prefix");
    let contents: Vec<&str> = under_c.contents().iter().filter_map(|o| o.key()).collect();
    let want: Vec<&String> = keys.iter().filter(|k| k.starts_with("c/")).collect();
    assert_eq!(contents, want, "Contents under c/");

    // Pagination: max_keys = 7 -> pages of 7, 7, 7, 4.
    let mut collected: Vec<String> = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = client.list_objects_v2().bucket(bucket).max_keys(7);
        if let Some(t) = &token {
            req = req.continuation_token(t);
        }
        let page = req.send().await.expect("ListObjectsV2 page");
        pages += 1;
        assert!(pages <= 4, "too many pages");
        let n = page.contents().len();
        assert!(n <= 7, "page {pages} has {n} keys with max_keys=7");
        assert_eq!(page.key_count(), Some(n as i32), "KeyCount of page {pages}");
        collected.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        if page.is_truncated() == Some(true) {
            assert_eq!(n, 7, "a truncated page is full");
            token = Some(
                page.next_continuation_token()
                    .expect("truncated page has NextContinuationToken")
                    .to_owned(),
            );
        } else {
            assert!(page.next_continuation_token().is_none());
            break;
        }
    }
    assert_eq!(pages, 4, "25 keys at 7 per page");
    assert_eq!(collected, keys, "paginated keys, each once, in order");

    // start_after.
    let after = client
        .list_objects_v2()
        .bucket(bucket)
        .start_after("a/b/k05")
        .send()
        .await
        .expect("ListObjectsV2 start_after");
    let got: Vec<&str> = after.contents().iter().filter_map(|o| o.key()).collect();
    let want: Vec<&String> = keys.iter().filter(|k| k.as_str() > "a/b/k05").collect();
    assert_eq!(got, want, "start_after a/b/k05");

    // start_after combined with max_keys and a token.
    let p1 = client
        .list_objects_v2()
        .bucket(bucket)
        .start_after("a/x2")
        .max_keys(3)
        .send()
        .await
        .expect("ListObjectsV2 start_after+max_keys");
    let got: Vec<&str> = p1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(got, ["a/x3", "a/x4", "c/d0"]);
    assert_eq!(p1.is_truncated(), Some(true));
    let p2 = client
        .list_objects_v2()
        .bucket(bucket)
        .start_after("a/x2")
        .max_keys(100)
        .continuation_token(p1.next_continuation_token().expect("token"))
        .send()
        .await
        .expect("ListObjectsV2 second page");
    let got: Vec<&str> = p2.contents().iter().filter_map(|o| o.key()).collect();
    let want: Vec<&String> = keys.iter().filter(|k| k.as_str() > "c/d0").collect();
    assert_eq!(got, want, "second page after start_after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes() {
    let (_dir, server) = start_fresh(Some(SMALL_CHUNK));
    let client = server.client();
    let bucket = "errors";
    create_bucket(&client, bucket).await;
    put(&client, bucket, "present", b"hello").await;

    // Authentication.
    let wrong_secret = client_for(server.addr, &server.key_id, &random_secret());
    let code = err_code!(wrong_secret.list_buckets().send().await);
    assert_eq!(
        code, "SignatureDoesNotMatch",
        "ListBuckets with a wrong secret"
    );
    let code = err_code!(
        wrong_secret
            .get_object()
            .bucket(bucket)
            .key("present")
            .send()
            .await
    );
    assert_eq!(
        code, "SignatureDoesNotMatch",
        "GetObject with a wrong secret"
    );
    let unknown = client_for(server.addr, "AKIDUNKNOWN000000000", &server.secret);
    let code = err_code!(unknown.list_buckets().send().await);
    assert_eq!(
        code, "InvalidAccessKeyId",
        "ListBuckets with an unknown key id"
    );

    // Missing things.
    let code = err_code!(
        client
            .get_object()
            .bucket("no-such-bucket")
            .key("k")
            .send()
            .await
    );
    assert_eq!(code, "NoSuchBucket", "GetObject on a missing bucket");
    let code = err_code!(
        client
            .list_objects_v2()
            .bucket("no-such-bucket")
            .send()
            .await
    );
    assert_eq!(code, "NoSuchBucket", "ListObjectsV2 on a missing bucket");
    let code = err_code!(
        client
            .get_object()
            .bucket(bucket)
            .key("absent")
            .send()
            .await
    );
    assert_eq!(code, "NoSuchKey", "GetObject on a missing key");

    // Key length: 1024 bytes is allowed, 1025 is not.
    let key_1024 = "k".repeat(1024);
    put(&client, bucket, &key_1024, b"max").await;
    assert_eq!(get(&client, bucket, &key_1024).await, b"max");
    let key_1025 = "k".repeat(1025);
    let code = err_code!(
        client
            .put_object()
            .bucket(bucket)
            .key(&key_1025)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
    );
    assert_eq!(code, "KeyTooLongError", "PutObject with a 1025-byte key");

    // Buckets.
    let code = err_code!(client.create_bucket().bucket(bucket).send().await);
    assert_eq!(code, "BucketAlreadyOwnedByYou", "CreateBucket twice");
    let code = err_code!(client.delete_bucket().bucket(bucket).send().await);
    assert_eq!(code, "BucketNotEmpty", "DeleteBucket on a non-empty bucket");
    let code = err_code!(client.create_bucket().bucket("Bad_Bucket").send().await);
    assert_eq!(code, "InvalidBucketName", "CreateBucket Bad_Bucket");

    // Content-MD5.
    let wrong_md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(b"other"));
    let code = err_code!(
        client
            .put_object()
            .bucket(bucket)
            .key("digest")
            .body(ByteStream::from_static(b"hello"))
            .content_md5(&wrong_md5)
            .send()
            .await
    );
    assert_eq!(code, "BadDigest", "PutObject with a wrong Content-MD5");
    let code = err_code!(
        client
            .get_object()
            .bucket(bucket)
            .key("digest")
            .send()
            .await
    );
    assert_eq!(
        code, "NoSuchKey",
        "a PUT rejected for BadDigest must not create the key"
    );
    let right_md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(b"hello"));
    client
        .put_object()
        .bucket(bucket)
        .key("digest")
        .body(ByteStream::from_static(b"hello"))
        .content_md5(&right_md5)
        .send()
        .await
        .expect("PutObject with the right Content-MD5");
    assert_eq!(get(&client, bucket, "digest").await, b"hello");

    // After emptying it, the bucket can go.
    for key in ["present", "digest", key_1024.as_str()] {
        client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("DeleteObject");
    }
    client
        .delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("DeleteBucket on an empty bucket");
    let code = err_code!(client.list_objects_v2().bucket(bucket).send().await);
    assert_eq!(code, "NoSuchBucket", "ListObjectsV2 after DeleteBucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_and_delete() {
    let (_dir, server) = start_fresh(Some(SMALL_CHUNK));
    let client = server.client();
    let bucket = "overwrite";
    create_bucket(&client, bucket).await;
    let v1 = random_bytes(5 * SMALL_CHUNK + 3);
    let v2 = random_bytes(SMALL_CHUNK / 2);
    assert_eq!(put(&client, bucket, "k", &v1).await, quoted_md5(&v1));
    assert_same(&get(&client, bucket, "k").await, &v1, "v1");
    assert_eq!(put(&client, bucket, "k", &v2).await, quoted_md5(&v2));
    assert_same(&get(&client, bucket, "k").await, &v2, "after overwrite");
    let head = client
        .head_object()
        .bucket(bucket)
        .key("k")
        .send()
        .await
        .expect("HeadObject after overwrite");
    assert_eq!(head.content_length(), Some(v2.len() as i64));
    assert_eq!(head.e_tag(), Some(quoted_md5(&v2).as_str()));

    client
        .delete_object()
        .bucket(bucket)
        .key("k")
        .send()
        .await
        .expect("DeleteObject");
    let code = err_code!(client.get_object().bucket(bucket).key("k").send().await);
    assert_eq!(code, "NoSuchKey", "GetObject after DeleteObject");
    // Deleting a missing key succeeds, as in S3.
    client
        .delete_object()
        .bucket(bucket)
        .key("k")
        .send()
        .await
        .expect("DeleteObject of a missing key");
    let list = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("ListObjectsV2 after delete");
    assert!(list.contents().is_empty(), "deleted key still listed");

    // A deleted key can be written again.
    let v3 = random_bytes(SMALL_CHUNK + 1);
    put(&client, bucket, "k", &v3).await;
    assert_same(&get(&client, bucket, "k").await, &v3, "after re-create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_objects() {
    let (root, mut server) = start_fresh(Some(SMALL_CHUNK));
    let data_dir = root.path().join("data");
    let client = server.client();
    let bucket = "durable";
    create_bucket(&client, bucket).await;
    let objects: Vec<(String, Vec<u8>)> = [0, 1, SMALL_CHUNK, 3 * SMALL_CHUNK + 7, MIB + 5]
        .iter()
        .map(|&n| (format!("obj/{n}"), random_bytes(n)))
        .collect();
    for (k, v) in &objects {
        put(&client, bucket, k, v).await;
    }
    client
        .put_object()
        .bucket(bucket)
        .key("with-meta")
        .body(ByteStream::from_static(b"meta"))
        .content_type("text/plain")
        .metadata("ward", "7B")
        .send()
        .await
        .expect("PutObject with metadata");
    let (key_id, secret) = (server.key_id.clone(), server.secret.clone());
    let status = server.stop().expect("server was running");
    assert!(
        status.success(),
        "medgate exit status after SIGTERM: {status}"
    );
    drop(server);

    let server = Server::start(&data_dir, Some(SMALL_CHUNK), &key_id, &secret);
    let client = server.client();
    for (k, v) in &objects {
        assert_same(
            &get(&client, bucket, k).await,
            v,
            &format!("{k} after restart"),
        );
    }
    let (k, v) = &objects[3];
    let r = format!("bytes={}-{}", SMALL_CHUNK - 2, 2 * SMALL_CHUNK + 1);
    check_range(
        &client,
        bucket,
        k,
        v,
        &r,
        SMALL_CHUNK - 2..=2 * SMALL_CHUNK + 1,
    )
    .await;
    let head = client
        .head_object()
        .bucket(bucket)
        .key("with-meta")
        .send()
        .await
        .expect("HeadObject after restart");
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("ward"))
            .map(String::as_str),
        Some("7B")
    );
    let list = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("ListObjectsV2 after restart");
    assert_eq!(list.key_count(), Some(objects.len() as i32 + 1));
    // And the restarted server still writes.
    put(&client, bucket, "after", b"restart").await;
    assert_eq!(get(&client, bucket, "after").await, b"restart");

    // The public store holds only sealed blobs: chunk + 16-byte tag each, no names.
    let blobs = find_files(&data_dir.join("public"));
    assert!(!blobs.is_empty(), "no blobs under DATA_DIR/public");
    for path in &blobs {
        let rel = path.strip_prefix(data_dir.join("public")).unwrap();
        let rel = rel.to_string_lossy();
        assert!(
            rel.starts_with("v1/b/") || rel.starts_with("v1/p/") || rel.starts_with("v1/log/"),
            "unexpected public object {rel}"
        );
    }
    let mut sizes: Vec<u64> = blobs
        .iter()
        .filter(|p| p.to_string_lossy().contains("/v1/b/"))
        .map(|p| p.metadata().unwrap().len())
        .collect();
    sizes.sort();
    let mut want: Vec<u64> = objects
        .iter()
        .map(|(_, v)| v.len())
        .chain([4, 7])
        .map(|n| sealed_len(n, SMALL_CHUNK))
        .collect();
    want.sort();
    assert_eq!(sizes, want, "blob sizes = plaintext + 16 bytes per chunk");
}

/// Sealed length of an `n`-byte object: one 16-byte tag per chunk, an empty object is
/// one empty chunk.
fn sealed_len(n: usize, chunk: usize) -> u64 {
    let chunks = if n == 0 { 1 } else { n.div_ceil(chunk) };
    (n + 16 * chunks) as u64
}

fn find_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A client with the SDK's default checksum settings (CRC32 on uploads, aws-chunked with
/// a trailer for streaming bodies; response validation when present).
fn default_client(server: &Server) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{}", server.addr))
        .credentials_provider(Credentials::new(
            &server.key_id,
            &server.secret,
            None,
            None,
            "medgate-test",
        ))
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// What an application gets with the SDK's default checksum settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_sdk_checksums() {
    let (root, server) = start_fresh(Some(SMALL_CHUNK));
    let client = default_client(&server);
    let bucket = "checksums";
    create_bucket(&client, bucket).await;
    let body = random_bytes(3 * SMALL_CHUNK + 5);
    // In-memory body.
    put(&client, bucket, "mem", &body).await;
    assert_same(&get(&client, bucket, "mem").await, &body, "in-memory body");
    // Streaming body from a file.
    let path = root.path().join("upload.bin");
    std::fs::write(&path, &body).unwrap();
    client
        .put_object()
        .bucket(bucket)
        .key("file")
        .body(ByteStream::from_path(&path).await.unwrap())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject from a file with default checksums: {e:?}"));
    assert_same(&get(&client, bucket, "file").await, &body, "file body");
}

/// Uploads `pieces` as the parts of a new upload (streamed from files, so the SDK sends
/// aws-chunked bodies with its checksum in a trailer) and completes it with the ETags and
/// part checksums the gateway returned.
async fn sdk_multipart(
    client: &Client,
    dir: &Path,
    bucket: &str,
    key: &str,
    pieces: &[Vec<u8>],
    algorithm: Option<ChecksumAlgorithm>,
    kind: Option<ChecksumType>,
) -> aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_checksum_algorithm(algorithm)
        .set_checksum_type(kind)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateMultipartUpload: {e:?}"));
    let id = created.upload_id().unwrap().to_string();
    let mut parts = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let n = i as i32 + 1;
        let path = dir.join(format!("{key}.part{n}"));
        std::fs::write(&path, piece).unwrap();
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from_path(&path).await.unwrap())
            .send()
            .await
            .unwrap_or_else(|e| panic!("UploadPart {n}: {e:?}"));
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(str::to_string))
                .build(),
        );
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("CompleteMultipartUpload: {e:?}"))
}

/// Multipart uploads with the SDK's default checksums: CRC32 on every part whatever the
/// upload says, a COMPOSITE CRC32 when the upload asks for CRC32, and a FULL_OBJECT
/// CRC64NVME that the SDK itself validates against the body on GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_with_default_sdk_checksums() {
    let (root, server) = start_fresh(None);
    let client = default_client(&server);
    let bucket = "mpsums";
    create_bucket(&client, bucket).await;
    let pieces = vec![
        random_bytes(5 * MIB + 7),
        random_bytes(5 * MIB + 7),
        random_bytes(1234),
    ];
    let whole = pieces.concat();

    // No algorithm on the upload: the SDK still sends CRC32 per part; no object checksum.
    sdk_multipart(&client, root.path(), bucket, "plain", &pieces, None, None).await;
    assert_same(
        &get(&client, bucket, "plain").await,
        &whole,
        "plain multipart",
    );

    // CRC32, COMPOSITE: CRC32 of the concatenated part CRC32s, then -3.
    let done = sdk_multipart(
        &client,
        root.path(),
        bucket,
        "crc32",
        &pieces,
        Some(ChecksumAlgorithm::Crc32),
        None,
    )
    .await;
    let raw: Vec<u8> = pieces
        .iter()
        .flat_map(|p| crc32fast::hash(p).to_be_bytes())
        .collect();
    let want = format!(
        "{}-3",
        base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(&raw).to_be_bytes())
    );
    assert_eq!(done.checksum_crc32(), Some(want.as_str()));
    let head = client
        .head_object()
        .bucket(bucket)
        .key("crc32")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_crc32(), Some(want.as_str()));
    assert_eq!(head.checksum_type(), Some(&ChecksumType::Composite));

    // CRC64NVME, FULL_OBJECT: the GET with checksum mode is validated by the SDK.
    sdk_multipart(
        &client,
        root.path(),
        bucket,
        "crc64",
        &pieces,
        Some(ChecksumAlgorithm::Crc64Nvme),
        Some(ChecksumType::FullObject),
    )
    .await;
    let got = client
        .get_object()
        .bucket(bucket)
        .key("crc64")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.checksum_type(), Some(&ChecksumType::FullObject));
    assert!(got.checksum_crc64_nvme().is_some());
    let body = got
        .body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("the SDK rejected the body or its CRC64NVME: {e:?}"))
        .into_bytes();
    assert_same(&body, &whole, "CRC64NVME multipart");
}
