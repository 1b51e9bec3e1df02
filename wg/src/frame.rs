//! Length-delimited frames over a byte stream.
//!
//! Wire format: `len:u32 big-endian || payload[len]`, with `len <= max`.
//! [`FrameDecoder`] is the pure, incremental parser (feed bytes, pop frames);
//! [`Framed`] wraps any async stream. A frame longer than the maximum is an
//! error for that stream only: [`Framed`] shuts the stream down and reports
//! [`Error::FrameTooLarge`]; the tunnel and the other streams are untouched.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Encodes one frame (header + payload) into a new buffer.
pub fn encode_frame(payload: &[u8], max: usize) -> Result<Vec<u8>> {
    if payload.len() > max || payload.len() > u32::MAX as usize {
        return Err(Error::FrameTooLarge {
            len: payload.len() as u64,
            max,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Incremental frame parser. Never panics, never allocates more than
/// `max + 4` bytes per frame plus what it was fed.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max,
            failed: false,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Pops the next complete frame. `Ok(None)` means more bytes are needed.
    /// After an error the decoder stays failed (the stream must be closed).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        if self.failed {
            return Err(Error::FrameTooLarge {
                len: 0,
                max: self.max,
            });
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            self.failed = true;
            self.buf.clear();
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max: self.max,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(self.buf.split_to(len).to_vec()))
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Checks the end of the stream: leftover bytes mean a truncated frame.
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let expected = if self.buf.len() >= HEADER_LEN {
            HEADER_LEN
                + u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize
        } else {
            HEADER_LEN
        };
        Err(Error::TruncatedFrame {
            got: self.buf.len(),
            expected,
        })
    }
}

/// Size of the read buffer of [`Framed`] and [`FrameReader`].
const READ_CHUNK: usize = 64 << 10;

/// Reads frames from `io` into `dec`, using `chunk` as the read buffer.
async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    dec: &mut FrameDecoder,
    chunk: &mut Vec<u8>,
) -> Result<Option<Vec<u8>>> {
    loop {
        if let Some(f) = dec.next_frame()? {
            return Ok(Some(f));
        }
        if chunk.is_empty() {
            chunk.resize(READ_CHUNK, 0);
        }
        let n = io
            .read(chunk)
            .await
            .map_err(|e| Error::io("reading frame", e))?;
        if n == 0 {
            dec.finish()?;
            return Ok(None);
        }
        dec.feed(&chunk[..n]);
    }
}

/// A framed async stream (typically a [`crate::Stream`]).
#[derive(Debug)]
pub struct Framed<S> {
    io: S,
    dec: FrameDecoder,
    chunk: Vec<u8>,
    max: usize,
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// Wraps `io`, accepting frames of at most `max` bytes in both directions.
    pub fn new(io: S, max: usize) -> Self {
        Framed {
            io,
            dec: FrameDecoder::new(max),
            chunk: Vec::new(),
            max,
            closed: false,
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        if payload.len() > self.max {
            return Err(Error::FrameTooLarge {
                len: payload.len() as u64,
                max: self.max,
            });
        }
        let io = |e| Error::io("writing frame", e);
        if payload.len() <= READ_CHUNK {
            // One write, so header and payload travel in one segment.
            return self
                .io
                .write_all(&encode_frame(payload, self.max)?)
                .await
                .map_err(io);
        }
        let hdr = (payload.len() as u32).to_be_bytes();
        self.io.write_all(&hdr).await.map_err(io)?;
        self.io.write_all(payload).await.map_err(io)
    }

    /// Receives one frame; `Ok(None)` at a clean end of stream.
    ///
    /// A frame over the maximum shuts this stream down and returns
    /// [`Error::FrameTooLarge`].
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        match read_frame(&mut self.io, &mut self.dec, &mut self.chunk).await {
            Err(e @ Error::FrameTooLarge { .. }) => {
                if !self.closed {
                    self.closed = true;
                    let _ = self.io.shutdown().await;
                }
                tracing::warn!("closing stream: {e}");
                Err(e)
            }
            r => r,
        }
    }

    /// Half-closes the sending side.
    pub async fn shutdown(&mut self) -> Result<()> {
        self.io
            .shutdown()
            .await
            .map_err(|e| Error::io("shutting stream down", e))
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Unwraps (buffered, undecoded bytes are lost).
    pub fn into_inner(self) -> S {
        self.io
    }
}

/// The receiving side of a framed stream on its own (for example a
/// [`crate::ReadHalf`]), for protocols that read and write from different
/// tasks. A frame over the maximum is an error; the caller then drops both
/// halves, which closes the stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    dec: FrameDecoder,
    chunk: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `io`, accepting frames of at most `max` bytes.
    pub fn new(io: R, max: usize) -> Self {
        FrameReader {
            io,
            dec: FrameDecoder::new(max),
            chunk: Vec::new(),
        }
    }

    /// Receives one frame; `Ok(None)` at a clean end of stream.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        read_frame(&mut self.io, &mut self.dec, &mut self.chunk).await
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_split_frames() {
        let mut d = FrameDecoder::new(100);
        let mut wire = encode_frame(b"hello", 100).unwrap();
        wire.extend(encode_frame(b"", 100).unwrap());
        wire.extend(encode_frame(&[7u8; 100], 100).unwrap());
        for b in &wire {
            d.feed(std::slice::from_ref(b));
        }
        assert_eq!(d.next_frame().unwrap().unwrap(), b"hello");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"");
        assert_eq!(d.next_frame().unwrap().unwrap(), vec![7u8; 100]);
        assert!(d.next_frame().unwrap().is_none());
        d.finish().unwrap();
    }

    #[test]
    fn oversized_frame_fails_and_stays_failed() {
        let mut d = FrameDecoder::new(10);
        d.feed(&11u32.to_be_bytes());
        assert!(matches!(
            d.next_frame(),
            Err(Error::FrameTooLarge { len: 11, max: 10 })
        ));
        d.feed(&encode_frame(b"x", 10).unwrap());
        assert!(d.next_frame().is_err());
        assert!(encode_frame(&[0u8; 11], 10).is_err());
    }

    #[test]
    fn truncated_frame_is_reported() {
        let mut d = FrameDecoder::new(10);
        d.feed(&[0, 0, 0, 5, 1, 2]);
        assert!(d.next_frame().unwrap().is_none());
        assert!(matches!(
            d.finish(),
            Err(Error::TruncatedFrame {
                got: 6,
                expected: 9
            })
        ));
    }
}
