//! RESP2 on the client side: an incremental parser of requests and the encoder of
//! replies.
//!
//! Requests are arrays of bulk strings (what every client library sends) or inline
//! commands (`PING\r\n`, what `telnet` users type). The parser keeps its state between
//! calls, so a frame that arrives in many TCP segments is scanned once, and bulk
//! payloads are split off the read buffer without copying.
//!
//! Replies are [`Frame`]s built by the router or [`redis::Value`]s returned by a shard;
//! both encode to RESP2 (RESP3-only types of a shard's reply are mapped to their
//! RESP2 equivalents).

use std::fmt::Write as _;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest bulk string a client may send (as Redis' `proto-max-bulk-len`).
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Most elements of one request array.
pub const MAX_ARRAY_LEN: usize = 1024 * 1024;
/// Longest inline command or header line.
pub const MAX_INLINE_LEN: usize = 64 * 1024;
/// Longest `*<n>` or `$<n>` header line (digits, sign and CRLF).
const MAX_HEADER_LEN: usize = 32;
/// Most bytes reserved ahead for a bulk that has not fully arrived.
const MAX_RESERVE: usize = 4 * 1024 * 1024;

/// Limits of the request parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string.
    pub max_bulk_len: usize,
    /// Most elements of one request.
    pub max_array_len: usize,
    /// Longest inline request.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk_len: MAX_BULK_LEN,
            max_array_len: MAX_ARRAY_LEN,
            max_inline_len: MAX_INLINE_LEN,
        }
    }
}

/// A request the parser cannot accept; the connection is answered `-ERR <this>` and
/// closed, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*<n>` is not a number or above the limit.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$<n>` is not a number or above the limit.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An array element is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A header line has no CRLF within its size limit.
    #[error("Protocol error: too big count string")]
    HeaderTooLong,
    /// An inline request has no newline within its size limit.
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    /// A bulk string is not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
}

/// A request array in progress.
#[derive(Debug, Default)]
struct Partial {
    /// Elements announced by `*<n>`.
    expected: usize,
    /// Elements read so far.
    args: Vec<Bytes>,
    /// Length of the bulk whose header was read, when its payload is still missing.
    bulk_len: Option<usize>,
}

/// Incremental parser of client requests.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    partial: Option<Partial>,
}

impl RequestParser {
    /// A parser with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            partial: None,
        }
    }

    /// The next complete request in `buf` (its arguments, the command name first),
    /// consuming its bytes; `Ok(None)` when more bytes are needed. Empty requests
    /// (`*0`, blank inline lines) are skipped.
    pub fn next_request(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {
                        let Some(len) = self.array_header(buf)? else {
                            return Ok(None);
                        };
                        if len == 0 {
                            continue;
                        }
                        self.partial = Some(Partial {
                            expected: len,
                            args: Vec::with_capacity(len.min(64)),
                            bulk_len: None,
                        });
                    }
                    Some(_) => match self.inline(buf)? {
                        None => return Ok(None),
                        Some(args) if args.is_empty() => continue,
                        Some(args) => return Ok(Some(args)),
                    },
                }
            }
            return self.continue_array(buf);
        }
    }

    /// Reads `*<n>\r\n`; `Some(0)` for empty or null arrays.
    fn array_header(&self, buf: &mut BytesMut) -> Result<Option<usize>, ProtocolError> {
        let Some(line) = take_line(buf, MAX_HEADER_LEN)? else {
            return Ok(None);
        };
        let len = parse_int(&line[1..]).ok_or(ProtocolError::InvalidMultibulkLength)?;
        if len > self.limits.max_array_len as i64 {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        Ok(Some(usize::try_from(len).unwrap_or(0)))
    }

    /// Reads an inline request: words separated by spaces.
    fn inline(&self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(line) =
            take_line(buf, self.limits.max_inline_len).map_err(|_| ProtocolError::InlineTooLong)?
        else {
            return Ok(None);
        };
        let args = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|word| !word.is_empty())
            .map(|word| line.slice_ref(word))
            .collect();
        Ok(Some(args))
    }

    /// Reads the elements of the array in progress that are available.
    fn continue_array(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let limits = self.limits;
        let Some(partial) = self.partial.as_mut() else {
            return Ok(None);
        };
        while partial.args.len() < partial.expected {
            let len = match partial.bulk_len {
                Some(len) => len,
                None => match bulk_header(buf, limits.max_bulk_len)? {
                    Some(len) => {
                        partial.bulk_len = Some(len);
                        len
                    }
                    None => return Ok(None),
                },
            };
            if buf.len() < len + 2 {
                buf.reserve((len + 2 - buf.len()).min(MAX_RESERVE));
                return Ok(None);
            }
            let data = buf.split_to(len).freeze();
            if &buf[..2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            buf.advance(2);
            partial.args.push(data);
            partial.bulk_len = None;
        }
        Ok(self.partial.take().map(|partial| partial.args))
    }
}

/// Reads `$<n>\r\n`.
fn bulk_header(buf: &mut BytesMut, max_bulk_len: usize) -> Result<Option<usize>, ProtocolError> {
    match buf.first() {
        None => return Ok(None),
        Some(b'$') => {}
        Some(&other) => return Err(ProtocolError::ExpectedBulk(char::from(other))),
    }
    let Some(line) = take_line(buf, MAX_HEADER_LEN)? else {
        return Ok(None);
    };
    let len = parse_int(&line[1..]).ok_or(ProtocolError::InvalidBulkLength)?;
    match usize::try_from(len) {
        Ok(len) if len <= max_bulk_len => Ok(Some(len)),
        _ => Err(ProtocolError::InvalidBulkLength),
    }
}

/// Splits off the line up to `\n` (without `\r\n`), when one is within `max` bytes.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ProtocolError> {
    let window = &buf[..buf.len().min(max)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= max {
            Err(ProtocolError::HeaderTooLong)
        } else {
            Ok(None)
        };
    };
    let mut line = buf.split_to(newline + 1).freeze();
    line.truncate(newline);
    if line.last() == Some(&b'\r') {
        line.truncate(newline - 1);
    }
    Ok(Some(line))
}

/// A decimal `i64` written the strict RESP way (optional `-`, digits only).
pub fn parse_int(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A reply built by the router.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// `+text`
    Simple(String),
    /// `-CODE message` (the text after `-`).
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$len` and the bytes.
    Bulk(Bytes),
    /// `$-1`
    Null,
    /// `*n` and the elements.
    Array(Vec<Frame>),
}

impl Frame {
    /// `+OK`
    pub fn ok() -> Self {
        Frame::Simple("OK".to_owned())
    }

    /// An error reply; `text` starts with its code (`ERR`, `CROSSSLOT`, …).
    pub fn error(text: impl Into<String>) -> Self {
        Frame::Error(text.into())
    }

    /// A bulk string of `bytes`.
    pub fn bulk(bytes: impl Into<Bytes>) -> Self {
        Frame::Bulk(bytes.into())
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// Appends the RESP2 encoding to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(text) => line(out, b'+', text.as_bytes()),
            Frame::Error(text) => line(out, b'-', text.as_bytes()),
            Frame::Integer(n) => header(out, b':', *n),
            Frame::Bulk(bytes) => bulk(out, bytes),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::Array(items) => {
                header(out, b'*', items.len() as i64);
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

/// Appends the RESP2 encoding of a shard's reply to `out`.
///
/// RESP2 cannot tell a null array from a null bulk once parsed, so both are sent as
/// `$-1` (client libraries read either as nil).
pub fn encode_value(value: &redis::Value, out: &mut BytesMut) {
    use redis::Value;
    match value {
        Value::Nil => out.put_slice(b"$-1\r\n"),
        Value::Int(n) => header(out, b':', *n),
        Value::BulkString(bytes) => bulk(out, bytes),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            header(out, b'*', items.len() as i64);
            items.iter().for_each(|item| encode_value(item, out));
        }
        Value::SimpleString(text) => line(out, b'+', text.as_bytes()),
        Value::Okay => out.put_slice(b"+OK\r\n"),
        Value::Map(pairs) => {
            header(out, b'*', 2 * pairs.len() as i64);
            for (key, value) in pairs {
                encode_value(key, out);
                encode_value(value, out);
            }
        }
        Value::Attribute { data, .. } => encode_value(data, out),
        Value::Double(number) => bulk(out, number.to_string().as_bytes()),
        Value::Boolean(flag) => header(out, b':', i64::from(*flag)),
        Value::VerbatimString { text, .. } => bulk(out, text.as_bytes()),
        Value::BigNumber(number) => bulk(out, number),
        Value::ServerError(error) => line(out, b'-', server_error_text(error).as_bytes()),
        _ => line(
            out,
            b'-',
            b"ERR ringmaster router: unsupported reply type from shard",
        ),
    }
}

/// `CODE detail` of a shard's error reply.
pub fn server_error_text(error: &redis::ServerError) -> String {
    match error.details() {
        Some(detail) => format!("{} {detail}", error.code()),
        None => error.code().to_owned(),
    }
}

/// `<prefix><text>\r\n`; CR and LF inside `text` become spaces (they would end the line).
fn line(out: &mut BytesMut, prefix: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(prefix);
    for &byte in text {
        out.put_u8(if byte == b'\r' || byte == b'\n' {
            b' '
        } else {
            byte
        });
    }
    out.put_slice(b"\r\n");
}

/// `<prefix><n>\r\n`
fn header(out: &mut BytesMut, prefix: u8, n: i64) {
    out.put_u8(prefix);
    // Writing to a BytesMut cannot fail.
    let _ = write!(out, "{n}");
    out.put_slice(b"\r\n");
}

/// `$<len>\r\n<bytes>\r\n`
fn bulk(out: &mut BytesMut, bytes: &[u8]) {
    header(out, b'$', bytes.len() as i64);
    out.reserve(bytes.len() + 2);
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(parser: &mut RequestParser, buf: &mut BytesMut) -> Vec<Vec<Bytes>> {
        let mut out = Vec::new();
        while let Some(request) = parser.next_request(buf).unwrap() {
            out.push(request);
        }
        out
    }

    /// What a fresh parser with `limits` makes of `wire`.
    fn first_request(limits: Limits, wire: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        RequestParser::new(limits).next_request(&mut BytesMut::from(wire))
    }

    fn strings(request: &[Bytes]) -> Vec<&str> {
        request
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn parses_arrays_and_pipelines() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let requests = parse_all(&mut parser, &mut buf);
        assert_eq!(requests.len(), 2);
        assert_eq!(strings(&requests[0]), ["GET", "k"]);
        assert_eq!(strings(&requests[1]), ["PING"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn byte_by_byte_gives_the_same_requests() {
        let wire =
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\nPING\r\n*0\r\n*1\r\n$0\r\n\r\n";
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut requests = Vec::new();
        for &byte in wire {
            buf.put_u8(byte);
            while let Some(request) = parser.next_request(&mut buf).unwrap() {
                requests.push(request);
            }
        }
        assert_eq!(requests.len(), 3, "{requests:?}");
        assert_eq!(strings(&requests[0]), ["SET", "key", "va\r\nl"]);
        assert_eq!(strings(&requests[1]), ["PING"]);
        assert_eq!(strings(&requests[2]), [""]);
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$10\r\nabc"[..]);
        assert_eq!(parser.next_request(&mut buf).unwrap(), None);
        buf.put_slice(b"defghij\r\n");
        let request = parser.next_request(&mut buf).unwrap().unwrap();
        assert_eq!(strings(&request), ["GET", "abcdefghij"]);
    }

    #[test]
    fn inline_requests_split_on_spaces() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"SET  a b\r\n\r\nGET a\n"[..]);
        let requests = parse_all(&mut parser, &mut buf);
        assert_eq!(requests.len(), 2);
        assert_eq!(strings(&requests[0]), ["SET", "a", "b"]);
        assert_eq!(strings(&requests[1]), ["GET", "a"]);
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_bulk_len: 4,
            max_array_len: 2,
            max_inline_len: 8,
        };
        let cases: [(&[u8], ProtocolError); 6] = [
            (b"*3\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n$5\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n:1\r\n", ProtocolError::ExpectedBulk(':')),
            (b"PING PING PING", ProtocolError::InlineTooLong),
        ];
        for (wire, expected) in cases {
            assert_eq!(first_request(limits, wire), Err(expected), "{wire:?}");
        }
        assert_eq!(
            first_request(limits, b"*1\r\n$99999999999999999999999999999999999"),
            Err(ProtocolError::HeaderTooLong)
        );
    }

    #[test]
    fn default_limits_accept_the_redis_maximum() {
        let limits = Limits::default();
        assert_eq!(
            first_request(limits, b"*1048576\r\n$536870912\r\n"),
            Ok(None)
        );
        assert_eq!(
            first_request(limits, b"*1048577\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            first_request(limits, b"*1\r\n$536870913\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
    }

    #[test]
    fn missing_crlf_after_bulk_is_an_error() {
        assert_eq!(
            first_request(Limits::default(), b"*1\r\n$2\r\nabXY"),
            Err(ProtocolError::MissingCrlf)
        );
    }

    fn encoded(frame: &Frame) -> String {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn frames_encode_as_resp2() {
        assert_eq!(encoded(&Frame::ok()), "+OK\r\n");
        assert_eq!(encoded(&Frame::error("ERR x\r\ny")), "-ERR x  y\r\n");
        assert_eq!(encoded(&Frame::Integer(-3)), ":-3\r\n");
        assert_eq!(encoded(&Frame::bulk("ab")), "$2\r\nab\r\n");
        assert_eq!(encoded(&Frame::Null), "$-1\r\n");
        assert_eq!(
            encoded(&Frame::Array(vec![Frame::Integer(1), Frame::bulk("")])),
            "*2\r\n:1\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn shard_values_encode_as_resp2() {
        use redis::Value;
        let value = Value::Array(vec![
            Value::Okay,
            Value::Nil,
            Value::Int(7),
            Value::BulkString(b"v".to_vec()),
            Value::SimpleString("QUEUED".into()),
            Value::Map(vec![(Value::BulkString(b"k".to_vec()), Value::Int(1))]),
            Value::Boolean(true),
        ]);
        let mut out = BytesMut::new();
        encode_value(&value, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "*7\r\n+OK\r\n$-1\r\n:7\r\n$1\r\nv\r\n+QUEUED\r\n*2\r\n$1\r\nk\r\n:1\r\n:1\r\n"
        );
    }

    #[test]
    fn shard_errors_keep_their_code() {
        let value = redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap();
        let mut out = BytesMut::new();
        encode_value(&value, &mut out);
        assert_eq!(&out[..], b"-WRONGTYPE Operation against a key\r\n");
    }
}
