//! End-to-end throughput and memory of the real `medgate` binary, against plain file I/O.
//!
//!   cargo bench --bench e2e                 256 MiB object, 3 runs each
//!   cargo bench --bench e2e -- --quick      16 MiB object (smoke run)
//!   MEDGATE_BENCH_MIB=64 cargo bench --bench e2e
//!   MEDGATE_BENCH_RUNS=5 MEDGATE_BENCH_CHUNK=65536 cargo bench --bench e2e
//!
//! Makes a random file in a temp dir (TMPDIR decides which disk), then
//! (a) baseline: copies it to a new file with `std::fs::copy` + fsync, and reads the copy back;
//! (b) starts `medgate serve` on a fresh data dir in the same temp dir, records its idle RSS,
//!     PUTs the file with aws-sdk-s3 streaming from disk, GETs it back streaming to a file,
//!     checks the MD5 of every download, and reads the server's peak RSS (VmHWM).
//! Every figure is best and median of the runs. Both read paths run against a warm page
//! cache; GET includes writing the downloaded bytes to a file (not fsynced). Exits non-zero
//! on any mismatch or failure.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use md5::{Digest, Md5};
use rand::RngCore;

const MIB: usize = 1 << 20;
const KEY_ID: &str = "BENCHKEY00000000";

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_usize(name: &str) -> Res<Option<usize>> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={v} is not a number")),
        _ => Ok(None),
    }
}

fn run() -> Res<()> {
    // `cargo bench` passes `--bench`; anything but `--quick` is ignored.
    let quick = std::env::args().any(|a| a == "--quick");
    let mib = env_usize("MEDGATE_BENCH_MIB")?.unwrap_or(if quick { 16 } else { 256 });
    let runs = env_usize("MEDGATE_BENCH_RUNS")?.unwrap_or(3).max(1);
    let chunk = env_usize("MEDGATE_BENCH_CHUNK")?;
    if mib == 0 {
        return Err("MEDGATE_BENCH_MIB must be at least 1".into());
    }
    let size = mib * MIB;

    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let src = dir.path().join("source.bin");
    eprintln!("writing {mib} MiB of random data to {}", src.display());
    let src_md5 = make_random_file(&src, size)?;

    // (a) Baseline: plain file copy + fsync, and read back.
    let mut copy_s = Vec::new();
    let mut read_s = Vec::new();
    for i in 0..runs {
        let dst = dir.path().join(format!("copy-{i}.bin"));
        let t = Instant::now();
        std::fs::copy(&src, &dst).map_err(|e| format!("copy: {e}"))?;
        File::open(&dst)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("fsync copy: {e}"))?;
        copy_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (n, md5) = read_file_md5(&dst, false)?;
        read_s.push(t.elapsed().as_secs_f64());
        if n != size as u64 {
            return Err(format!("direct read returned {n} bytes, want {size}"));
        }
        let _ = md5;
        std::fs::remove_file(&dst).map_err(|e| format!("remove copy: {e}"))?;
    }

    // (b) Through medgate.
    let data_dir = dir.path().join("data");
    let secret = random_secret();
    let mut server = Server::start(&data_dir, chunk, &secret)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = proc_status_kib(server.pid(), "VmRSS")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let client = client_for(server.addr, KEY_ID, &secret);
    let bucket = "bench";
    let key = "record.bin";
    let mut put_s = Vec::new();
    let mut get_s = Vec::new();
    let result: Res<(u64, u64)> = rt.block_on(async {
        client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| format!("CreateBucket: {e:?}"))?;
        let want_etag = format!("\"{}\"", hex(&src_md5));
        for _ in 0..runs {
            let body = ByteStream::from_path(&src)
                .await
                .map_err(|e| format!("ByteStream::from_path: {e}"))?;
            let t = Instant::now();
            let out = client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("PutObject: {e:?}"))?;
            put_s.push(t.elapsed().as_secs_f64());
            if out.e_tag() != Some(want_etag.as_str()) {
                return Err(format!(
                    "PUT ETag {:?}, want {want_etag} (MD5 of the source)",
                    out.e_tag()
                ));
            }
        }
        let peak_after_put = proc_status_kib(server.pid(), "VmHWM")?;
        for i in 0..runs {
            let dst = dir.path().join(format!("get-{i}.bin"));
            let t = Instant::now();
            let n = get_to_file(&client, bucket, key, &dst).await?;
            get_s.push(t.elapsed().as_secs_f64());
            if n != size as u64 {
                return Err(format!("GET streamed {n} bytes, want {size}"));
            }
            let (_, md5) = read_file_md5(&dst, true)?;
            if md5 != src_md5 {
                return Err(format!(
                    "GET run {i}: MD5 {} differs from the source's {}",
                    hex(&md5),
                    hex(&src_md5)
                ));
            }
            std::fs::remove_file(&dst).map_err(|e| format!("remove download: {e}"))?;
        }
        let peak = proc_status_kib(server.pid(), "VmHWM")?;
        Ok((peak_after_put, peak))
    });
    let (peak_after_put, peak) = match result {
        Ok(v) => v,
        Err(e) => {
            server.stop();
            eprintln!("--- medgate output ---\n{}", server.log_tail());
            return Err(e);
        }
    };
    let status = server.stop();
    if !matches!(status, Some(s) if s.success()) {
        eprintln!("--- medgate output ---\n{}", server.log_tail());
        return Err(format!(
            "medgate did not exit cleanly on SIGTERM: {status:?}"
        ));
    }

    // Report.
    let mibf = mib as f64;
    let rate = |secs: &[f64]| -> (f64, f64) {
        let mut v: Vec<f64> = secs.iter().map(|s| mibf / s).collect();
        v.sort_by(|a, b| b.partial_cmp(a).unwrap());
        (v[0], v[v.len() / 2])
    };
    let (copy_b, copy_m) = rate(&copy_s);
    let (read_b, read_m) = rate(&read_s);
    let (put_b, put_m) = rate(&put_s);
    let (get_b, get_m) = rate(&get_s);
    let to_mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!(
        "medgate e2e: {mib} MiB object, {runs} runs, chunk size {}, temp dir {}",
        chunk.map_or("default (1 MiB)".to_owned(), |c| c.to_string()),
        dir.path().display()
    );
    println!("{:<32} {:>10} {:>10}", "metric", "best", "median");
    let row = |name: &str, b: f64, m: f64| println!("{name:<32} {b:>10.1} {m:>10.1}");
    let row2 = |name: &str, b: f64, m: f64| println!("{name:<32} {b:>10.2} {m:>10.2}");
    row("PUT MiB/s", put_b, put_m);
    row("GET MiB/s", get_b, get_m);
    row("direct copy MiB/s (copy+fsync)", copy_b, copy_m);
    row("direct read MiB/s", read_b, read_m);
    row2("ratio PUT / direct copy", put_b / copy_b, put_m / copy_m);
    row2("ratio GET / direct read", get_b / read_b, get_m / read_m);
    println!("{:<32} {:>10.1}", "server idle RSS MiB", to_mib(idle_rss));
    println!(
        "{:<32} {:>10.1}",
        "server peak RSS MiB (after PUTs)",
        to_mib(peak_after_put)
    );
    println!("{:<32} {:>10.1}", "server peak RSS MiB", to_mib(peak));
    println!(
        "{:<32} {:>10.1}",
        "peak - idle MiB",
        to_mib(peak.saturating_sub(idle_rss))
    );
    println!("all {runs} downloads matched the source MD5");
    Ok(())
}

/// Writes `size` random bytes to `path` (fsynced); returns their MD5.
fn make_random_file(path: &Path, size: usize) -> Res<[u8; 16]> {
    let mut f = BufWriter::new(File::create(path).map_err(|e| format!("create source: {e}"))?);
    let mut rng = rand::thread_rng();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; MIB];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB);
        rng.fill_bytes(&mut buf[..n]);
        md5.update(&buf[..n]);
        f.write_all(&buf[..n])
            .map_err(|e| format!("write source: {e}"))?;
        left -= n;
    }
    let f = f
        .into_inner()
        .map_err(|e| format!("flush source: {}", e.error()))?;
    f.sync_all().map_err(|e| format!("fsync source: {e}"))?;
    Ok(md5.finalize().into())
}

/// Reads a file in 1 MiB blocks; returns its length and (when asked) its MD5.
fn read_file_md5(path: &Path, hash: bool) -> Res<(u64, [u8; 16])> {
    let mut f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; MIB];
    let mut md5 = Md5::new();
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        if hash {
            md5.update(&buf[..n]);
        }
        total += n as u64;
    }
    Ok((total, md5.finalize().into()))
}

/// GetObject, writing body chunks to `dst` as they arrive; returns the bytes written.
async fn get_to_file(client: &Client, bucket: &str, key: &str, dst: &Path) -> Res<u64> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("GetObject: {e:?}"))?;
    let mut body = out.body;
    let mut f = BufWriter::with_capacity(
        MIB,
        File::create(dst).map_err(|e| format!("create download: {e}"))?,
    );
    let mut total = 0u64;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| format!("GET body after {total} bytes: {e:?}"))?
    {
        f.write_all(&chunk)
            .map_err(|e| format!("write download: {e}"))?;
        total += chunk.len() as u64;
    }
    f.flush().map_err(|e| format!("flush download: {e}"))?;
    Ok(total)
}

fn client_for(addr: SocketAddr, key_id: &str, secret: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{addr}"))
        .credentials_provider(Credentials::new(
            key_id,
            secret,
            None,
            None,
            "medgate-bench",
        ))
        .force_path_style(true)
        // The SDK's default CRC32 on uploads would turn the streaming file body into an
        // aws-chunked body with a trailing checksum; measure plain PutObject/GetObject.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn random_secret() -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    hex(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn proc_status_kib(pid: u32, field: &str) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(data_dir: &Path, chunk: Option<usize>, secret: &str) -> Res<Server> {
        std::fs::create_dir_all(data_dir).map_err(|e| format!("create data dir: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = data_dir.with_file_name("server.log");
        let log_file = File::create(&log).map_err(|e| format!("server log: {e}"))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("server log: {e}"))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_medgate"));
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
            .arg("--ops-listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .env("MEDGATE_ACCESS_KEY_ID", KEY_ID)
            .env("MEDGATE_SECRET_ACCESS_KEY", secret)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        if let Some(c) = chunk {
            cmd.arg("--chunk-size").arg(c.to_string());
        }
        let child = cmd.spawn().map_err(|e| format!("spawn medgate: {e}"))?;
        let mut server = Server {
            child: Some(child),
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let child = server.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "medgate exited early ({status}):\n{}",
                    server.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "medgate did not accept within 30 s:\n{}",
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(4000);
        let start = (start..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        s[start..].to_owned()
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
