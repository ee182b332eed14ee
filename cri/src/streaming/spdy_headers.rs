//! SPDY/3 header blocks: name/value pairs serialised with 32-bit lengths, compressed
//! with zlib primed with the SPDY/3 dictionary. Each direction of a connection is one
//! zlib stream for its whole life, sync-flushed after every block, so a block may refer
//! back into earlier ones and the contexts must be kept per connection.

use std::io;

use bytes::{Buf, BufMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::spdy::protocol_error;

/// The SPDY/3 header compression dictionary (1423 bytes, Adler-32 0xe3c6a7c2).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

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

/// The outgoing header compression context of one connection.
pub struct HeaderCompressor {
    zlib: Compress,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    pub fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        // Only fails for a stream already in use, which this one is not.
        let _ = zlib.set_dictionary(DICTIONARY);
        Self { zlib }
    }

    /// Compresses one header block with a sync flush, so the peer can decode it without
    /// waiting for more input while the zlib stream continues across frames.
    pub fn compress(&mut self, headers: &Headers) -> io::Result<Vec<u8>> {
        let raw = &encode_header_block(headers)[..];
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
}

/// The incoming header decompression context of one connection.
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Decompresses one header block and parses it.
    pub fn decompress(&mut self, input: &[u8]) -> io::Result<Headers> {
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
            let status =
                match self
                    .zlib
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b",enq=0."));
    }

    #[test]
    fn multi_valued_and_uppercase_headers_are_normalised() {
        let sent = hdrs(&[("StreamType", "stdin"), ("x", "1"), ("X", "2")]);
        let block = HeaderCompressor::new().compress(&sent).unwrap();
        let got = HeaderDecompressor::new().decompress(&block).unwrap();
        assert_eq!(
            got,
            hdrs(&[("streamtype", "stdin"), ("x", "1"), ("x", "2")])
        );
        assert_eq!(header(&got, "streamType"), Some("stdin"));
    }

    #[test]
    fn blocks_share_one_compression_context_per_direction() {
        let (mut c, mut d) = (HeaderCompressor::new(), HeaderDecompressor::new());
        let h = hdrs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        let first = c.compress(&h).unwrap();
        let second = c.compress(&h).unwrap();
        // The repeat refers back into the first block: much smaller, and only
        // decodable by a decompressor that has seen the first one.
        assert!(
            second.len() < first.len() / 2,
            "{} vs {}",
            second.len(),
            first.len()
        );
        assert_eq!(d.decompress(&first).unwrap(), h);
        assert_eq!(d.decompress(&second).unwrap(), h);
        assert!(HeaderDecompressor::new().decompress(&second).is_err());
    }

    #[test]
    fn compressed_block_announces_the_dictionary() {
        let zlib = HeaderCompressor::new().compress(&Vec::new()).unwrap();
        // CMF/FLG with FDICT set, then the dictionary's Adler-32.
        assert_eq!(zlib[1] & 0x20, 0x20);
        assert_eq!(&zlib[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    }

    #[test]
    fn truncated_block_is_an_error() {
        let block = HeaderCompressor::new()
            .compress(&hdrs(&[("a", "b")]))
            .unwrap();
        let mut raw = encode_header_block(&hdrs(&[("a", "b")]));
        raw.truncate(raw.len() - 1);
        assert!(decode_header_block(&raw).is_err());
        assert!(HeaderDecompressor::new()
            .decompress(&block[..block.len() / 2])
            .is_err());
    }
}
