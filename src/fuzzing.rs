//! Entry points of the fuzz targets (`fuzz/`, run by `scripts/fuzz`): what Parley parses
//! from the outside, with the properties every input must keep. Each returns normally for
//! any input and panics only on a broken property. The inputs in `fuzz/seeds/` (crashes
//! the fuzzer found included) run as unit tests.

use std::io::{Read, Write};

use axum::extract::ws::Message;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WireMessage;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

use crate::config::StreamConfig;
use crate::providers::{Assembler, Delta, SseParser};

/// Bytes a client sends on an upgraded socket: WebSocket frames, read with the limits
/// Parley serves with, then every text message parsed as a client frame of both protocols.
/// A message either parses or gets an `error` frame with a stable code. Returns how many
/// text messages were read.
pub fn client_frames(data: &[u8]) -> usize {
    let max = StreamConfig::default().max_frame_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let mut socket = WebSocket::from_raw_socket(Wire(data), Role::Server, Some(config));
    let mut texts = 0;
    loop {
        match socket.read() {
            Ok(WireMessage::Text(text)) => {
                check_client_frame(&text);
                texts += 1;
            }
            Ok(_) => {}
            Err(_) => return texts,
        }
    }
}

fn check_client_frame(text: &str) {
    for parsed in crate::ws::parse_client_frames(text) {
        let Err(reply) = parsed else { continue };
        let Message::Text(reply) = reply else { panic!("error replies are text frames") };
        let reply: Value = serde_json::from_str(&reply).expect("error frames are JSON");
        assert_eq!(reply["type"], "error");
        let code = reply["code"].as_str().unwrap_or_default();
        assert!(matches!(code, "INVALID_JSON" | "UNKNOWN_MESSAGE_TYPE"), "code {code}");
    }
}

/// The input side of a socket over a byte slice; what the server writes is dropped.
struct Wire<'a>(&'a [u8]);

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A provider's streamed response body: the first byte picks where the body is split in
/// two reads. Parsing in two pieces yields the same events as in one, and each event's
/// chunk either applies or is a typed error; the text streamed to watchers is exactly the
/// text of the completion. Returns that text if the completion assembled.
pub fn provider_stream(data: &[u8]) -> Option<String> {
    let (&split, body) = data.split_first()?;
    let split = usize::from(split) * body.len() / 255;
    let mut whole = SseParser::default();
    let mut events = whole.feed(body);
    events.extend(whole.finish());
    let mut pieces = SseParser::default();
    let mut split_events = pieces.feed(&body[..split]);
    split_events.extend(pieces.feed(&body[split..]));
    split_events.extend(pieces.finish());
    assert_eq!(events, split_events, "split at {split}");

    let mut assembler = Assembler::default();
    let mut streamed = String::new();
    for event in events.iter().take_while(|e| *e != "[DONE]") {
        let mut on_delta = |delta: Delta| {
            if let Delta::Text(text) = delta {
                streamed.push_str(&text);
            }
        };
        assembler.apply(event, &mut on_delta).ok()?;
    }
    let completion = assembler.finish().ok()?;
    assert_eq!(completion.text, streamed);
    for call in &completion.tool_calls {
        assert!(!call.name.is_empty() && !call.id.is_empty() && !call.arguments.is_empty());
    }
    Some(completion.text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Every input in `fuzz/seeds/<target>` (the starting corpus and the regressions), by
    /// file name.
    fn seeds(target: &str) -> BTreeMap<String, Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
        let inputs: BTreeMap<_, _> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        assert!(!inputs.is_empty(), "no seeds in {}", dir.display());
        inputs
    }

    #[test]
    fn client_frame_seeds_hold() {
        let seeds = seeds("client_frames");
        for input in seeds.values() {
            super::client_frames(input);
        }
        // The seeds reach the frame parsers: fragments joined, control frames skipped.
        assert_eq!(super::client_frames(&seeds["message"]), 1);
        assert_eq!(super::client_frames(&seeds["fragmented"]), 1);
        assert_eq!(super::client_frames(&seeds["resume_ping"]), 2);
    }

    #[test]
    fn provider_stream_seeds_hold() {
        let seeds = seeds("provider_stream");
        for input in seeds.values() {
            super::provider_stream(input);
        }
        assert_eq!(super::provider_stream(&seeds["text"]).as_deref(), Some("Hello"));
        assert_eq!(super::provider_stream(&seeds["tools"]).as_deref(), Some(""));
        assert_eq!(super::provider_stream(&seeds["multiline"]).as_deref(), Some("a"));
        assert_eq!(super::provider_stream(&seeds["unterminated"]).as_deref(), Some("z"));
        assert_eq!(super::provider_stream(&seeds["error"]), None);
    }
}
