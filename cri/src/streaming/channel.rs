//! The plumbing shared by both transports: one logical byte stream of a session (a SPDY
//! stream or a WebSocket channel) seen as an `AsyncRead` fed by the connection's reader
//! task and an `AsyncWrite` that queues frames for the connection's writer task, plus
//! the owner of every task the server spawns.
//!
//! One writer task per connection serialises all frames, so the order in which a
//! session queues them (reply before data, status before close) is the order on the wire.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};
use tokio_util::task::TaskTracker;

use super::spdy;

/// Frames waiting for a connection's writer task.
#[derive(Debug)]
pub enum Out {
    /// Bytes for one stream/channel; `fin` half-closes it (SPDY only; WebSocket has no
    /// per-channel close from the server side).
    Data { stream: u32, data: Bytes, fin: bool },
    /// A SPDY control frame (SYN_REPLY, RST_STREAM, PING reply).
    Control(spdy::Frame),
    /// End the session: finish every stream, say goodbye, close the write side.
    Close,
}

/// Bound of a connection's outgoing queue: writers wait (backpressure) when the socket
/// is slower than the process writing into it.
pub const OUT_QUEUE: usize = 64;
/// Bound of each stream's incoming queue.
pub const IN_QUEUE: usize = 16;
/// Largest chunk one write turns into a frame.
pub const MAX_CHUNK: usize = 32 * 1024;

/// Reads what the client sent on one stream; EOF when the client half-closed or reset
/// it, or the connection ended.
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            pending: Bytes::new(),
        }
    }

    /// A reader for its sender: what the connection's reader task feeds.
    pub fn pair() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(IN_QUEUE);
        (tx, Self::new(rx))
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => self.pending = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// Writes to one stream of a connection by queueing frames for its writer task.
/// `shutdown` half-closes the stream (SPDY FIN). Writes fail with `BrokenPipe` once the
/// client reset the stream or the connection is gone.
pub struct ChannelWriter {
    tx: PollSender<Out>,
    stream: u32,
    /// Set by the reader task when the client reset this stream.
    reset: Arc<AtomicBool>,
    finished: bool,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Out>, stream: u32, reset: Arc<AtomicBool>) -> Self {
        Self {
            tx: PollSender::new(tx),
            stream,
            reset,
            finished: false,
        }
    }

    fn broken(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("stream {} closed by the client", self.stream),
        )
    }
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.finished || self.reset.load(Ordering::Acquire) {
            return Poll::Ready(Err(self.broken()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.broken()));
        }
        let n = buf.len().min(MAX_CHUNK);
        let frame = Out::Data {
            stream: self.stream,
            data: Bytes::copy_from_slice(&buf[..n]),
            fin: false,
        };
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(self.broken()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued frames are the writer task's to flush; nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.finished {
            return Poll::Ready(Ok(()));
        }
        // A gone connection or reset stream is as closed as it gets.
        if ready!(self.tx.poll_reserve(cx)).is_ok() {
            let fin = Out::Data {
                stream: self.stream,
                data: Bytes::new(),
                fin: true,
            };
            let _ = self.tx.send_item(fin);
        }
        self.finished = true;
        Poll::Ready(Ok(()))
    }
}

/// A forwarded port's two directions as one `AsyncRead + AsyncWrite`.
pub struct Duplex {
    pub reader: ChannelReader,
    pub writer: ChannelWriter,
}

impl AsyncRead for Duplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Duplex {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// Owner of every task the streaming server spawns: cancelling stops them all (dropping
/// their futures, which ends backend calls and closes sockets), and the tracker lets
/// shutdown wait for them.
#[derive(Clone, Default)]
pub struct Tasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `fut`, to be dropped when the server shuts down.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Stops every task and waits until they are gone.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reader_yields_chunks_then_eof_when_sender_is_gone() {
        let (tx, mut reader) = ChannelReader::pair();
        tx.send(Bytes::from_static(b"hel")).await.unwrap();
        tx.send(Bytes::from_static(b"lo")).await.unwrap();
        drop(tx);
        let mut s = String::new();
        reader.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello");
    }

    #[tokio::test]
    async fn writer_queues_data_then_fin_and_fails_after_reset() {
        let (tx, mut rx) = mpsc::channel(8);
        let reset = Arc::new(AtomicBool::new(false));
        let mut w = ChannelWriter::new(tx, 5, reset.clone());
        w.write_all(b"abc").await.unwrap();
        w.shutdown().await.unwrap();
        match rx.recv().await.unwrap() {
            Out::Data { stream, data, fin } => {
                assert_eq!((stream, &data[..], fin), (5, &b"abc"[..], false))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rx.recv().await.unwrap(),
            Out::Data { fin: true, .. }
        ));

        let (tx, _rx) = mpsc::channel(8);
        let mut w = ChannelWriter::new(tx, 7, reset.clone());
        reset.store(true, Ordering::Release);
        let err = w.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
