//! The server side of one SPDY/3.1 connection, as Kubernetes clients use it: the client
//! opens every stream (odd ids, SYN_STREAM with a `streamtype` header), the server
//! accepts each at once with SYN_REPLY and hands it to the session logic
//! (remotecommand or port-forward), client PINGs are answered, and closing the session
//! half-closes every stream, sends GOAWAY and then waits briefly for the client to hang
//! up, so the last frames are not lost to a TCP reset.
//!
//! Two tasks per connection: the reader decodes frames and feeds each stream's queue
//! (a slow consumer stalls the connection, as with spdystream, which has no flow
//! control either); the writer owns the socket's write half and encodes what
//! [`ChannelWriter`]s and the reader queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::channel::{ChannelReader, ChannelWriter, Out, Tasks, OUT_QUEUE};
use super::spdy::{self, Frame, FrameDecoder, FrameEncoder, Headers};

/// How long a closed session waits for the client to close the connection.
const LINGER: Duration = Duration::from_secs(5);

/// A stream the client opened, already accepted.
pub struct SpdyStream {
    pub id: u32,
    pub headers: Headers,
    pub reader: ChannelReader,
    pub writer: ChannelWriter,
    out: mpsc::Sender<Out>,
}

impl SpdyStream {
    /// The value of a header the client sent with the stream.
    pub fn header(&self, name: &str) -> Option<&str> {
        spdy::header(&self.headers, name)
    }

    /// A handle that finishes this stream later, whoever holds its writer by then.
    pub fn closer(&self) -> StreamCloser {
        StreamCloser {
            id: self.id,
            out: self.out.clone(),
        }
    }

    /// Refuses the stream (RST_STREAM), for streams with missing or bad headers.
    pub async fn reset(self, status: u32) {
        let rst = Frame::RstStream {
            stream_id: self.id,
            status,
        };
        let _ = self.out.send(Out::Control(rst)).await;
    }
}

/// Finishes (half-closes) one stream; a no-op if it already is.
pub struct StreamCloser {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamCloser {
    pub async fn finish(self) {
        let fin = Out::Data {
            stream: self.id,
            data: Bytes::new(),
            fin: true,
        };
        let _ = self.out.send(fin).await;
    }
}

/// One SPDY connection: new streams come out of [`SpdySession::next_stream`].
pub struct SpdySession {
    streams: mpsc::Receiver<SpdyStream>,
    out: mpsc::Sender<Out>,
    writer_done: Option<oneshot::Receiver<()>>,
}

impl SpdySession {
    /// Starts the reader and writer tasks on an upgraded connection.
    pub fn start<IO>(io: IO, tasks: &Tasks) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let (done_tx, done_rx) = oneshot::channel();
        let closed = CancellationToken::new();
        tasks.spawn(write_loop(wr, out_rx, done_tx, closed.clone()));
        tasks.spawn(read_loop(rd, out_tx.clone(), streams_tx, closed));
        Self {
            streams: streams_rx,
            out: out_tx,
            writer_done: Some(done_rx),
        }
    }

    /// The next stream the client opened; `None` once the connection is gone.
    pub async fn next_stream(&mut self) -> Option<SpdyStream> {
        self.streams.recv().await
    }

    /// Ends the session after everything queued so far: every stream is half-closed,
    /// GOAWAY sent and the write side shut. Returns once the writer is done.
    pub async fn close(&mut self) {
        self.streams.close();
        if self.out.send(Out::Close).await.is_ok() {
            if let Some(done) = self.writer_done.take() {
                let _ = done.await;
            }
        }
    }
}

struct InStream {
    tx: Option<mpsc::Sender<Bytes>>,
    reset: Arc<AtomicBool>,
}

async fn read_loop<R: AsyncRead + Send + Unpin>(
    rd: R,
    out: mpsc::Sender<Out>,
    new_streams: mpsc::Sender<SpdyStream>,
    closed: CancellationToken,
) {
    // Dropped on GOAWAY: the session then sees no more streams and winds down.
    let mut new_streams = Some(new_streams);
    let mut frames = FramedRead::new(rd, FrameDecoder::new());
    let mut streams: HashMap<u32, InStream> = HashMap::new();
    let mut last_id = 0u32;
    // Once the session is closed, give the client LINGER to hang up, then drop the socket.
    let linger = async {
        closed.cancelled().await;
        tokio::time::sleep(LINGER).await;
    };
    tokio::pin!(linger);
    loop {
        let next = tokio::select! {
            next = frames.next() => next,
            _ = &mut linger => break,
        };
        let frame = match next {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "spdy: closing connection on a bad frame");
                let goaway = Frame::GoAway {
                    last_good_stream_id: last_id,
                    status: 1,
                };
                let _ = out.send(Out::Control(goaway)).await;
                break;
            }
            None => break,
        };
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
                ..
            } => {
                // Client streams are odd and increase (SPDY/3 2.3.2).
                if stream_id % 2 == 0 || stream_id <= last_id {
                    let rst = Frame::RstStream {
                        stream_id,
                        status: spdy::RST_PROTOCOL_ERROR,
                    };
                    let _ = out.send(Out::Control(rst)).await;
                    continue;
                }
                last_id = stream_id;
                let (tx, reader) = ChannelReader::pair();
                let reset = Arc::new(AtomicBool::new(false));
                let reply = Frame::SynReply {
                    stream_id,
                    fin: false,
                    headers: Vec::new(),
                };
                // Queued before the stream is handed out, so its data cannot overtake it.
                if out.send(Out::Control(reply)).await.is_err() {
                    break;
                }
                streams.insert(
                    stream_id,
                    InStream {
                        tx: (!fin).then_some(tx),
                        reset: reset.clone(),
                    },
                );
                let stream = SpdyStream {
                    id: stream_id,
                    headers,
                    reader,
                    writer: ChannelWriter::new(out.clone(), stream_id, reset),
                    out: out.clone(),
                };
                let refused = match &new_streams {
                    Some(tx) => tx.send(stream).await.err().map(|e| e.0),
                    None => Some(stream),
                };
                if let Some(stream) = refused {
                    stream.reset(spdy::RST_REFUSED_STREAM).await;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let Some(stream) = streams.get_mut(&stream_id) else {
                    continue;
                };
                if let Some(tx) = &stream.tx {
                    // A dropped reader means nobody wants this input: discard it.
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        stream.tx = None;
                    }
                }
                if fin {
                    stream.tx = None;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(stream) = streams.remove(&stream_id) {
                    stream.reset.store(true, Ordering::Release);
                }
            }
            Frame::Ping { id } => {
                // Odd ids are the client's pings; even ones would be replies to ours.
                if id % 2 == 1 && out.send(Out::Control(Frame::Ping { id })).await.is_err() {
                    break;
                }
            }
            // The client is leaving (spdystream sends GOAWAY when it closes): no new
            // streams, and a session waiting for one ends and closes the connection,
            // which is what the client waits for. Streams in flight go on meanwhile.
            Frame::GoAway { .. } => new_streams = None,
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    // The connection is gone: every reader sees EOF, every writer fails.
    for stream in streams.values() {
        stream.reset.store(true, Ordering::Release);
    }
}

async fn write_loop<W: AsyncWrite + Send + Unpin>(
    wr: W,
    mut out: mpsc::Receiver<Out>,
    done: oneshot::Sender<()>,
    closed: CancellationToken,
) {
    let mut sink = FramedWrite::new(wr, FrameEncoder::new());
    // Streams we accepted and have not finished: closing the session finishes them.
    let mut open: HashSet<u32> = HashSet::new();
    let mut last_id = 0;
    while let Some(item) = out.recv().await {
        let frame = match item {
            // Finished or reset: nothing more may be sent.
            Out::Data { stream, .. } if !open.contains(&stream) => None,
            Out::Data { stream, data, fin } => {
                if fin {
                    open.remove(&stream);
                }
                Some(Frame::Data {
                    stream_id: stream,
                    fin,
                    data,
                })
            }
            Out::Control(frame) => {
                match &frame {
                    Frame::SynReply { stream_id, .. } => {
                        open.insert(*stream_id);
                        last_id = last_id.max(*stream_id);
                    }
                    Frame::RstStream { stream_id, .. } => {
                        open.remove(stream_id);
                    }
                    _ => {}
                }
                Some(frame)
            }
            Out::Close => {
                let mut ids: Vec<u32> = open.drain().collect();
                ids.sort_unstable();
                for id in ids {
                    let fin = Frame::Data {
                        stream_id: id,
                        fin: true,
                        data: Bytes::new(),
                    };
                    if sink.feed(fin).await.is_err() {
                        break;
                    }
                }
                let goaway = Frame::GoAway {
                    last_good_stream_id: last_id,
                    status: 0,
                };
                let _ = sink.send(goaway).await;
                let _ = sink.get_mut().shutdown().await;
                // The read side stays open a moment (LINGER) so the client reads
                // everything before the connection is torn down.
                closed.cancel();
                let _ = done.send(());
                return;
            }
        };
        // Batch frames already queued into one socket write; flush when the queue is
        // drained, whether or not this item produced a frame.
        let mut sent = Ok(());
        if let Some(frame) = frame {
            sent = sink.feed(frame).await;
        }
        if sent.is_ok() && out.is_empty() {
            sent = sink.flush().await;
        }
        if let Err(e) = sent {
            tracing::debug!(error = %e, "spdy: connection write failed");
            return;
        }
    }
}
