//! Reading a CRI log file for /containerLogs, as upstream's kuberuntime/logs.ReadLogs
//! reads it: start at the last `tailLines` lines, skip entries older than `since`,
//! write each entry's content (P entries without a newline, so the container's long
//! lines come out whole), prefix the first piece of each line with its timestamp when
//! asked, stop at `limitBytes`. When following, keep reading as the file grows, reopen
//! the path when the runtime rotates the file, and end once the container is no longer
//! running and the file is drained.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gantry_cri::container_log::{parse_line, Stream};
use time::{OffsetDateTime, UtcOffset};
use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use super::log_options::StreamFilter;

/// How often a follower looks for new bytes once it has read everything.
const POLL: Duration = Duration::from_millis(200);
/// How often a follower asks the runtime whether the container still runs (upstream's
/// logForceCheckPeriod).
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// Output is sent in chunks of about this size.
const CHUNK: usize = 32 * 1024;
/// Block size of the backwards scan for tailLines.
const TAIL_BLOCK: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    #[error("failed to open log file {path:?}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to tail {lines} lines of log file {path:?}: {source}")]
    Tail {
        path: PathBuf,
        lines: i64,
        source: std::io::Error,
    },
    #[error("failed to read log file {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to render, decoded from the request (see log_options).
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since: Option<OffsetDateTime>,
    pub timestamps: bool,
    pub follow: bool,
    pub stream: StreamFilter,
}

/// An open log file positioned where reading starts. Opening is separate from
/// streaming so a missing file is an error status, not an empty 200.
pub struct LogFile {
    path: PathBuf,
    file: File,
    pos: u64,
    inode: u64,
}

impl LogFile {
    pub async fn open(path: &Path, tail_lines: Option<i64>) -> Result<LogFile, LogReadError> {
        // Symlinks resolved first, as upstream does before it watches the file.
        let path = tokio::fs::canonicalize(path)
            .await
            .map_err(|source| LogReadError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let open_err = |source| LogReadError::Open {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).await.map_err(open_err)?;
        let inode = file.metadata().await.map_err(open_err)?.ino();
        let pos = match tail_lines {
            Some(n) => tail_start(&mut file, n)
                .await
                .map_err(|source| LogReadError::Tail {
                    path: path.clone(),
                    lines: n,
                    source,
                })?,
            None => 0,
        };
        file.seek(std::io::SeekFrom::Start(pos))
            .await
            .map_err(|source| LogReadError::Read {
                path: path.clone(),
                source,
            })?;
        Ok(LogFile {
            path,
            file,
            pos,
            inode,
        })
    }

    /// Renders the file into `out` until it is done: EOF (not following), the byte
    /// limit, the receiver going away, or (following) the container stopping.
    /// `running` says whether the container still runs.
    pub async fn stream<F, Fut>(
        self,
        opts: &ReadOptions,
        mut running: F,
        out: mpsc::Sender<Bytes>,
    ) -> Result<(), LogReadError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let LogFile {
            path,
            file,
            mut pos,
            mut inode,
        } = self;
        let read_err = |source| LogReadError::Read {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(file);
        let mut render = Renderer::new(opts);
        // Upstream counts lines only when not following: tailLines then bounds the
        // output; a follower starts at the tail and goes on.
        let mut lines_left = opts.tail_lines.filter(|_| !opts.follow);
        let mut line = Vec::new();
        let mut running_now = true;
        let mut last_check: Option<Instant> = None;
        loop {
            if lines_left == Some(0) {
                break;
            }
            let n = reader
                .read_until(b'\n', &mut line)
                .await
                .map_err(read_err)?;
            pos += n as u64;
            if line.ends_with(b"\n") {
                let flow = render.push(&line);
                line.clear();
                if flow == Flow::Limit {
                    break;
                }
                if flow == Flow::Rendered {
                    if let Some(left) = lines_left.as_mut() {
                        *left -= 1;
                    }
                }
                if render.out.len() >= CHUNK && !send(&out, &mut render.out).await {
                    return Ok(());
                }
                continue;
            }
            // End of what has been written so far.
            if !opts.follow {
                // An incomplete last line is still written, as upstream does.
                if !line.is_empty() {
                    render.push(&line);
                }
                break;
            }
            if !send(&out, &mut render.out).await {
                return Ok(());
            }
            if !running_now {
                // The container had stopped and everything since has been read.
                return Ok(());
            }
            // Rotation: the runtime renamed the file and reopened a new one at the
            // path (ReopenContainerLog), or truncated it in place. Checked at EOF: a
            // new file exists only once the runtime has reopened, after which nothing
            // more is written to the old one, so the old one is drained.
            if let Ok(meta) = tokio::fs::metadata(&path).await {
                if meta.ino() != inode || meta.len() < pos {
                    let file = File::open(&path).await.map_err(read_err)?;
                    inode = meta.ino();
                    pos = 0;
                    if !line.is_empty() {
                        tracing::debug!(path = %path.display(), "log file rotated in the middle of an entry; dropping its start");
                        line.clear();
                    }
                    reader = BufReader::new(file);
                    continue;
                }
            }
            if last_check.is_none_or(|t| t.elapsed() >= STATUS_PERIOD) {
                last_check = Some(Instant::now());
                if !running().await {
                    // Read once more: the last lines may have landed after our EOF.
                    running_now = false;
                    continue;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = out.closed() => return Ok(()),
            }
        }
        send(&out, &mut render.out).await;
        Ok(())
    }
}

/// Sends the buffered output; false when the receiver is gone.
async fn send(out: &mpsc::Sender<Bytes>, buf: &mut Vec<u8>) -> bool {
    if buf.is_empty() {
        return !out.is_closed();
    }
    out.send(Bytes::from(std::mem::take(buf))).await.is_ok()
}

/// Upstream's FindTailLineStartIndex: the offset of the start of the last `n` lines,
/// counting newlines from the end (an unterminated last line is not counted).
async fn tail_start(file: &mut File, n: i64) -> std::io::Result<u64> {
    let Ok(n) = u64::try_from(n) else {
        return Ok(0);
    };
    let size = file.seek(std::io::SeekFrom::End(0)).await?;
    let mut count = 0u64;
    let mut right = size;
    while right > 0 {
        let left = right.saturating_sub(TAIL_BLOCK);
        let mut buf = vec![0u8; (right - left) as usize];
        file.seek(std::io::SeekFrom::Start(left)).await?;
        file.read_exact(&mut buf).await?;
        // Walk this block backwards: the (n+1)-th newline from the end ends the line
        // before the tail.
        for (i, b) in buf.iter().enumerate().rev() {
            if *b == b'\n' {
                count += 1;
                if count > n {
                    return Ok(left + i as u64 + 1);
                }
            }
        }
        right = left;
    }
    Ok(0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The entry counted (written, or skipped by `since` or the stream filter).
    Rendered,
    /// Not a CRI log line; skipped and not counted, as upstream.
    Unparsable,
    /// limitBytes reached: stop.
    Limit,
}

/// Turns raw log lines into the bytes a client sees.
struct Renderer {
    since: Option<OffsetDateTime>,
    timestamps: bool,
    stream: StreamFilter,
    remain: Option<i64>,
    /// Whether the next entry starts a line (the previous one ended with a newline):
    /// only those get a timestamp, so a line split into P pieces carries one.
    new_line: bool,
    out: Vec<u8>,
}

impl Renderer {
    fn new(opts: &ReadOptions) -> Renderer {
        Renderer {
            since: opts.since,
            timestamps: opts.timestamps,
            stream: opts.stream,
            remain: opts.limit_bytes,
            new_line: true,
            out: Vec::new(),
        }
    }

    fn push(&mut self, raw: &[u8]) -> Flow {
        let entry = match parse_line(raw) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "skipping a line that is not in CRI log format");
                return Flow::Unparsable;
            }
        };
        let ends_line = !entry.partial && raw.ends_with(b"\n");
        // Upstream's isNewLine: the written bytes ended with a newline, or were empty.
        let add_prefix =
            std::mem::replace(&mut self.new_line, ends_line || entry.content.is_empty());
        if self.since.is_some_and(|since| entry.time < since) {
            return Flow::Rendered;
        }
        let wanted = match (self.stream, entry.stream) {
            (StreamFilter::All, _) => true,
            (StreamFilter::Stdout, s) => s == Stream::Stdout,
            (StreamFilter::Stderr, s) => s == Stream::Stderr,
        };
        if !wanted {
            return Flow::Rendered;
        }
        let mut piece = Vec::with_capacity(entry.content.len() + 40);
        if self.timestamps && add_prefix {
            piece.extend_from_slice(format_fixed(entry.time).as_bytes());
            piece.push(b' ');
        }
        piece.extend_from_slice(&entry.content);
        if ends_line {
            piece.push(b'\n');
        }
        if let Some(remain) = self.remain.as_mut() {
            let take = piece.len().min(usize::try_from(*remain).unwrap_or(0));
            self.out.extend_from_slice(&piece[..take]);
            *remain -= take as i64;
            if *remain <= 0 {
                return Flow::Limit;
            }
        } else {
            self.out.extend_from_slice(&piece);
        }
        Flow::Rendered
    }
}

/// Go's RFC3339NanoFixed (`2006-01-02T15:04:05.000000000Z07:00`), upstream's format for
/// the timestamps it prefixes: always nine fraction digits, `Z` for UTC.
pub fn format_fixed(t: OffsetDateTime) -> String {
    let date = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    );
    let off = t.offset();
    if off == UtcOffset::UTC {
        return format!("{date}Z");
    }
    let (h, m, _) = off.as_hms();
    let sign = if off.is_negative() { '-' } else { '+' };
    format!(
        "{date}{sign}{:02}:{:02}",
        h.unsigned_abs(),
        m.unsigned_abs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    const LOG: &str = "\
2024-05-01T10:00:00.000000001Z stdout F one
2024-05-01T10:00:01Z stderr F two
2024-05-01T10:00:02.5Z stdout P thr
2024-05-01T10:00:02.6Z stdout P e
2024-05-01T10:00:02.7Z stdout F e
2024-05-01T10:00:03Z stdout F four
";

    async fn render(content: &str, opts: ReadOptions) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, content).unwrap();
        let file = LogFile::open(&path, opts.tail_lines).await.unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        file.stream(&opts, || async { false }, tx).await.unwrap();
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend_from_slice(&b);
        }
        String::from_utf8(got).unwrap()
    }

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[tokio::test]
    async fn partial_entries_are_joined_into_their_line() {
        let got = render(LOG, ReadOptions::default()).await;
        assert_eq!(got, "one\ntwo\nthree\nfour\n");
    }

    #[tokio::test]
    async fn timestamps_prefix_each_line_once_with_nine_digits() {
        let got = render(
            LOG,
            ReadOptions {
                timestamps: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            got,
            "2024-05-01T10:00:00.000000001Z one\n\
             2024-05-01T10:00:01.000000000Z two\n\
             2024-05-01T10:00:02.500000000Z three\n\
             2024-05-01T10:00:03.000000000Z four\n"
        );
    }

    #[tokio::test]
    async fn tail_counts_file_lines_from_the_end() {
        let tail = |n| ReadOptions {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(render(LOG, tail(1)).await, "four\n");
        assert_eq!(render(LOG, tail(2)).await, "e\nfour\n");
        assert_eq!(render(LOG, tail(0)).await, "");
        assert_eq!(render(LOG, tail(100)).await, "one\ntwo\nthree\nfour\n");
        // Longer than one scan block.
        let long: String = (0..2000)
            .map(|i| format!("2024-05-01T10:00:00Z stdout F line {i}\n"))
            .collect();
        assert_eq!(render(&long, tail(2)).await, "line 1998\nline 1999\n");
    }

    #[tokio::test]
    async fn since_skips_older_entries() {
        let got = render(
            LOG,
            ReadOptions {
                since: Some(t("2024-05-01T10:00:01Z")),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, "two\nthree\nfour\n");
    }

    #[tokio::test]
    async fn limit_bytes_cuts_the_output() {
        let got = render(
            LOG,
            ReadOptions {
                limit_bytes: Some(6),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, "one\ntw");
    }

    #[tokio::test]
    async fn a_stream_filter_keeps_one_stream() {
        let got = render(
            LOG,
            ReadOptions {
                stream: StreamFilter::Stderr,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, "two\n");
    }

    #[tokio::test]
    async fn lines_that_are_not_cri_entries_are_skipped() {
        let got = render(
            "garbage\n2024-05-01T10:00:00Z stdout F ok\n",
            ReadOptions::default(),
        )
        .await;
        assert_eq!(got, "ok\n");
    }

    #[test]
    fn fixed_format_keeps_offsets() {
        assert_eq!(
            format_fixed(t("2024-05-01T10:00:00+02:00")),
            "2024-05-01T10:00:00.000000000+02:00"
        );
    }

    #[tokio::test]
    async fn follow_reads_growth_and_rotation_and_ends_when_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2024-05-01T10:00:00Z stdout F a\n").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let opts = ReadOptions {
            follow: true,
            ..Default::default()
        };
        let file = LogFile::open(&path, None).await.unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let flag = running.clone();
        let task = tokio::spawn(async move {
            file.stream(
                &opts,
                move || {
                    let r = flag.load(Ordering::SeqCst);
                    async move { r }
                },
                tx,
            )
            .await
        });
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"a\n"));
        // Growth, including an entry written in two pieces.
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .unwrap();
        f.write_all(b"2024-05-01T10:00:01Z stdout F b\n2024-05-01T10:00:02Z std")
            .await
            .unwrap();
        f.flush().await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"b\n"));
        f.write_all(b"out F c\n").await.unwrap();
        f.flush().await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"c\n"));
        // Rotation: renamed away, a new file at the path.
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "2024-05-01T10:00:03Z stdout F d\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"d\n"));
        // The container exits after a last line: it is delivered, then the stream ends.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, b"2024-05-01T10:00:04Z stdout F e\n")
            })
            .unwrap();
        running.store(false, Ordering::SeqCst);
        let mut rest = Vec::new();
        while let Some(b) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
        {
            rest.extend_from_slice(&b);
        }
        assert_eq!(rest, b"e\n");
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_missing_file_is_an_open_error() {
        let err = LogFile::open(Path::new("/nonexistent/0.log"), None)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("failed to open log file"), "{err}");
    }
}
