use super::*;
use keyring::BlobId;

/// The read pipeline's chunk jobs for plaintext `start..end` of a session's record: what
/// `Remote::open` streams.
fn chunk_jobs(
    s: Arc<Session>,
    start: u64,
    end: u64,
) -> impl Iterator<Item = Result<read::ChunkJob>> {
    read::jobs(read::windows(&s.manifest, &s.dek, start, end))
}

fn session(parts: Vec<keyring::Part>) -> Arc<Session> {
    let size = parts.iter().map(|p| p.plaintext_len).sum();
    Arc::new(Session {
        peer: Peer {
            name: "hospital-a".into(),
            recipient: Identity::generate().recipient(),
            url: None,
            allow_plain_http: false,
            ca_file: None,
        },
        grant: "g".into(),
        bucket: "ehr".into(),
        key: "k".into(),
        manifest: Manifest {
            suite: keyring::SUITE_V1,
            dek_id: keyring::DekId::random(),
            size,
            last_modified_ms: 0,
            etag: "\"e\"".into(),
            content_type: None,
            headers: Vec::new(),
            metadata: Vec::new(),
            checksums: Vec::new(),
            patient: None,
            parts,
        },
        dek: DataKey::generate(),
        fetched: Instant::now(),
    })
}

fn part(chunk_size: u32, plaintext_len: u64) -> keyring::Part {
    keyring::Part {
        blob: BlobId::random(),
        chunk_size,
        plaintext_len,
        root: [0; 32],
    }
}

#[test]
fn a_huge_manifest_is_walked_lazily() {
    // 2^40 chunks: a job list built up front would never finish; the walk yields the
    // first chunks at once, in order, with the right byte windows.
    let s = session(vec![part(1, 1 << 40), part(1024, 4096)]);
    let first: Vec<read::ChunkJob> = chunk_jobs(Arc::clone(&s), 5, u64::MAX)
        .take(3)
        .collect::<Result<_>>()
        .expect("jobs");
    assert_eq!(
        first
            .iter()
            .map(|j| (j.index, j.lo, j.hi))
            .collect::<Vec<_>>(),
        vec![
            (5, 0, (1 << 40) - 5),
            (6, 0, (1 << 40) - 6),
            (7, 0, (1 << 40) - 7)
        ]
    );
    // A window in the second part touches only its chunks.
    let tail: Vec<(u64, u64, u64)> = chunk_jobs(s, (1 << 40) + 1000, (1 << 40) + 2100)
        .map(|j| j.map(|j| (j.index, j.lo, j.hi)).expect("job"))
        .collect();
    // `hi` is the window's end within the chunk, clamped to the chunk when it is opened.
    assert_eq!(tail, vec![(0, 1000, 2100), (1, 0, 1076), (2, 0, 52)]);
}

#[test]
fn plain_http_needs_the_entry_to_allow_it() {
    let mut p = session(Vec::new()).peer.clone();
    p.url = Some("http://127.0.0.1:9001".parse().expect("url"));
    assert!(p.check_url().is_err());
    p.allow_plain_http = true;
    assert!(p.check_url().is_ok());
    p.url = Some("https://a.example:9001".parse().expect("url"));
    p.allow_plain_http = false;
    assert!(p.check_url().is_ok());
    p.url = Some("ftp://a.example".parse().expect("url"));
    assert!(p.check_url().is_err());
}
