//! SPDY/3.1 framing: the frames the Kubernetes streaming protocols use and their header
//! blocks, zlib-compressed with the SPDY/3 dictionary (draft-mbelshe-httpbis-spdy-00,
//! section 2.6.10.1).
//!
//! Hand-written because no maintained Rust SPDY crate exists: the old `spdy`/`solicit`
//! era crates are abandoned, and the newer ones are client-side multiplexers. Kubernetes
//! clients speak SPDY through Go's moby/spdystream, which is SPDY/3 framing without flow
//! control, so this is the subset a server for those clients needs: every frame type is
//! parsed, WINDOW_UPDATE and SETTINGS are accepted and ignored (spdystream never sends
//! WINDOW_UPDATE, so honouring windows would stall every stream after 64 KiB), and the
//! header compression contexts live for the whole connection, one per direction.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use super::spdy_headers::{header, Headers, DICTIONARY};
use super::spdy_headers::{HeaderCompressor, HeaderDecompressor};

pub const VERSION: u16 = 3;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// Largest frame payload accepted (the 24-bit length field's maximum).
const MAX_PAYLOAD: usize = (1 << 24) - 1;
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// (flags, id, value) entries; read and ignored.
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame of a type SPDY/3 does not define; skipped, as the spec asks.
    Unknown {
        frame_type: u16,
    },
}

pub(crate) fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spdy: {}", msg.into()))
}

/// Writes frames; owns the connection's outgoing header compression context.
pub struct FrameEncoder {
    headers: HeaderCompressor,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    pub fn new() -> Self {
        Self {
            headers: HeaderCompressor::new(),
        }
    }

    fn control(
        &mut self,
        frame_type: u16,
        flags: u8,
        payload: &[u8],
        dst: &mut BytesMut,
    ) -> io::Result<()> {
        if payload.len() > MAX_PAYLOAD {
            return Err(protocol_error("control frame too large"));
        }
        dst.reserve(8 + payload.len());
        dst.put_u16(0x8000 | VERSION);
        dst.put_u16(frame_type);
        dst.put_u32(((flags as u32) << 24) | payload.len() as u32);
        dst.put_slice(payload);
        Ok(())
    }

    fn with_headers(&mut self, prefix: &[u8], headers: &Headers) -> io::Result<Vec<u8>> {
        let block = self.headers.compress(headers)?;
        let mut payload = Vec::with_capacity(prefix.len() + block.len());
        payload.extend_from_slice(prefix);
        payload.extend_from_slice(&block);
        Ok(payload)
    }
}

fn fin_flag(fin: bool) -> u8 {
    if fin {
        FLAG_FIN
    } else {
        0
    }
}

impl Encoder<Frame> for FrameEncoder {
    type Error = io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<()> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(protocol_error("data frame too large"));
                }
                dst.reserve(8 + data.len());
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(((fin_flag(fin) as u32) << 24) | data.len() as u32);
                dst.put_slice(&data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let mut prefix = Vec::with_capacity(10);
                prefix.put_u32(stream_id & 0x7fff_ffff);
                prefix.put_u32(associated_to & 0x7fff_ffff);
                prefix.put_u8((priority & 0x07) << 5);
                prefix.put_u8(0); // credential slot
                let payload = self.with_headers(&prefix, &headers)?;
                let uni = if unidirectional {
                    FLAG_UNIDIRECTIONAL
                } else {
                    0
                };
                self.control(TYPE_SYN_STREAM, fin_flag(fin) | uni, &payload, dst)
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let payload =
                    self.with_headers(&(stream_id & 0x7fff_ffff).to_be_bytes(), &headers)?;
                self.control(TYPE_SYN_REPLY, fin_flag(fin), &payload, dst)
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let payload =
                    self.with_headers(&(stream_id & 0x7fff_ffff).to_be_bytes(), &headers)?;
                self.control(TYPE_HEADERS, fin_flag(fin), &payload, dst)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p[4..].copy_from_slice(&status.to_be_bytes());
                self.control(TYPE_RST_STREAM, 0, &p, dst)
            }
            Frame::Settings { entries } => {
                let mut p = Vec::with_capacity(4 + 8 * entries.len());
                p.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    p.put_u32(((flags as u32) << 24) | (id & 0x00ff_ffff));
                    p.put_u32(value);
                }
                self.control(TYPE_SETTINGS, 0, &p, dst)
            }
            Frame::Ping { id } => self.control(TYPE_PING, 0, &id.to_be_bytes(), dst),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&(last_good_stream_id & 0x7fff_ffff).to_be_bytes());
                p[4..].copy_from_slice(&status.to_be_bytes());
                self.control(TYPE_GOAWAY, 0, &p, dst)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p[4..].copy_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                self.control(TYPE_WINDOW_UPDATE, 0, &p, dst)
            }
            Frame::Unknown { frame_type } => Err(protocol_error(format!(
                "cannot encode unknown frame type {frame_type}"
            ))),
        }
    }
}

/// Reads frames; owns the connection's incoming header decompression context.
pub struct FrameDecoder {
    headers: HeaderDecompressor,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self {
            headers: HeaderDecompressor::new(),
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        if src.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let flags = src[4];
        let len = u32::from_be_bytes([0, src[5], src[6], src[7]]) as usize;
        if src.len() < 8 + len {
            src.reserve(8 + len - src.len());
            return Ok(None);
        }
        src.advance(8);
        let mut p = src.split_to(len).freeze();
        let fin = flags & FLAG_FIN != 0;

        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word,
                fin,
                data: p,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        let frame_type = (word & 0xffff) as u16;
        if version != VERSION {
            return Err(protocol_error(format!("unsupported version {version}")));
        }
        let need = |p: &Bytes, n: usize| {
            if p.len() < n {
                Err(protocol_error(format!(
                    "control frame type {frame_type} too short"
                )))
            } else {
                Ok(())
            }
        };
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                need(&p, 10)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                p.advance(1);
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.headers.decompress(&p)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(&p, 4)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.headers.decompress(&p)?;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(&p, 8)?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(&p, 4)?;
                let count = p.get_u32() as usize;
                need(&p, count.saturating_mul(8))?;
                let entries = (0..count)
                    .map(|_| {
                        let head = p.get_u32();
                        ((head >> 24) as u8, head & 0x00ff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { entries }
            }
            TYPE_PING => {
                need(&p, 4)?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                need(&p, 4)?;
                let last_good_stream_id = p.get_u32() & 0x7fff_ffff;
                // SPDY/3 added the status; tolerate SPDY/2-sized frames.
                let status = if p.len() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(&p, 8)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn roundtrip(frames: Vec<Frame>) -> Vec<Frame> {
        let (mut enc, mut dec) = (FrameEncoder::new(), FrameDecoder::new());
        let mut wire = BytesMut::new();
        for f in frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut wire).unwrap() {
            out.push(f);
        }
        assert!(wire.is_empty());
        out
    }

    #[test]
    fn every_frame_type_roundtrips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                fin: false,
                unidirectional: false,
                headers: hdrs(&[("streamtype", "error")]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new(),
            },
            Frame::Headers {
                stream_id: 3,
                fin: true,
                headers: hdrs(&[("a", "b")]),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                entries: vec![(1, 7, 65536)],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 4096,
            },
        ];
        assert_eq!(roundtrip(frames.clone()), frames);
    }

    #[test]
    fn header_blocks_share_one_compression_context_per_direction() {
        // The second block refers back into the first one's window: decoding it with a
        // fresh decompressor would fail, so this checks the context is kept.
        let many: Vec<Frame> = (0..5)
            .map(|i| Frame::SynStream {
                stream_id: 2 * i + 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: hdrs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            })
            .collect();
        assert_eq!(roundtrip(many.clone()), many);
    }

    #[test]
    fn control_frame_layout_matches_the_spec() {
        let mut wire = BytesMut::new();
        FrameEncoder::new()
            .encode(Frame::Ping { id: 9 }, &mut wire)
            .unwrap();
        assert_eq!(
            &wire[..],
            &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 9]
        );
        let mut wire = BytesMut::new();
        let data = Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::from_static(b"ab"),
        };
        FrameEncoder::new().encode(data, &mut wire).unwrap();
        assert_eq!(&wire[..], &[0, 0, 0, 3, 0x01, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut wire = BytesMut::new();
        let data = Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from_static(b"xyz"),
        };
        FrameEncoder::new().encode(data.clone(), &mut wire).unwrap();
        let mut dec = FrameDecoder::new();
        let mut partial = BytesMut::from(&wire[..9]);
        assert_eq!(dec.decode(&mut partial).unwrap(), None);
        partial.extend_from_slice(&wire[9..]);
        assert_eq!(dec.decode(&mut partial).unwrap(), Some(data));
    }

    #[test]
    fn unknown_control_frames_are_skipped_and_bad_versions_rejected() {
        let mut wire = BytesMut::from(&[0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 2, 1, 2][..]);
        assert_eq!(
            FrameDecoder::new().decode(&mut wire).unwrap(),
            Some(Frame::Unknown { frame_type: 10 })
        );
        let mut wire = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(FrameDecoder::new().decode(&mut wire).is_err());
    }

    #[test]
    fn garbage_header_block_is_an_error_not_a_panic() {
        let mut wire =
            BytesMut::from(&[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
        assert!(FrameDecoder::new().decode(&mut wire).is_err());
    }
}
