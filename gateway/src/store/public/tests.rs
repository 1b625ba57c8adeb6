use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn s3_options(port: u16) -> BTreeMap<String, String> {
    [
        ("endpoint", format!("http://127.0.0.1:{port}")),
        ("allow_http", "true".into()),
        ("region", "us-east-1".into()),
        ("access_key_id", "AKIDMEDGATETEST".into()),
        ("secret_access_key", "not-a-secret".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn quick(timeout: Duration, operation_timeout: Duration) -> StoreTimeouts {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(1),
    };
    StoreTimeouts::new(
        &BTreeMap::new(),
        Some(timeout),
        Some(timeout),
        Some(operation_timeout),
        retry,
    )
    .unwrap()
}

fn s3_store(port: u16, timeouts: &StoreTimeouts) -> PublicStore {
    open_with(
        Some("s3://bucket/prefix"),
        &s3_options(port),
        Path::new("/nonexistent"),
        timeouts,
        Folder::MustExist,
    )
    .unwrap()
}

#[test]
fn urls_are_parsed_strictly() {
    let d = Path::new("/data/public");
    let folder = |p: &str| Location::Folder {
        path: PathBuf::from(p),
        default: false,
    };
    assert_eq!(
        Location::parse(None, d).unwrap(),
        Location::Folder {
            path: d.to_path_buf(),
            default: true
        }
    );
    assert_eq!(
        Location::parse(Some("/srv/blobs"), d).unwrap(),
        folder("/srv/blobs")
    );
    assert_eq!(
        Location::parse(Some("rel/dir"), d).unwrap(),
        folder("rel/dir")
    );
    assert_eq!(Location::parse(Some("./a:b"), d).unwrap(), folder("./a:b"));
    assert_eq!(
        Location::parse(Some("file:///srv/x"), d).unwrap(),
        folder("/srv/x")
    );
    assert!(matches!(
        Location::parse(Some("s3://bucket/prefix"), d).unwrap(),
        Location::Cloud(u) if u.scheme() == "s3"
    ));
    for (bad, says) in [
        ("s3:/hospital-archive", "write s3://hospital-archive"),
        ("s3:hospital-archive", "write s3://hospital-archive"),
        ("S3:/hospital-archive", "write s3://hospital-archive"),
        ("file:/srv/x", "write file:///srv/x"),
        ("hospital:archive", "\"hospital\" is not a store scheme"),
        ("ftp://host/x", "unknown scheme \"ftp\""),
        ("", "empty"),
    ] {
        let e = Location::parse(Some(bad), d).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    let e = Location::parse(Some("ftp://u:hunter2@host/x"), d)
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
    assert!(check(Some("s3:/hospital-archive"), &BTreeMap::new()).is_err());
}

#[test]
fn folders_are_created_only_when_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let default = tmp.path().join("public");
    let other = tmp.path().join("elsewhere");
    let t = StoreTimeouts::from_options(&BTreeMap::new()).unwrap();
    let other_s = other.to_str().unwrap();
    for folder in [Folder::MustExist, Folder::CreateDefault] {
        let e = open_with(Some(other_s), &BTreeMap::new(), &default, &t, folder)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!other.exists());
    }
    assert!(open_with(None, &BTreeMap::new(), &default, &t, Folder::MustExist).is_err());
    assert!(
        !default.exists(),
        "a read-only open created the default folder"
    );
    open_with(None, &BTreeMap::new(), &default, &t, Folder::CreateDefault).unwrap();
    assert!(default.is_dir());
    open_with(
        Some(other_s),
        &BTreeMap::new(),
        &default,
        &t,
        Folder::Create,
    )
    .unwrap();
    assert!(other.is_dir());
    // Once there, any mode opens it.
    open(Some(other_s), &BTreeMap::new(), &default).unwrap();
}

#[test]
fn s3_without_credentials_is_named() {
    let d = Path::new("/d");
    let loc = Location::parse(Some("s3://hospital-archive/medgate"), d).unwrap();
    let mut opts = BTreeMap::new();
    opts.insert("region".to_string(), "eu-central-1".to_string());
    let why = missing_credentials(&loc, &opts).unwrap();
    assert!(
        why.starts_with("no credentials for s3://hospital-archive/medgate: set access_key_id"),
        "{why}"
    );
    opts.insert("access_key_id".into(), "AKID".into());
    assert!(
        missing_credentials(&loc, &opts).is_some(),
        "a key id alone is not enough"
    );
    opts.insert("aws_secret_access_key".into(), "s".into());
    assert_eq!(missing_credentials(&loc, &opts), None);
    let mut anon = BTreeMap::new();
    anon.insert("skip_signature".to_string(), "true".to_string());
    assert_eq!(missing_credentials(&loc, &anon), None);
    let folder = Location::parse(Some("/srv"), d).unwrap();
    assert_eq!(missing_credentials(&folder, &BTreeMap::new()), None);
    let gs = Location::parse(Some("gs://b"), d).unwrap();
    assert_eq!(missing_credentials(&gs, &BTreeMap::new()), None);
}

#[tokio::test]
async fn a_refused_connection_is_unreachable_after_quick_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = s3_store(
        port,
        &quick(Duration::from_secs(5), Duration::from_secs(10)),
    );
    let started = Instant::now();
    let e = store
        .get_range(&StorePath::from("v1/b/00/x"), 0..10)
        .await
        .unwrap_err();
    assert!(unreachable(&e) && !throttled(&e), "{e}");
    let e = store
        .put(&StorePath::from("v1/b/00/x"), PutPayload::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(unreachable(&e) && !throttled(&e), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_store_that_never_answers_fails_at_the_operation_deadline() {
    // Connections are accepted (the listen backlog) but nothing is ever read.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = s3_store(
        port,
        &quick(Duration::from_secs(60), Duration::from_millis(300)),
    );
    let started = Instant::now();
    let e = store.head(&StorePath::from("v1/b/00/x")).await.unwrap_err();
    assert!(
        chain(&e).any(|s| s.downcast_ref::<NoAnswer>().is_some()),
        "{e}"
    );
    assert!(unreachable(&e), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

/// A server answering every request with `status` and `body`.
async fn answering(status: &'static str, body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn slow_down_is_throttling_and_other_5xx_are_not() {
    let timeouts = quick(Duration::from_secs(5), Duration::from_secs(10));
    let path = StorePath::from("v1/b/00/x");
    let port = answering(
        "503 Slow Down",
        "<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>",
    )
    .await;
    let e = s3_store(port, &timeouts)
        .get_range(&path, 0..10)
        .await
        .unwrap_err();
    assert!(throttled(&e) && !unreachable(&e), "{e}");
    let port = answering("429 Too Many Requests", "").await;
    let e = s3_store(port, &timeouts)
        .get_range(&path, 0..10)
        .await
        .unwrap_err();
    assert!(throttled(&e), "{e}");
    let port = answering(
        "500 Internal Server Error",
        "<Error><Code>InternalError</Code></Error>",
    )
    .await;
    let e = s3_store(port, &timeouts)
        .get_range(&path, 0..10)
        .await
        .unwrap_err();
    assert!(!throttled(&e) && !unreachable(&e), "{e}");
}

#[test]
fn timeouts_come_from_settings_then_options_then_defaults() {
    let mut options = BTreeMap::new();
    let t = StoreTimeouts::from_options(&options).unwrap();
    assert_eq!(t.timeout, DEFAULT_TIMEOUT);
    assert_eq!(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(t.operation_timeout, Duration::from_secs(30 + 10 + 2));
    options.insert("timeout".to_string(), "7s".to_string());
    let t = StoreTimeouts::from_options(&options).unwrap();
    assert_eq!(t.timeout, Duration::from_secs(7));
    let t = StoreTimeouts::new(
        &options,
        Some(Duration::from_secs(2)),
        None,
        None,
        default_retry(),
    )
    .unwrap();
    assert_eq!(t.timeout, Duration::from_secs(2));
    options.insert("timeout".to_string(), "soon".to_string());
    let e = StoreTimeouts::from_options(&options)
        .unwrap_err()
        .to_string();
    assert!(e.contains("public_store.options.timeout"), "{e}");
    let e = StoreTimeouts::new(
        &BTreeMap::new(),
        Some(Duration::ZERO),
        None,
        None,
        default_retry(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("timeout must be positive"), "{e}");
}
