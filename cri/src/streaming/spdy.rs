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
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio_util::codec::{Decoder, Encoder};

/// The SPDY/3 header compression dictionary (1423 bytes, Adler-32 0xe3c6a7c2).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

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
/// Largest decompressed header block accepted: streaming requests carry a handful of
/// short headers, so anything near this is an attack.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Header name/value pairs; names are lowercase on the wire (SPDY/3 requires it).
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive), if present.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

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

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spdy: {}", msg.into()))
}

/// Serialises a header block (before compression).
fn encode_header_block(headers: &Headers) -> Vec<u8> {
    // SPDY forbids repeating a name: values of one name are joined with NUL.
    let mut merged: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push('\0');
                v.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    let mut out = Vec::new();
    out.put_u32(merged.len() as u32);
    for (name, value) in &merged {
        out.put_u32(name.len() as u32);
        out.put_slice(name.as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out
}

/// Parses a decompressed header block; multi-valued headers become several pairs.
fn decode_header_block(mut raw: &[u8]) -> io::Result<Headers> {
    fn take<'a>(raw: &mut &'a [u8], what: &str) -> io::Result<&'a [u8]> {
        if raw.len() < 4 {
            return Err(protocol_error(format!("header block truncated in {what}")));
        }
        let len = raw.get_u32() as usize;
        if raw.len() < len {
            return Err(protocol_error(format!("header block truncated in {what}")));
        }
        let (v, rest) = raw.split_at(len);
        *raw = rest;
        Ok(v)
    }
    if raw.len() < 4 {
        return Err(protocol_error("header block without a count"));
    }
    let count = raw.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = take(&mut raw, "name")?;
        let value = take(&mut raw, "value")?;
        if name.is_empty() {
            return Err(protocol_error("empty header name"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        for v in value.split(|b| *b == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(headers)
}

/// Writes frames; owns the connection's outgoing header compression context.
pub struct FrameEncoder {
    zlib: Compress,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    pub fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        // Only fails for a stream already in use, which this one is not.
        let _ = zlib.set_dictionary(DICTIONARY);
        Self { zlib }
    }

    /// Compresses one header block with a sync flush, so the peer can decode it without
    /// waiting for more input while the zlib stream continues across frames.
    fn compress(&mut self, raw: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| protocol_error(format!("compressing headers: {e}")))?;
            consumed += (self.zlib.total_in() - before) as usize;
            // The flush is complete once zlib stopped with room to spare.
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
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
        let block = self.compress(&encode_header_block(headers))?;
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
                let uni = if unidirectional { FLAG_UNIDIRECTIONAL } else { 0 };
                self.control(TYPE_SYN_STREAM, fin_flag(fin) | uni, &payload, dst)
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let payload = self.with_headers(&(stream_id & 0x7fff_ffff).to_be_bytes(), &headers)?;
                self.control(TYPE_SYN_REPLY, fin_flag(fin), &payload, dst)
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let payload = self.with_headers(&(stream_id & 0x7fff_ffff).to_be_bytes(), &headers)?;
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
    zlib: Decompress,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    fn decompress(&mut self, input: &[u8]) -> io::Result<Headers> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(protocol_error("header block too large"));
                }
                out.reserve(out.capacity().max(256));
            }
            let (in_before, out_before) = (self.zlib.total_in(), out.len());
            let status = match self.zlib.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync) {
                Ok(status) => status,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| protocol_error(format!("header dictionary: {e}")))?;
                    consumed += (self.zlib.total_in() - in_before) as usize;
                    continue;
                }
                Err(e) => return Err(protocol_error(format!("decompressing headers: {e}"))),
            };
            consumed += (self.zlib.total_in() - in_before) as usize;
            let stalled = consumed == input.len() && out.len() < out.capacity();
            if stalled || status == Status::StreamEnd {
                break;
            }
            if status == Status::BufError && out.len() == out_before && out.len() < out.capacity() {
                return Err(protocol_error("header block truncated"));
            }
        }
        decode_header_block(&out)
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
                Err(protocol_error(format!("control frame type {frame_type} too short")))
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
                    headers: self.decompress(&p)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(&p, 4)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.decompress(&p)?;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply { stream_id, fin, headers }
                } else {
                    Frame::Headers { stream_id, fin, headers }
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
                Frame::GoAway { last_good_stream_id, status }
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
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
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
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b",enq=0."));
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
            Frame::SynReply { stream_id: 1, fin: false, headers: vec![] },
            Frame::Data { stream_id: 1, fin: false, data: Bytes::from_static(b"hello") },
            Frame::Data { stream_id: 1, fin: true, data: Bytes::new() },
            Frame::Headers { stream_id: 3, fin: true, headers: hdrs(&[("a", "b")]) },
            Frame::RstStream { stream_id: 3, status: RST_CANCEL },
            Frame::Settings { entries: vec![(1, 7, 65536)] },
            Frame::Ping { id: 7 },
            Frame::GoAway { last_good_stream_id: 5, status: 0 },
            Frame::WindowUpdate { stream_id: 1, delta: 4096 },
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
    fn multi_valued_and_uppercase_headers_are_normalised() {
        let sent = hdrs(&[("StreamType", "stdin"), ("x", "1"), ("X", "2")]);
        let got = roundtrip(vec![Frame::SynReply { stream_id: 1, fin: false, headers: sent }]);
        let Frame::SynReply { headers, .. } = &got[0] else { panic!("{got:?}") };
        assert_eq!(headers, &hdrs(&[("streamtype", "stdin"), ("x", "1"), ("x", "2")]));
        assert_eq!(header(headers, "streamType"), Some("stdin"));
    }

    #[test]
    fn control_frame_layout_matches_the_spec() {
        let mut wire = BytesMut::new();
        FrameEncoder::new().encode(Frame::Ping { id: 9 }, &mut wire).unwrap();
        assert_eq!(&wire[..], &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 9]);
        let mut wire = BytesMut::new();
        let data = Frame::Data { stream_id: 3, fin: true, data: Bytes::from_static(b"ab") };
        FrameEncoder::new().encode(data, &mut wire).unwrap();
        assert_eq!(&wire[..], &[0, 0, 0, 3, 0x01, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn compressed_header_block_announces_the_dictionary() {
        let mut wire = BytesMut::new();
        let reply = Frame::SynReply { stream_id: 1, fin: false, headers: vec![] };
        FrameEncoder::new().encode(reply, &mut wire).unwrap();
        let zlib = &wire[12..];
        // CMF/FLG with FDICT set, then the dictionary's Adler-32.
        assert_eq!(zlib[1] & 0x20, 0x20);
        assert_eq!(&zlib[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut wire = BytesMut::new();
        let data = Frame::Data { stream_id: 1, fin: false, data: Bytes::from_static(b"xyz") };
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
        let mut wire = BytesMut::from(&[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
        assert!(FrameDecoder::new().decode(&mut wire).is_err());
    }
}
