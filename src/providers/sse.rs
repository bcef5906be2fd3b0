//! A Server-Sent Events parser that takes bytes as they arrive, split anywhere, and yields
//! each event's `data` (the only field OpenAI-compatible streams use).

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line being received.
    line: Vec<u8>,
    /// `data:` lines of the event being received, joined by `\n`.
    data: Option<String>,
    /// Whether the last byte seen was a `\r`, so a following `\n` belongs to it.
    after_cr: bool,
}

impl SseParser {
    /// Feeds bytes and returns the data of every event they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut events);
                }
                b'\n' => self.end_line(&mut events),
                other => self.line.push(other),
            }
        }
        events
    }

    /// Ends the stream: an event not closed by a blank line is still delivered.
    pub fn finish(&mut self) -> Option<String> {
        if !self.line.is_empty() {
            let mut events = Vec::new();
            self.end_line(&mut events);
            if let Some(event) = events.pop() {
                return Some(event);
            }
        }
        self.data.take()
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(data);
            }
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let stream =
            b"data: {\"a\":1}\n\n: keep-alive\n\ndata: one\r\ndata: two\r\n\r\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&stream[..split]);
            events.extend(parser.feed(&stream[split..]));
            assert_eq!(events, vec!["{\"a\":1}", "one\ntwo", "[DONE]"], "split at {split}");
        }
    }

    #[test]
    fn delivers_an_unterminated_last_event() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: tail").is_empty());
        assert_eq!(parser.finish().as_deref(), Some("tail"));
    }
}
