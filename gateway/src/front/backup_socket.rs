//! The backup over the admin socket: the server streams the encrypted bytes of
//! [`crate::engine::backup::write_backup`] to the `medgate backup` process, which writes the file.
//!
//! **Who writes the file.** With a server running, the server makes the backup and *streams*
//! the encrypted bytes over the admin socket; the `medgate backup` process writes the file.
//! So the file belongs to whoever runs the command and can go anywhere they may write (a
//! backup volume the service's sandbox cannot see), and the plaintext never leaves the server
//! process. A client that stops reading for [`STALL_TIMEOUT`] aborts the backup, so a stuck
//! client cannot hold writes up.
//!
//! Socket protocol, after the `{"op":"backup",...}` request line, server to client:
//!
//! | byte | then                                  | meaning                                   |
//! |------|---------------------------------------|-------------------------------------------|
//! | `D`  | length (u32 BE) ‖ bytes                | the next bytes of the backup file         |
//! | `P`  | records done (u64 BE) ‖ total (u64 BE) | progress                                  |
//! | `E`  | length (u32 BE) ‖ JSON `AdminResponse` | the end: `done` or `error`                |
//!
//! After a `done` end frame the client makes the file durable and sends the line
//! `committed`; only then does the server record the backup's time (what the start-up
//! warning and `medgate_last_backup_timestamp_seconds` report) and answer with a second end
//! frame.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use keyring::Recipient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use zeroize::Zeroizing;

use crate::engine::backup::{BackupSink, FileBytes};
use crate::front::admin::{AdminContext, AdminRequest, AdminResponse};
use crate::{Error, Result};

/// How long the server waits on a client that does not read (or does not confirm).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The line a client sends once the file is durable.
const COMMITTED: &str = "committed";
/// Largest frame a client accepts.
const MAX_FRAME: usize = 64 << 20;

/// The server's side of the socket protocol (module docs).
struct SocketSink {
    write: OwnedWriteHalf,
}

impl SocketSink {
    async fn frame(&mut self, kind: u8, body: &[u8]) -> Result<()> {
        let len = u32::try_from(body.len())
            .map_err(|_| Error::Internal("backup frame too large".into()))?;
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&len.to_be_bytes());
        let send = async {
            self.write.write_all(&head).await?;
            self.write.write_all(body).await
        };
        tokio::time::timeout(STALL_TIMEOUT, send)
            .await
            .map_err(|_| Error::Internal("the backup client stopped reading".into()))??;
        Ok(())
    }

    async fn end(&mut self, resp: &AdminResponse) -> Result<()> {
        let json = serde_json::to_vec(resp).map_err(|e| Error::Internal(e.to_string()))?;
        self.frame(b'E', &json).await
    }
}

#[async_trait]
impl BackupSink for SocketSink {
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.frame(b'D', bytes).await
    }

    async fn progress(&mut self, done: u64, total: u64) -> Result<()> {
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&done.to_be_bytes());
        body[8..].copy_from_slice(&total.to_be_bytes());
        self.frame(b'P', &body).await
    }
}

/// Serves one backup request on the admin socket (module docs).
///
/// # Errors
/// The client went away; a failed backup is reported to the client, not returned.
pub(crate) async fn serve(
    cx: &AdminContext,
    recipient: &str,
    identity_file: FileBytes,
    rotation_files: Vec<(String, FileBytes)>,
    mut read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
) -> Result<()> {
    let mut sink = SocketSink { write };
    let recipient = match recipient.parse::<Recipient>() {
        Ok(r) => r,
        Err(_) => {
            return sink
                .end(&AdminResponse::Error {
                    message: "the recovery recipient is not a medgate1... Recipient".into(),
                })
                .await
        }
    };
    let mut files = vec![("institution.key".to_string(), identity_file)];
    files.extend(rotation_files);
    let stats = match cx.engine.write_backup(files, &recipient, &mut sink).await {
        Ok(stats) => stats,
        Err(e) => {
            tracing::warn!(error = %e, "backup failed");
            return sink
                .end(&AdminResponse::Error {
                    message: format!("backup failed: {e}"),
                })
                .await;
        }
    };
    sink.end(&AdminResponse::Done {
        message: format!(
            "{} entries (records, trees and files), {} bytes",
            stats.entries, stats.bytes
        ),
    })
    .await?;
    let mut line = String::new();
    let got = tokio::time::timeout(STALL_TIMEOUT, read.read_line(&mut line)).await;
    if !matches!(got, Ok(Ok(_))) || line.trim() != COMMITTED {
        tracing::warn!("backup streamed but the client did not confirm it; not recorded");
        return Ok(());
    }
    let resp = match cx.engine.record_backup(stats.created_ms).await {
        Ok(()) => {
            tracing::info!(entries = stats.entries, bytes = stats.bytes, "backup taken");
            AdminResponse::Done {
                message: "recorded".into(),
            }
        }
        Err(e) => AdminResponse::Error {
            message: format!("the backup is complete but its time could not be recorded: {e}"),
        },
    };
    sink.end(&resp).await
}

/// What a backup client receives.
pub enum Frame {
    Data(Vec<u8>),
    Progress { done: u64, total: u64 },
    End(Box<AdminResponse>),
}

/// The client side of a backup over the admin socket.
pub struct BackupClient {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    socket: std::path::PathBuf,
}

impl BackupClient {
    /// Connects and sends the request.
    ///
    /// # Errors
    /// No server answers on `socket`.
    pub async fn start(
        socket: &Path,
        recipient: &str,
        identity_file: FileBytes,
        rotation_files: Vec<(String, FileBytes)>,
    ) -> Result<BackupClient> {
        let stream = crate::front::admin::connect(socket).await?;
        let (read, mut write) = stream.into_split();
        let req = AdminRequest::Backup {
            recipient: recipient.to_string(),
            identity_file,
            rotation_files,
        };
        let mut line =
            Zeroizing::new(serde_json::to_vec(&req).map_err(|e| Error::Internal(e.to_string()))?);
        line.push(b'\n');
        write.write_all(&line).await?;
        Ok(BackupClient {
            read: BufReader::new(read),
            write,
            socket: socket.to_path_buf(),
        })
    }

    /// The next frame.
    ///
    /// # Errors
    /// The connection ended early or sent something that is not a frame.
    pub async fn next(&mut self) -> Result<Frame> {
        let cut = || Error::Internal("the server ended the backup stream early".into());
        let mut head = [0u8; 5];
        // The server sends data or progress well within the answer timeout; silence
        // longer than that is a stopped or stuck server.
        let socket = self.socket.clone();
        crate::front::admin::within_answer_timeout(&socket, async {
            self.read.read_exact(&mut head).await.map_err(|_| cut())
        })
        .await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(Error::Internal("bad backup frame".into()));
        }
        let mut body = vec![0u8; len];
        self.read.read_exact(&mut body).await.map_err(|_| cut())?;
        match head[0] {
            b'D' => Ok(Frame::Data(body)),
            b'P' if len == 16 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&body[..8]);
                let mut b = [0u8; 8];
                b.copy_from_slice(&body[8..]);
                Ok(Frame::Progress {
                    done: u64::from_be_bytes(a),
                    total: u64::from_be_bytes(b),
                })
            }
            b'E' => serde_json::from_slice(&body)
                .map(|r| Frame::End(Box::new(r)))
                .map_err(|e| Error::Internal(format!("bad admin answer: {e}"))),
            _ => Err(Error::Internal("bad backup frame".into())),
        }
    }

    /// Confirms the file is durable; the server records the backup and answers.
    ///
    /// # Errors
    /// The connection ended before the answer.
    pub async fn commit(mut self) -> Result<AdminResponse> {
        self.write
            .write_all(format!("{COMMITTED}\n").as_bytes())
            .await?;
        match self.next().await? {
            Frame::End(resp) => Ok(*resp),
            _ => Err(Error::Internal("bad backup frame".into())),
        }
    }
}
