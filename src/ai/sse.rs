//! A small server-sent-events reader: turns a byte stream (reqwest's `bytes_stream()`) into
//! `(event name, data)` frames, as the WHATWG event-stream grammar says, for the model clients.
//!
//! It handles `\n` and `\r\n` line ends, multi-line `data:`, comments (`:`), the optional space
//! after the colon and frames split across chunks. It leaves `id:` and `retry:` (no reconnects
//! here) and lone `\r` line ends (neither vendor sends them) out, and knows nothing about what a
//! frame's data means.

use std::collections::VecDeque;
use std::error::Error as StdError;

use futures::{Stream, StreamExt};

use leadorch_actors::ports::error_chain;

/// The longest line the reader buffers; a longer one means the peer is not speaking SSE.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// The `event:` field; `None` for data-only streams (OpenAI's).
    pub event_opt: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Why reading an event stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// The underlying byte stream failed (connection reset, body error).
    #[error("event stream transport failed: {0}")]
    Transport(String),
    /// A line grew past [`MAX_LINE_BYTES`] without a line end.
    #[error("event stream line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

/// A push parser: feed it chunks as they arrive, take frames out.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes after the last line end; lines are only cut at `\n`, so UTF-8 is never split.
    partial_line: Vec<u8>,
    event_opt: Option<String>,
    /// `data:` values, each followed by `\n` (the last one is dropped at dispatch).
    data: String,
    /// Whether a `data:` field was seen since the last dispatch; an event with none is skipped.
    has_data: bool,
}

impl SseDecoder {
    /// Returns a decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a chunk and returns the frames it completed, in order.
    ///
    /// # Errors
    /// The current line is longer than [`MAX_LINE_BYTES`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseFrame>, SseError> {
        let mut frames = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|byte| *byte == b'\n') {
            self.partial_line.extend_from_slice(&rest[..newline]);
            rest = &rest[newline + 1..];
            let mut line = std::mem::take(&mut self.partial_line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(frame) = self.process_line(&String::from_utf8_lossy(&line)) {
                frames.push(frame);
            }
        }
        self.partial_line.extend_from_slice(rest);
        if self.partial_line.len() > MAX_LINE_BYTES {
            return Err(SseError::LineTooLong);
        }
        Ok(frames)
    }

    fn process_line(&mut self, line: &str) -> Option<SseFrame> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event_opt = Some(value.to_owned()),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            // `id`, `retry` and unknown fields do not matter to a client that never reconnects.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseFrame> {
        let event_opt = self.event_opt.take().filter(|name| !name.is_empty());
        let mut data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        data.pop();
        Some(SseFrame { event_opt, data })
    }
}

/// Turns a byte stream into a stream of frames. It ends when the bytes end; an event not closed
/// by a blank line by then is dropped, as the SSE grammar says.
pub fn frames<S, B, E>(bytes: S) -> impl Stream<Item = Result<SseFrame, SseError>> + Send + 'static
where
    S: Stream<Item = Result<B, E>> + Send + Unpin + 'static,
    B: AsRef<[u8]>,
    E: StdError,
{
    let state = (bytes, SseDecoder::new(), VecDeque::<SseFrame>::new(), false);
    futures::stream::unfold(state, |(mut bytes, mut decoder, mut ready, mut failed)| async move {
        loop {
            if let Some(frame) = ready.pop_front() {
                return Some((Ok(frame), (bytes, decoder, ready, failed)));
            }
            if failed {
                return None;
            }
            match bytes.next().await? {
                Ok(chunk) => match decoder.push(chunk.as_ref()) {
                    Ok(frames) => ready.extend(frames),
                    Err(err) => {
                        failed = true;
                        return Some((Err(err), (bytes, decoder, ready, failed)));
                    }
                },
                Err(err) => {
                    failed = true;
                    return Some((Err(SseError::Transport(error_chain(&err))), (bytes, decoder, ready, failed)));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn frame(event_opt: Option<&str>, data: &str) -> SseFrame {
        SseFrame { event_opt: event_opt.map(str::to_owned), data: data.to_owned() }
    }

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseFrame> {
        let mut decoder = SseDecoder::new();
        chunks.iter().flat_map(|chunk| decoder.push(chunk).expect("short lines")).collect()
    }

    #[test]
    fn named_and_data_only_events_are_read() {
        let frames = decode_all(&[b"event: ping\ndata: {\"type\":\"ping\"}\n\ndata: [DONE]\n\n"]);

        assert_eq!(frames, vec![frame(Some("ping"), "{\"type\":\"ping\"}"), frame(None, "[DONE]")]);
    }

    #[test]
    fn a_frame_split_across_chunks_at_any_byte_is_read_once() {
        let wire = "event: content_block_delta\r\ndata: {\"text\":\"héllo\"}\r\n\r\n".as_bytes();
        for cut in 0..wire.len() {
            let frames = decode_all(&[&wire[..cut], &wire[cut..]]);

            assert_eq!(frames, vec![frame(Some("content_block_delta"), "{\"text\":\"héllo\"}")], "cut at {cut}");
        }
    }

    #[test]
    fn crlf_line_ends_are_read_like_lf() {
        let frames = decode_all(&[b"event: a\r\ndata: 1\r\n\r\nevent: b\ndata: 2\n\n"]);

        assert_eq!(frames, vec![frame(Some("a"), "1"), frame(Some("b"), "2")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let frames = decode_all(&[b"data: first\ndata:second\ndata:  indented\n\n"]);

        assert_eq!(frames, vec![frame(None, "first\nsecond\n indented")]);
    }

    #[test]
    fn comments_and_events_without_data_are_skipped() {
        let frames = decode_all(&[b": keep-alive\n\nevent: lonely\n\nid: 7\nretry: 10\ndata: x\n\n"]);

        assert_eq!(frames, vec![frame(None, "x")]);
    }

    #[test]
    fn an_overlong_line_is_an_error() {
        let mut decoder = SseDecoder::new();

        let result = decoder.push(&vec![b'a'; MAX_LINE_BYTES + 1]);

        assert_eq!(result, Err(SseError::LineTooLong));
    }

    #[tokio::test]
    async fn frames_reads_a_byte_stream_then_reports_a_transport_error_and_ends() {
        let chunks: Vec<Result<&'static [u8], io::Error>> = vec![
            Ok(b"data: one\n"),
            Ok(b"\ndata: tw"),
            Ok(b"o\n\ndata: cut"),
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
        ];

        let read: Vec<Result<SseFrame, SseError>> = frames(futures::stream::iter(chunks)).collect().await;

        assert_eq!(
            read,
            vec![Ok(frame(None, "one")), Ok(frame(None, "two")), Err(SseError::Transport("reset".to_owned()))]
        );
    }

    #[tokio::test]
    async fn frames_drops_an_unterminated_event_at_the_end() {
        let chunks: Vec<Result<&'static [u8], io::Error>> = vec![Ok(b"data: one\n\ndata: partial\n")];

        let read: Vec<Result<SseFrame, SseError>> = frames(futures::stream::iter(chunks)).collect().await;

        assert_eq!(read, vec![Ok(frame(None, "one"))]);
    }
}
