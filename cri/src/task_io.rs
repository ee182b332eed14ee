//! A container's stdio: FIFOs that containerd's shim writes (and reads, for stdin),
//! copied into the CRI log file and shared with attach sessions.
//!
//! The FIFOs live in the volatile state directory, so after a restart of Gantry the
//! shim still holds their other ends and the copy resumes where it stopped; nothing the
//! container wrote in between is lost (it waited in the pipe).

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::broadcast;

use crate::error::{CriError, Result};

/// Paths of one process's FIFOs; empty strings for streams it does not have, as
/// containerd's task API takes them.
#[derive(Clone, Debug, Default)]
pub struct FifoSet {
    pub dir: PathBuf,
    pub stdin: Option<PathBuf>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
}

impl FifoSet {
    /// The FIFO paths for a process in `dir` (nothing is created).
    pub fn paths(dir: &Path, stdin: bool, stdout: bool, stderr: bool) -> FifoSet {
        FifoSet {
            dir: dir.to_path_buf(),
            stdin: stdin.then(|| dir.join("stdin")),
            stdout: stdout.then(|| dir.join("stdout")),
            stderr: stderr.then(|| dir.join("stderr")),
        }
    }

    /// Creates the directory and the FIFOs that do not exist yet.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            CriError::Internal(format!("create fifo directory {}: {e}", self.dir.display()))
        })?;
        for p in [&self.stdin, &self.stdout, &self.stderr]
            .into_iter()
            .flatten()
        {
            if p.exists() {
                continue;
            }
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| CriError::Internal(format!("fifo path {} has a NUL", p.display())))?;
            // SAFETY: c is a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                let e = io::Error::last_os_error();
                return Err(CriError::Internal(format!("mkfifo {}: {e}", p.display())));
            }
        }
        Ok(())
    }

    pub fn arg(p: &Option<PathBuf>) -> String {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Opens the read end of a FIFO once a writer has it open (the shim, when it creates
/// the process). The open blocks in a thread; `unblock_reader` ends the wait when the
/// process is never created.
pub async fn open_reader(path: &Path) -> Result<pipe::Receiver> {
    let p = path.to_path_buf();
    let file = tokio::task::spawn_blocking(move || std::fs::File::open(&p))
        .await
        .map_err(|e| CriError::Internal(format!("open fifo {}: {e}", path.display())))?
        .map_err(|e| CriError::Internal(format!("open fifo {}: {e}", path.display())))?;
    pipe::Receiver::from_file(file)
        .map_err(|e| CriError::Internal(format!("open fifo {}: {e}", path.display())))
}

/// Opens the write end of a FIFO (stdin) once the shim has the read end open.
pub async fn open_writer(path: &Path) -> Result<pipe::Sender> {
    let p = path.to_path_buf();
    let file =
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(&p))
            .await
            .map_err(|e| CriError::Internal(format!("open fifo {}: {e}", path.display())))?
            .map_err(|e| CriError::Internal(format!("open fifo {}: {e}", path.display())))?;
    pipe::Sender::from_file(file)
        .map_err(|e| CriError::Internal(format!("open fifo {}: {e}", path.display())))
}

/// Releases a thread blocked in `open_reader` on `path` when no writer will come: it
/// opens the write end for a moment (non-blocking, so it fails harmlessly when nobody
/// waits).
pub fn unblock_reader(path: &Path) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

/// Releases a thread blocked in `open_writer`.
pub fn unblock_writer(path: &Path) {
    let _ = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

/// Ends an `open_reader`/`open_writer` sequence (`opener`) that will never see the
/// shim, because the process was not created: it unblocks every FIFO, again and again,
/// until the opener has returned (each open only unblocks while someone waits on it).
pub async fn abandon_open<T>(fifos: &FifoSet, opener: tokio::task::JoinHandle<T>) {
    let mut opener = std::pin::pin!(opener);
    for _ in 0..500 {
        for p in [&fifos.stdout, &fifos.stderr].into_iter().flatten() {
            unblock_reader(p);
        }
        if let Some(p) = &fifos.stdin {
            unblock_writer(p);
        }
        if tokio::time::timeout(std::time::Duration::from_millis(10), &mut opener)
            .await
            .is_ok()
        {
            return;
        }
    }
    tracing::warn!(dir = %fifos.dir.display(), "FIFO opens did not end; a thread stays blocked");
}

/// Output of a running container: the log copy consumes it, attach sessions subscribe.
pub struct ContainerIo {
    pub stdout: broadcast::Sender<Bytes>,
    pub stderr: broadcast::Sender<Bytes>,
    /// The write end of stdin, when the container was created with stdin.
    pub stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    pub stdin_once: bool,
    pub tty: bool,
    pub fifos: FifoSet,
    /// Set when the container's exit is recorded: attach sessions end then.
    pub exited: tokio::sync::watch::Sender<bool>,
    log: Mutex<Option<crate::container_log::ContainerLog>>,
}

impl ContainerIo {
    pub fn new(fifos: FifoSet, tty: bool, stdin_once: bool) -> Arc<Self> {
        Arc::new(ContainerIo {
            stdout: broadcast::channel(ATTACH_BACKLOG).0,
            stderr: broadcast::channel(ATTACH_BACKLOG).0,
            stdin: tokio::sync::Mutex::new(None),
            stdin_once,
            tty,
            fifos,
            exited: tokio::sync::watch::channel(false).0,
            log: Mutex::new(None),
        })
    }

    /// Starts copying: each output FIFO is teed to its broadcast channel and into the
    /// CRI log file at `log_path` (none when the caller gave no log path).
    pub async fn start(self: &Arc<Self>, log_path: Option<PathBuf>) -> Result<()> {
        let stdout = match &self.fifos.stdout {
            Some(p) => Some(tee(open_reader(p).await?, self.stdout.clone())),
            None => None,
        };
        let stderr = match &self.fifos.stderr {
            Some(p) => Some(tee(open_reader(p).await?, self.stderr.clone())),
            None => None,
        };
        if let Some(p) = &self.fifos.stdin {
            *self.stdin.lock().await = Some(open_writer(p).await?);
        }
        let log = match log_path {
            Some(path) => Some(crate::container_log::ContainerLog::start(
                path, stdout, stderr,
            )?),
            None => {
                // Nobody keeps the output: drain it so the container never blocks.
                for r in [stdout, stderr].into_iter().flatten() {
                    tokio::spawn(drain(r));
                }
                None
            }
        };
        *self.log.lock().unwrap_or_else(|e| e.into_inner()) = log;
        Ok(())
    }

    /// ReopenContainerLog.
    pub async fn reopen_log(&self) -> Result<()> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match log {
            Some(l) => l.reopen().await,
            None => Err(CriError::FailedPrecondition(
                "the container has no log file to reopen".to_string(),
            )),
        }
    }

    /// Resolves when the output is fully copied (the process exited and the shim
    /// closed its ends).
    pub async fn wait_copied(&self) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(l) = log {
            l.wait().await;
        }
    }

    /// Copies `input` into the container's stdin; with stdin_once, stdin closes after.
    pub async fn feed_stdin(&self, mut input: impl AsyncRead + Unpin) -> io::Result<()> {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let mut guard = self.stdin.lock().await;
            let Some(w) = guard.as_mut() else {
                return Ok(());
            };
            w.write_all(&buf[..n]).await?;
        }
        if self.stdin_once {
            self.stdin.lock().await.take();
        }
        Ok(())
    }
}

/// The most a single read of a container's output takes.
const TEE_CHUNK: usize = 32 << 10;

/// Chunks an attach session may fall behind by before it skips ahead.
const ATTACH_BACKLOG: usize = 16;

/// Copies `src` into a pipe whose read end is returned, sending each chunk to `tx` too.
fn tee(src: pipe::Receiver, tx: broadcast::Sender<Bytes>) -> tokio::io::DuplexStream {
    let (mut w, r) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        let mut log_open = true;
        loop {
            if src.readable().await.is_err() {
                break;
            }
            // The read buffer lives only between readiness and the copy: an idle
            // container's output holds no buffer while it waits.
            let chunk = {
                let mut buf = [0u8; TEE_CHUNK];
                match src.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Bytes::copy_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => break,
                }
            };
            let _ = tx.send(chunk.clone());
            if log_open && w.write_all(&chunk).await.is_err() {
                log_open = false;
            }
        }
        let _ = w.shutdown().await;
    });
    r
}

async fn drain(mut r: impl AsyncRead + Unpin) {
    let mut buf = vec![0u8; 32 << 10];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Copies broadcast output to an attach client until the stream ends or the client goes.
pub async fn forward(
    mut rx: broadcast::Receiver<Bytes>,
    mut out: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    loop {
        match rx.recv().await {
            Ok(chunk) => out.write_all(&chunk).await?,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return out.flush().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fifo_output_reaches_subscribers_and_the_reader() {
        let dir = std::env::temp_dir().join(format!("gantry-taskio-{}", std::process::id()));
        let fifos = FifoSet::paths(&dir, false, true, false);
        fifos.create().unwrap();
        let path = fifos.stdout.clone().unwrap();
        let tx = broadcast::channel(8).0;
        let mut rx = tx.subscribe();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all(b"hello\n").unwrap();
        });
        let mut r = tee(
            open_reader(fifos.stdout.as_ref().unwrap()).await.unwrap(),
            tx,
        );
        writer.join().unwrap();
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello\n");
        assert_eq!(&rx.recv().await.unwrap()[..], b"hello\n");
        fifos.remove();
        assert!(!dir.exists());
    }
}
