//! The client side of the admin socket: connecting, one call, a call that hears progress,
//! and the time limits every client command uses.

use super::*;

/// How long an admin command waits for the server to accept its connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an admin command waits for an answer or a progress frame, unless
/// `MEDGATE_ADMIN_TIMEOUT` says otherwise ([`answer_timeout`]): long jobs (backup, verify,
/// rotate) report progress well within it.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// While verify or rotate runs, the server repeats its last progress frame this often when the
/// job reports nothing new (a deep verify hashing one large blob, a public store slow to
/// answer), so the client gives up only on a server that is stopped.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The answer timeout admin commands use: `MEDGATE_ADMIN_TIMEOUT` (e.g. `2m`, at least 2 s) when
/// set and valid, else [`ANSWER_TIMEOUT`]. An invalid value is reported once on stderr.
pub fn answer_timeout() -> Duration {
    static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| match std::env::var("MEDGATE_ADMIN_TIMEOUT") {
        Err(_) => ANSWER_TIMEOUT,
        Ok(v) => match humantime::parse_duration(v.trim()) {
            Ok(d) if d >= 2 * HEARTBEAT => d,
            _ => {
                eprintln!(
                    "MEDGATE_ADMIN_TIMEOUT={v:?} is not a duration of at least 2s (e.g. 30s, 2m): \
                     using {} s",
                    ANSWER_TIMEOUT.as_secs()
                );
                ANSWER_TIMEOUT
            }
        },
    })
}

/// The error of an admin call the server did not serve in time: an I/O error of kind
/// `TimedOut`, naming the socket and what to check.
pub(super) fn timed_out(path: &Path, what: &str) -> Error {
    let secs = if what.starts_with("accept ") {
        CONNECT_TIMEOUT.as_secs()
    } else {
        answer_timeout().as_secs()
    };
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the medgate server behind {} did not {what} within {secs} s: is it stopped \
             (SIGSTOP, a debugger) or overloaded? Check the process (its logs, `kill -CONT PID`) \
             and run the command again",
            path.display()
        ),
    ))
}

/// Connects to the admin socket, giving up after [`CONNECT_TIMEOUT`].
///
/// # Errors
/// No server listens there, or it does not accept in time (`TimedOut`).
pub async fn connect(path: &Path) -> Result<UnixStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| timed_out(path, "accept the connection"))?
        .map_err(Error::Io)
}

/// Waits at most [`answer_timeout`] for `fut`, an answer or progress frame from the
/// server behind `path`.
///
/// # Errors
/// `fut`'s own error, or `TimedOut` naming the socket.
pub async fn within_answer_timeout<T>(
    path: &Path,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(answer_timeout(), fut)
        .await
        .map_err(|_| timed_out(path, "answer or report progress"))?
}

/// Sends one request to a running server's admin socket.
///
/// # Errors
/// The socket is missing or refuses (no server runs), or the answer is not JSON.
pub async fn call(path: &Path, req: &AdminRequest) -> Result<AdminResponse> {
    call_with_progress(path, req, None).await
}

/// [`call`], passing `progress` lines to `on_progress` until the answer.
///
/// # Errors
/// As [`call`].
pub async fn call_with_progress(
    path: &Path,
    req: &AdminRequest,
    on_progress: Option<&Progress>,
) -> Result<AdminResponse> {
    let stream = connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| Error::Internal(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.shutdown().await?;
    let mut lines = BufReader::new(read).lines();
    loop {
        let answer = tokio::time::timeout(answer_timeout(), lines.next_line())
            .await
            .map_err(|_| timed_out(path, "answer or report progress"))??
            .ok_or_else(|| Error::Internal("the server closed the admin socket".into()))?;
        match serde_json::from_str(&answer)
            .map_err(|e| Error::Internal(format!("bad admin answer: {e}")))?
        {
            AdminResponse::Progress { step, done, total } => {
                if let Some(p) = on_progress {
                    p(&step, done, total);
                }
            }
            other => return Ok(other),
        }
    }
}
