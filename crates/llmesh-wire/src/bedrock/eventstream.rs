//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the
//! binary envelope of Bedrock's `ConverseStream` and
//! `InvokeModelWithResponseStream` answers.
//!
//! A message is: total length (u32 BE), headers length (u32 BE), CRC32 of
//! those 8 bytes, the headers, the payload, and the CRC32 of everything
//! before it. A header is a name (u8 length + bytes), a value type (u8) and
//! a value whose size depends on the type.

use crate::json::bad_upstream;
use crate::TranslateError;

/// Prelude (two lengths and their CRC) plus the trailing message CRC.
const OVERHEAD: usize = 16;
/// AWS caps a message at 16 MiB of payload and 128 KiB of headers; anything
/// claiming more is a corrupt length, not a message to wait for.
const MAX_MESSAGE: usize = 16 * 1024 * 1024 + 128 * 1024 + OVERHEAD;

const TYPE_STRING: u8 = 7;

/// One decoded message: its string headers and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// String-valued headers (`:event-type`, `:message-type`...), in order.
    /// Headers of other types are skipped.
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reassembles messages from bytes split anywhere.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Set by the first bad message: the framing is lost for good.
    broken: Option<TranslateError>,
}

impl FrameReader {
    /// Append bytes and hand every complete message to `on_frame`. Fails on
    /// the first corrupt message; from then on every call fails the same way
    /// and input is discarded (there is no way to find the next message).
    pub(crate) fn push(
        &mut self,
        input: &[u8],
        mut on_frame: impl FnMut(Frame),
    ) -> Result<(), TranslateError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(input);
        let mut start = 0;
        let result = loop {
            match next_frame(&self.buf[start..]) {
                Ok(Some((frame, used))) => {
                    start += used;
                    on_frame(frame);
                }
                Ok(None) => break Ok(()),
                Err(e) => {
                    self.broken = Some(e.clone());
                    break Err(e);
                }
            }
        };
        if self.broken.is_some() {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..start);
        }
        result
    }

    /// Bytes of an incomplete message still waiting for the rest.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// The first complete message of `buf` and the bytes it took; `None` when
/// more bytes are needed.
fn next_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, TranslateError> {
    let (Some(total), Some(headers_len), Some(prelude_crc)) =
        (be32(buf, 0), be32(buf, 4), be32(buf, 8))
    else {
        return Ok(None);
    };
    // Check the prelude before trusting its lengths.
    if crc32fast::hash(&buf[..8]) != prelude_crc {
        return Err(bad_upstream(
            "bedrock event stream: message prelude CRC mismatch",
        ));
    }
    let total = total as usize;
    let headers_len = headers_len as usize;
    if !(OVERHEAD..=MAX_MESSAGE).contains(&total) || headers_len > total - OVERHEAD {
        return Err(bad_upstream(
            "bedrock event stream: message lengths are invalid",
        ));
    }
    let Some(message) = buf.get(..total) else {
        return Ok(None);
    };
    let body_end = total - 4;
    if Some(crc32fast::hash(&message[..body_end])) != be32(message, body_end) {
        return Err(bad_upstream("bedrock event stream: message CRC mismatch"));
    }
    let headers = parse_headers(&message[12..12 + headers_len])?;
    let payload = message[12 + headers_len..body_end].to_vec();
    Ok(Some((Frame { headers, payload }, total)))
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, String)>, TranslateError> {
    let bad = || bad_upstream("bedrock event stream: malformed message headers");
    let mut out = Vec::new();
    while let Some((&name_len, rest)) = b.split_first() {
        let name_len = usize::from(name_len);
        let name = rest.get(..name_len).ok_or_else(bad)?;
        let (&ty, rest) = rest
            .get(name_len..)
            .ok_or_else(bad)?
            .split_first()
            .ok_or_else(bad)?;
        let fixed = match ty {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | TYPE_STRING => None,
            _ => return Err(bad()),
        };
        let (value, rest) = match fixed {
            Some(n) => (None, rest.get(n..).ok_or_else(bad)?),
            None => {
                let len_bytes: [u8; 2] = rest
                    .get(..2)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?;
                let len = usize::from(u16::from_be_bytes(len_bytes));
                let value = rest.get(2..2 + len).ok_or_else(bad)?;
                (Some(value), &rest[2 + len..])
            }
        };
        if let (TYPE_STRING, Some(v)) = (ty, value) {
            let name = std::str::from_utf8(name).map_err(|_| bad())?;
            let v = std::str::from_utf8(v).map_err(|_| bad())?;
            out.push((name.to_owned(), v.to_owned()));
        }
        b = rest;
    }
    Ok(out)
}

/// Encode one message with string headers.
pub(crate) fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        // Header names are ours (a handful of fixed ASCII names) and values
        // short; longer ones are cut to fit the length fields.
        let name = &name.as_bytes()[..name.len().min(255)];
        let value = &value.as_bytes()[..value.len().min(usize::from(u16::MAX))];
        h.push(name.len() as u8);
        h.extend_from_slice(name);
        h.push(TYPE_STRING);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value);
    }
    let total = (OVERHEAD + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An event message (`:message-type: event`), as Bedrock sends them: the
/// payload is the event's JSON.
pub fn bedrock_event_frame(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// An exception message (`:message-type: exception`), e.g.
/// `throttlingException` with payload `{"message": "..."}`.
pub fn bedrock_exception_frame(exception_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], step: usize) -> Result<Vec<Frame>, TranslateError> {
        let mut r = FrameReader::default();
        let mut frames = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            r.push(piece, |f| frames.push(f))?;
        }
        assert_eq!(r.pending(), 0);
        Ok(frames)
    }

    #[test]
    fn round_trip_at_every_split() {
        let mut bytes = bedrock_event_frame("messageStart", br#"{"role":"assistant"}"#);
        bytes.extend(bedrock_exception_frame(
            "throttlingException",
            br#"{"message":"slow"}"#,
        ));
        bytes.extend(bedrock_event_frame("messageStop", b""));
        let whole = read_all(&bytes, bytes.len()).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].header(":event-type"), Some("messageStart"));
        assert_eq!(whole[0].payload, br#"{"role":"assistant"}"#);
        assert_eq!(
            whole[1].header(":exception-type"),
            Some("throttlingException")
        );
        assert_eq!(whole[1].header(":message-type"), Some("exception"));
        assert!(whole[2].payload.is_empty());
        for step in 1..bytes.len() {
            assert_eq!(read_all(&bytes, step).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn known_frame_layout() {
        // Lengths and CRCs of a frame with no headers and payload "hi".
        let f = encode(&[], b"hi");
        assert_eq!(&f[..8], &[0, 0, 0, 18, 0, 0, 0, 0]);
        assert_eq!(be32(&f, 8), Some(crc32fast::hash(&f[..8])));
        assert_eq!(&f[12..14], b"hi");
        assert_eq!(be32(&f, 14), Some(crc32fast::hash(&f[..14])));
    }

    #[test]
    fn other_header_types_are_skipped() {
        // name "a" bool true, name "b" int32, name "c" bytes(2), name "d"
        // timestamp, name "e" uuid, name "f" string.
        let mut h = vec![1, b'a', 0, 1, b'b', 4, 0, 0, 0, 7, 1, b'c', 6, 0, 2, 9, 9];
        h.extend([1, b'd', 8]);
        h.extend([0; 8]);
        h.extend([1, b'e', 9]);
        h.extend([0; 16]);
        h.extend([1, b'f', 7, 0, 2, b'o', b'k']);
        assert_eq!(parse_headers(&h).unwrap(), vec![("f".into(), "ok".into())]);
        assert!(parse_headers(&[1, b'a', 7, 0, 5, b'x']).is_err());
        assert!(parse_headers(&[1, b'a', 42]).is_err());
    }

    #[test]
    fn corrupt_frames_fail_clearly_and_stay_failed() {
        let good = bedrock_event_frame("messageStop", br#"{"stopReason":"end_turn"}"#);
        let mut bad_prelude = good.clone();
        bad_prelude[3] ^= 1;
        let err = read_all(&bad_prelude, 100).unwrap_err();
        assert_eq!(
            err.message(),
            "bedrock event stream: message prelude CRC mismatch"
        );
        let mut bad_body = good.clone();
        let last = bad_body.len() - 5;
        bad_body[last] ^= 1;
        let mut r = FrameReader::default();
        let err = r.push(&bad_body, |_| panic!("no frame")).unwrap_err();
        assert_eq!(err.message(), "bedrock event stream: message CRC mismatch");
        assert!(r.push(&good, |_| panic!("no frame")).is_err());
        // A prelude whose CRC matches but whose lengths do not.
        let mut tiny = vec![0, 0, 0, 4, 0, 0, 0, 0];
        let crc = crc32fast::hash(&tiny);
        tiny.extend(crc.to_be_bytes());
        assert_eq!(
            read_all(&tiny, 100).unwrap_err().message(),
            "bedrock event stream: message lengths are invalid"
        );
    }
}
