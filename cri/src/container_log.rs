//! CRI container log files: a container's stdout and stderr, copied into the file the
//! kubelet names in `ContainerConfig.log_path`, one entry per line in the CRI format
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n`.
//!
//! The rules follow containerd's CRI logger (pkg/cri/io/logger.go) so the kubelet's
//! reader (pkg/kubelet/kuberuntime/logs) reproduces the container's output exactly:
//! - a line ends at `\n`; a trailing `\r\n` is dropped as a whole, a lone `\r` is content;
//! - a line longer than the limit (16 KiB, containerd's `max_container_log_line_size`)
//!   becomes entries of exactly the limit tagged `P`, then the rest tagged `F`;
//! - bytes left without a newline at EOF are written tagged `P`: the kubelet appends a
//!   newline only after `F` entries, so the output ends exactly as the container's did.
//!
//! Each stream is read by its own task that only emits whole entries; one writer task
//! owns the file and writes every entry with a single write, so the two streams
//! interleave at entry granularity and a rotation (`reopen`) falls between entries.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{CriError, Result};

/// containerd's default `max_container_log_line_size`: longer lines are split.
pub const DEFAULT_MAX_LINE_SIZE: usize = 16 * 1024;

/// Permissions of a new log file, as containerd creates them.
const LOG_FILE_MODE: u32 = 0o640;
/// Bytes asked of a stream per read.
const READ_CHUNK: usize = 32 * 1024;
/// The read room of a stream with nothing pending. Most containers are quiet most of
/// the time, so it is small (two streams per container, all of them idle-waiting); a
/// read that fills it asks for a whole chunk next.
const IDLE_READ: usize = 512;
/// Entries queued between the stream readers and the writer: a container that writes
/// faster than the disk is slowed down instead of growing our memory.
const QUEUE_ENTRIES: usize = 256;
/// The writer coalesces queued entries into one write of at most this size.
const MAX_BATCH: usize = 256 * 1024;

/// Which of the container's output streams an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed line of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub time: OffsetDateTime,
    pub stream: Stream,
    /// `P`: the container's line continues in the next entry of the same stream (or the
    /// stream ended without a newline). A reader appends `\n` only to full entries.
    pub partial: bool,
    /// The content, without the entry's terminating newline.
    pub content: Vec<u8>,
}

/// Parses one line of a CRI log file (with or without its trailing `\n`), as the kubelet
/// does: the timestamp may carry any offset, the tag field may hold further
/// `:`-separated tags after the first (kept forward compatible), and only a first tag
/// of `P` marks a partial entry. Takes `&str` or bytes: container output need not be
/// UTF-8.
pub fn parse_line(line: impl AsRef<[u8]>) -> Result<LogEntry> {
    let raw = line.as_ref();
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    let bad = |why: &str| {
        CriError::InvalidArgument(format!(
            "parse CRI log line {:?}: {why}",
            String::from_utf8_lossy(&raw[..raw.len().min(128)])
        ))
    };
    let (ts, rest) = split_field(line).ok_or_else(|| bad("timestamp is not found"))?;
    let ts = std::str::from_utf8(ts).map_err(|_| bad("timestamp is not UTF-8"))?;
    let time = OffsetDateTime::parse(ts, &Rfc3339)
        .map_err(|e| bad(&format!("timestamp {ts:?} is not RFC 3339: {e}")))?;
    let (stream, rest) = split_field(rest).ok_or_else(|| bad("stream type is not found"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => {
            return Err(bad(&format!(
                "unexpected stream type {:?}",
                String::from_utf8_lossy(other)
            )))
        }
    };
    let (tags, content) = split_field(rest).ok_or_else(|| bad("log tag is not found"))?;
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    let content = content.to_vec();
    Ok(LogEntry {
        time,
        stream,
        partial,
        content,
    })
}

/// Splits at the first space: the field before it and everything after it.
fn split_field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|b| *b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

/// Formats as Go's `time.RFC3339Nano` in UTC: nanoseconds with trailing zeros trimmed,
/// and no fraction at all on a whole second. containerd stamps entries this way and
/// tools that compare log files byte for byte expect it.
pub fn format_rfc3339_nano(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// A piece of a container's line ready to become one log entry.
#[derive(Debug, PartialEq, Eq)]
struct Piece {
    partial: bool,
    content: Vec<u8>,
}

impl Piece {
    fn new(partial: bool, content: &[u8]) -> Self {
        let content = content.to_vec();
        Piece { partial, content }
    }
}

/// Takes every entry that `pending` already determines, leaving the bytes that must
/// wait for more input. At `eof` everything is taken. The limit applies as containerd
/// applies it: a piece is cut only once more than `max` bytes of one line are known, and
/// a `\r` at the very end is held back because it may be half of a `\r\n`.
fn take_pieces(pending: &mut Vec<u8>, max: usize, eof: bool, out: &mut Vec<Piece>) {
    let mut start = 0;
    while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
        let mut line = &pending[start..start + nl];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        while line.len() > max {
            out.push(Piece::new(true, &line[..max]));
            line = &line[max..];
        }
        out.push(Piece::new(false, line));
        start += nl + 1;
    }
    let rest = &pending[start..];
    let held = usize::from(!eof && rest.ends_with(b"\r"));
    let mut cut = 0;
    while rest.len() - held - cut > max {
        out.push(Piece::new(true, &rest[cut..cut + max]));
        cut += max;
    }
    if eof && cut < rest.len() {
        out.push(Piece::new(true, &rest[cut..]));
        cut = rest.len();
    }
    pending.drain(..start + cut);
}

/// Appends the CRI bytes of one entry, stamped now. Stamping when the entry is written,
/// as containerd does, keeps the timestamps in file order across the two streams.
fn encode(stream: Stream, piece: &Piece, out: &mut Vec<u8>) {
    let now = format_rfc3339_nano(OffsetDateTime::now_utc());
    let tag = if piece.partial { 'P' } else { 'F' };
    out.extend_from_slice(format!("{now} {} {tag} ", stream.as_str()).as_bytes());
    out.extend_from_slice(&piece.content);
    out.push(b'\n');
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;

enum Msg {
    Entry(Stream, Piece),
    Reopen(oneshot::Sender<Result<()>>),
}

struct Inner {
    path: PathBuf,
    /// Weak so that the queue closes, and the writer finishes, once both readers end.
    queue: mpsc::WeakSender<Msg>,
    done: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

/// The copy of one container's output into its CRI log file. Cheap to clone; the
/// copying runs on its own tasks until both streams reach EOF (or `stop` is called),
/// whether or not a handle is kept.
#[derive(Clone)]
pub struct ContainerLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ContainerLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerLog")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl ContainerLog {
    /// Opens (creates, appends, mode 0640; the parent directory must exist) `path` and
    /// starts copying the given streams into it; returns at once. A stream that is
    /// `None` (stderr of a TTY container) is simply absent: pass `None::<tokio::fs::File>`.
    /// Must be called inside a tokio runtime. A FIFO's read end must be opened while a
    /// writer holds it (the shim, once the task exists): without one a read is EOF.
    pub fn start(
        path: PathBuf,
        stdout: Option<impl AsyncRead + Send + Unpin + 'static>,
        stderr: Option<impl AsyncRead + Send + Unpin + 'static>,
    ) -> Result<Self> {
        Self::start_with_max_line(path, stdout, stderr, DEFAULT_MAX_LINE_SIZE)
    }

    /// [`ContainerLog::start`] with a line limit other than containerd's default
    /// (`max_container_log_line_size`); `max_line` is at least 1.
    pub fn start_with_max_line(
        path: PathBuf,
        stdout: Option<impl AsyncRead + Send + Unpin + 'static>,
        stderr: Option<impl AsyncRead + Send + Unpin + 'static>,
        max_line: usize,
    ) -> Result<Self> {
        let no_runtime = |_| {
            let at = path.display();
            CriError::Internal(format!("start container log {at}: no tokio runtime"))
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(no_runtime)?;
        let file = tokio::fs::File::from_std(
            log_file_options()
                .open(&path)
                .map_err(|e| open_error(&path, e))?,
        );
        let (tx, rx) = mpsc::channel(QUEUE_ENTRIES);
        let (done_tx, done) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let stdout = stdout.map(|r| Box::new(r) as Reader);
        let stderr = stderr.map(|r| Box::new(r) as Reader);
        for (reader, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
            if let Some(r) = reader {
                let copy = copy_stream(r, stream, max_line.max(1), tx.clone(), stop_rx.clone());
                runtime.spawn(copy);
            }
        }
        let queue = tx.downgrade();
        drop(tx);
        runtime.spawn(write_entries(path.clone(), file, rx, done_tx));
        let inner = Inner {
            path,
            queue,
            done,
            stop,
        };
        Ok(ContainerLog {
            inner: Arc::new(inner),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// ReopenContainerLog: after the kubelet renamed the file for rotation, opens a fresh
    /// file at the same path; every entry written before this returns went to the old
    /// file (flushed and closed), later ones go to the new file, and no entry is split
    /// between them. If the new file cannot be opened the old one stays in use.
    pub async fn reopen(&self) -> Result<()> {
        let stopped = || {
            CriError::FailedPrecondition(format!(
                "reopen container log {}: the container's output has ended",
                self.inner.path.display()
            ))
        };
        let queue = self.inner.queue.upgrade().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(Msg::Reopen(reply))
            .await
            .map_err(|_| stopped())?;
        drop(queue);
        answer.await.map_err(|_| stopped())?
    }

    /// Resolves when both streams reached EOF and every entry is written to the file.
    pub async fn wait(&self) {
        let mut done = self.inner.done.clone();
        // An error means the writer is gone, which is also the end.
        let _ = done.wait_for(|d| *d).await;
    }

    /// Stops reading the streams (the agent shuts down, or the container is removed while
    /// something still holds its pipes): bytes already read are written, an unfinished
    /// line as a `P` entry, then `wait` resolves.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }
}

/// How containerd opens a log file: created if missing, appended to, mode 0640.
fn log_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true).mode(LOG_FILE_MODE);
    options
}

fn open_error(path: &Path, e: std::io::Error) -> CriError {
    let msg = format!("open container log {}: {e}", path.display());
    if e.kind() == std::io::ErrorKind::NotFound {
        CriError::NotFound(msg)
    } else {
        CriError::Internal(msg)
    }
}

/// Reads one stream until EOF, a read error or `stop`, and queues its entries.
async fn copy_stream(
    mut reader: Reader,
    stream: Stream,
    max_line: usize,
    queue: mpsc::Sender<Msg>,
    mut stop: watch::Receiver<bool>,
) {
    // Read straight into what is pending; an idle stream keeps only a small buffer.
    let mut pending = Vec::new();
    let mut pieces = Vec::new();
    let mut busy = false;
    loop {
        let want = if busy { READ_CHUNK } else { IDLE_READ };
        if pending.capacity() - pending.len() < want {
            pending.reserve(want);
        }
        let room = pending.capacity() - pending.len();
        let read = tokio::select! {
            r = reader.read_buf(&mut pending) => r,
            _ = async {
                // Every handle gone is not a stop: the copy goes on until EOF.
                if stop.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => Ok(0),
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                // As containerd: a broken stream ends the copy, what was read is kept.
                tracing::warn!(stream = stream.as_str(), error = %e, "read container output");
                0
            }
        };
        // A read that filled the room asks for a whole chunk next time.
        busy = n >= room;
        take_pieces(&mut pending, max_line, n == 0, &mut pieces);
        if pending.is_empty() && !busy && pending.capacity() > IDLE_READ {
            pending = Vec::new();
        }
        for piece in pieces.drain(..) {
            if queue.send(Msg::Entry(stream, piece)).await.is_err() {
                return;
            }
        }
        if n == 0 {
            return;
        }
    }
}

/// Owns the file: writes queued entries in order, coalescing what is queued into one
/// write, and switches files between entries on reopen.
async fn write_entries(
    path: PathBuf,
    mut file: tokio::fs::File,
    mut queue: mpsc::Receiver<Msg>,
    done: watch::Sender<bool>,
) {
    let mut failing = false;
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut reopen = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Entry(stream, piece) => encode(stream, &piece, &mut batch),
                Msg::Reopen(reply) => {
                    reopen = Some(reply);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let written = async {
                file.write_all(&batch).await?;
                file.flush().await
            }
            .await;
            // As containerd: on a write error keep draining the container's output (a
            // full pipe would block the container) and drop the entries; report once per
            // run of failures.
            match written {
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(path = %path.display(), error = %e, "write container log");
                }
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(path = %path.display(), "container log writes recovered");
                }
                _ => {}
            }
            batch.clear();
        }
        if let Some(reply) = reopen {
            let new = tokio::fs::OpenOptions::from(log_file_options())
                .open(&path)
                .await;
            let result = new.map_err(|e| open_error(&path, e)).map(|new| {
                // The old file was flushed after its last batch; dropping closes it.
                file = new;
            });
            let _ = reply.send(result);
        }
    }
    done.send_replace(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{duplex, AsyncWrite, DuplexStream};

    const NO_STREAM: Option<DuplexStream> = None;

    fn entries_of(bytes: &[u8]) -> Vec<LogEntry> {
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let lines = body.split(|b| *b == b'\n').filter(|_| !body.is_empty());
        lines.map(|l| parse_line(l).unwrap()).collect()
    }

    fn read_entries(path: &Path) -> Vec<LogEntry> {
        entries_of(&std::fs::read(path).unwrap())
    }

    /// What the kubelet prints for one stream: content, plus a newline after `F`.
    fn output_of(entries: &[LogEntry], stream: Stream) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries.iter().filter(|e| e.stream == stream) {
            out.extend_from_slice(&e.content);
            out.extend(Some(b'\n').filter(|_| !e.partial));
        }
        out
    }

    fn tags(entries: &[LogEntry]) -> Vec<(Stream, bool, usize)> {
        let tag = |e: &LogEntry| (e.stream, e.partial, e.content.len());
        entries.iter().map(tag).collect()
    }

    async fn finish(log: &ContainerLog) {
        let waited = tokio::time::timeout(Duration::from_secs(10), log.wait()).await;
        waited.expect("container log did not finish");
    }

    async fn write_then_close(mut w: impl AsyncWrite + Unpin, data: &[u8]) {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    }

    /// Runs a container log over two pipes fed with `out` and `err` (written
    /// concurrently, in chunks of a few bytes) and returns the file's entries.
    async fn log_of(out: &[u8], err: &[u8]) -> Vec<LogEntry> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let ((ow, or), (ew, er)) = (duplex(7), duplex(5));
        let log = ContainerLog::start(path.clone(), Some(or), Some(er)).unwrap();
        tokio::join!(write_then_close(ow, out), write_then_close(ew, err));
        finish(&log).await;
        read_entries(&path)
    }

    #[test]
    fn timestamps_are_utc_rfc3339nano_with_trailing_zeros_trimmed_as_go() {
        let at = |s: i64, ns: u32| {
            let t = OffsetDateTime::from_unix_timestamp(s).unwrap();
            t.replace_nanosecond(ns).unwrap()
        };
        let plus_two = UtcOffset::from_hms(2, 0, 0).unwrap();
        for (t, want) in [
            (at(1_700_000_000, 0), "2023-11-14T22:13:20Z"),
            (at(1_700_000_000, 120_000_000), "2023-11-14T22:13:20.12Z"),
            (at(1_700_000_000, 1), "2023-11-14T22:13:20.000000001Z"),
            (
                at(1_700_000_000, 999_999_999),
                "2023-11-14T22:13:20.999999999Z",
            ),
            (at(5, 100), "1970-01-01T00:00:05.0000001Z"),
            (at(0, 0).to_offset(plus_two), "1970-01-01T00:00:00Z"),
        ] {
            assert_eq!(format_rfc3339_nano(t), want);
            assert_eq!(parse_line(format!("{want} stdout F x")).unwrap().time, t);
        }
    }

    #[test]
    fn lines_are_cut_where_containerd_cuts_them() {
        let p = |c: &str| Piece::new(true, c.as_bytes());
        let f = |c: &str| Piece::new(false, c.as_bytes());
        // (input, eof, pieces, bytes left waiting), with a limit of 4 bytes.
        let cases: Vec<(&str, bool, Vec<Piece>, &str)> = vec![
            ("abcd\n", false, vec![f("abcd")], ""),
            ("abcde\n", false, vec![p("abcd"), f("e")], ""),
            ("abcdefgh\n", false, vec![p("abcd"), f("efgh")], ""),
            ("abcd", false, vec![], "abcd"),
            ("abcde", false, vec![p("abcd")], "e"),
            ("\n\nx\n", false, vec![f(""), f(""), f("x")], ""),
            ("ab\r\n", false, vec![f("ab")], ""),
            ("abcd\r\n", false, vec![f("abcd")], ""),
            ("a\rb\n", false, vec![f("a\rb")], ""),
            ("ab\r\r\n", false, vec![f("ab\r")], ""),
            // A trailing \r may be half of \r\n: it does not count towards the limit yet.
            ("abcd\r", false, vec![], "abcd\r"),
            ("abcd\rx", false, vec![p("abcd")], "\rx"),
            ("abc", true, vec![p("abc")], ""),
            ("abcdefghij", true, vec![p("abcd"), p("efgh"), p("ij")], ""),
            ("ab\r", true, vec![p("ab\r")], ""),
            ("x\ny", true, vec![f("x"), p("y")], ""),
            ("", true, vec![], ""),
        ];
        for (input, eof, want, left) in cases {
            let mut pending = input.as_bytes().to_vec();
            let mut got = Vec::new();
            take_pieces(&mut pending, 4, eof, &mut got);
            assert_eq!(got, want, "input {input:?} eof {eof}");
            assert_eq!(pending, left.as_bytes(), "left of {input:?}");
        }
    }

    #[test]
    fn parse_line_reads_what_the_kubelet_reads_and_rejects_the_rest() {
        let e = parse_line("2016-10-06T00:17:09.669794202Z stdout P log content 1\n").unwrap();
        assert_eq!(tags(std::slice::from_ref(&e)), [(Stream::Stdout, true, 13)]);
        assert_eq!(
            (e.content.as_slice(), e.time.nanosecond()),
            (&b"log content 1"[..], 669_794_202)
        );
        let e = parse_line("2016-10-06T02:17:09+02:00 stderr F ").unwrap();
        assert_eq!(tags(std::slice::from_ref(&e)), [(Stream::Stderr, false, 0)]);
        let utc = parse_line("2016-10-06T00:17:09Z stdout F ").unwrap();
        assert_eq!(e.time, utc.time);
        // Further tags after ':' are ignored; only a first tag of P is partial.
        let partial = |l: &str| parse_line(l).unwrap().partial;
        assert!(partial("2016-10-06T00:17:09Z stdout P:x a"));
        assert!(!partial("2016-10-06T00:17:09Z stdout X a"));
        let raw = parse_line(b"2016-10-06T00:17:09Z stdout F \xff\r").unwrap();
        assert_eq!(raw.content, b"\xff\r");
        for bad in [
            "",
            "2016-10-06T00:17:09Z",
            "2016-10-06T00:17:09Z stdout",
            "2016-10-06T00:17:09Z stdout F",
            "2016-10-06T00:17:09Z stdin F x",
            "yesterday stdout F x",
            "{\"log\":\"x\",\"stream\":\"stdout\"}",
        ] {
            let err = parse_line(bad).unwrap_err();
            assert!(
                matches!(err, CriError::InvalidArgument(_)),
                "{bad:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn long_line_is_split_into_partial_entries_at_exactly_the_limit() {
        let max = DEFAULT_MAX_LINE_SIZE;
        let mut out = vec![b'a'; 2 * max + 10];
        out.push(b'\n');
        out.extend(vec![b'b'; max]);
        out.push(b'\n');
        let entries = log_of(&out, b"").await;
        let o = Stream::Stdout;
        assert_eq!(
            tags(&entries),
            [
                (o, true, max),
                (o, true, max),
                (o, false, 10),
                (o, false, max)
            ]
        );
        assert_eq!(output_of(&entries, o), out);
    }

    #[tokio::test]
    async fn stdout_and_stderr_interleave_only_at_line_boundaries() {
        let text = |tag: &str| -> Vec<u8> {
            let line = |i: usize| format!("{tag} line {i} {}\n", "x".repeat(i % 37));
            (0..300).flat_map(|i| line(i).into_bytes()).collect()
        };
        let (out, err) = (text("out"), text("err"));
        let entries = log_of(&out, &err).await;
        assert!(entries.iter().all(|e| !e.partial));
        assert!(
            entries.windows(2).all(|w| w[0].time <= w[1].time),
            "stamped out of order"
        );
        assert_eq!(output_of(&entries, Stream::Stdout), out);
        assert_eq!(output_of(&entries, Stream::Stderr), err);
        let streams: Vec<_> = entries.iter().map(|e| e.stream).collect();
        assert!(
            streams.windows(2).filter(|w| w[0] != w[1]).count() > 1,
            "not interleaved"
        );
    }

    #[tokio::test]
    async fn crlf_ending_is_dropped_as_containerd_and_lone_cr_is_content() {
        let entries = log_of(b"dos\r\nprogress\rdone\n", b"").await;
        let contents: Vec<_> = entries.into_iter().map(|e| e.content).collect();
        assert_eq!(contents, [&b"dos"[..], b"progress\rdone"]);
    }

    #[tokio::test]
    async fn last_line_without_newline_is_a_partial_entry_as_containerd() {
        let entries = log_of(b"", b"one\nno newline").await;
        let e = Stream::Stderr;
        assert_eq!(tags(&entries), [(e, false, 3), (e, true, 10)]);
        assert_eq!(output_of(&entries, e), b"one\nno newline");
    }

    #[tokio::test]
    async fn empty_streams_still_create_the_log_file_mode_0640() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (with, without) = (dir.path().join("0.log"), dir.path().join("1.log"));
        let ((w1, r1), (w2, r2)) = (duplex(8), duplex(8));
        drop((w1, w2));
        finish(&ContainerLog::start(with.clone(), Some(r1), Some(r2)).unwrap()).await;
        finish(&ContainerLog::start(without.clone(), NO_STREAM, NO_STREAM).unwrap()).await;
        for path in [with, without] {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.len(), 0);
            // The umask may only take bits away.
            assert_eq!(meta.permissions().mode() & !0o640 & 0o777, 0);
        }
    }

    #[tokio::test]
    async fn missing_log_directory_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone/0.log");
        let err = ContainerLog::start(path, NO_STREAM, NO_STREAM).unwrap_err();
        assert!(
            err.is_not_found() && err.to_string().contains("gone/0.log"),
            "{err}"
        );
    }

    /// Complete entries in a file being written: a poll may see a write half done.
    fn lines_in(path: &Path) -> usize {
        let bytes = std::fs::read(path).unwrap();
        bytes.iter().filter(|b| **b == b'\n').count()
    }

    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn reopen_after_rename_sends_new_lines_to_the_new_file_and_loses_nothing() {
        use std::os::unix::ffi::OsStrExt;
        use tokio::net::unix::pipe;
        let dir = tempfile::tempdir().unwrap();
        let (path, rotated, fifo) = (
            dir.path().join("0.log"),
            dir.path().join("0.log.1"),
            dir.path().join("out"),
        );
        let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c_fifo` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
        // The read end first, so opening the write end does not fail with ENXIO.
        let rx = pipe::OpenOptions::new().open_receiver(&fifo).unwrap();
        let mut tx = pipe::OpenOptions::new().open_sender(&fifo).unwrap();
        let log = ContainerLog::start(path.clone(), Some(rx), NO_STREAM).unwrap();
        let lines = |tag| {
            (0..100)
                .flat_map(|i| format!("{tag} {i}\n").into_bytes())
                .collect::<Vec<_>>()
        };
        let (before, after) = (lines("before"), lines("after"));
        tx.write_all(&before).await.unwrap();
        tx.write_all(b"half ").await.unwrap();
        eventually("the first lines", || lines_in(&path) == 100).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().await.unwrap();
        tx.write_all(b"line\n").await.unwrap();
        write_then_close(tx, &after).await;
        finish(&log).await;
        assert_eq!(output_of(&read_entries(&rotated), Stream::Stdout), before);
        let want = [&b"half line\n"[..], &after].concat();
        assert_eq!(output_of(&read_entries(&path), Stream::Stdout), want);
        let err = log.reopen().await.unwrap_err();
        assert!(matches!(err, CriError::FailedPrecondition(_)), "{err}");
    }

    #[tokio::test]
    async fn rotations_under_load_keep_every_line_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let ((mut ow, or), (mut ew, er)) = (duplex(4096), duplex(4096));
        let log = ContainerLog::start(path.clone(), Some(or), Some(er)).unwrap();
        let text = |tag: &str| -> Vec<u8> {
            let line = |i: usize| format!("{tag} {i} {}\n", "y".repeat(i % 200));
            (0..5000).flat_map(|i| line(i).into_bytes()).collect()
        };
        let (out, err) = (text("out"), text("err"));
        // The writers pause after each fifth of the text until it is rotated; what is
        // still in the pipes and the queue then meets the rotation.
        let (progress, mut fifths) = mpsc::channel(1);
        let (rotated, mut rotations) = mpsc::channel(1);
        let writers = tokio::spawn({
            let (out, err) = (out.clone(), err.clone());
            let fifth = |t: &[u8], k: usize| t[k * t.len() / 5..(k + 1) * t.len() / 5].to_vec();
            async move {
                for k in 0..5 {
                    let (o, e) = (fifth(&out, k), fifth(&err, k));
                    let (a, b) = tokio::join!(ow.write_all(&o), ew.write_all(&e));
                    a.unwrap();
                    b.unwrap();
                    progress.send(()).await.unwrap();
                    rotations.recv().await.unwrap();
                }
                (ow, ew)
            }
        });
        let mut files = Vec::new();
        for i in 0..5 {
            fifths.recv().await.unwrap();
            files.push(dir.path().join(format!("0.log.{i}")));
            std::fs::rename(&path, &files[i]).unwrap();
            log.reopen().await.unwrap();
            rotated.send(()).await.unwrap();
        }
        drop(writers.await.unwrap());
        finish(&log).await;
        // Each fifth was mostly read before its rotation: every rotated file has entries.
        assert!(files
            .iter()
            .all(|f| std::fs::metadata(f).unwrap().len() > 0));
        files.push(path);
        let all: Vec<u8> = files
            .iter()
            .flat_map(|f| std::fs::read(f).unwrap())
            .collect();
        let entries = entries_of(&all);
        assert_eq!(output_of(&entries, Stream::Stdout), out);
        assert_eq!(output_of(&entries, Stream::Stderr), err);
    }

    #[tokio::test]
    async fn stop_writes_the_unfinished_line_and_ends_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let (mut w, r) = duplex(64);
        let log = ContainerLog::start(path.clone(), Some(r), NO_STREAM).unwrap();
        w.write_all(b"done\n").await.unwrap();
        eventually("the first line", || lines_in(&path) == 1).await;
        w.write_all(b"unfinished").await.unwrap();
        // Time for the reader to take it: stop keeps what was read, not what is pending.
        tokio::time::sleep(Duration::from_millis(50)).await;
        log.stop();
        finish(&log).await;
        let out = output_of(&read_entries(&path), Stream::Stdout);
        assert_eq!(out, b"done\nunfinished");
        drop(w);
    }
}
