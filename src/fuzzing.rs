//! Entry points of the fuzz targets (`fuzz/`, run by `scripts/fuzz`): what Parley parses
//! from the outside, with the properties every input must keep. Each returns normally for
//! any input and panics only on a broken property. The inputs in `fuzz/seeds/<target>/` run
//! as unit tests, each checked against the outcome `fuzz/seeds/README.md` gives it.

use std::io::{Read, Write};

use axum::extract::ws::Message;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WireMessage;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

use crate::config::StreamConfig;
use crate::providers::{Assembler, Completion, Delta, ProviderError, SseParser};

/// Bytes a client sends on an upgraded socket: WebSocket frames, read with the limits
/// Parley serves with, then every text message parsed as a client frame of both protocols.
/// A message either parses or gets an `error` frame with a stable code. Returns, for each
/// text message read, what it is in `/ws/chat` and in `/api/chat/stream`: the frame's
/// variant (`Message`, `Ping`, ...) or the error frame's code.
pub fn client_frames(data: &[u8]) -> Vec<[String; 2]> {
    let max = StreamConfig::default().max_frame_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let mut socket = WebSocket::from_raw_socket(Wire(data), Role::Server, Some(config));
    let mut texts = Vec::new();
    loop {
        match socket.read() {
            Ok(WireMessage::Text(text)) => texts.push(client_frame(&text)),
            Ok(_) => {}
            Err(_) => return texts,
        }
    }
}

/// One text message in each protocol: the variant it parses to, or its error frame's code.
fn client_frame(text: &str) -> [String; 2] {
    crate::ws::parse_client_frames(text).map(|parsed| match parsed {
        // The frame's Debug form starts with its variant's name.
        Ok(frame) => frame.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("").into(),
        Err(reply) => {
            let Message::Text(reply) = reply else { panic!("error replies are text frames") };
            let reply: Value = serde_json::from_str(&reply).expect("error frames are JSON");
            assert_eq!(reply["type"], "error");
            let code = reply["code"].as_str().unwrap_or_default();
            assert!(matches!(code, "INVALID_JSON" | "UNKNOWN_MESSAGE_TYPE"), "code {code}");
            code.to_owned()
        }
    })
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
/// text of the completion. Returns the completion, or the error that ended the stream.
pub fn provider_stream(data: &[u8]) -> Result<Completion, ProviderError> {
    let (split, body) = data.split_first().map_or((0, data), |(&split, body)| (split, body));
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
        assembler.apply(event, &mut on_delta)?;
    }
    let completion = assembler.finish()?;
    assert_eq!(completion.text, streamed);
    for call in &completion.tool_calls {
        assert!(!call.name.is_empty() && !call.id.is_empty() && !call.arguments.is_empty());
    }
    Ok(completion)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Every input in `fuzz/seeds/<target>/`, by file name.
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

    /// The expected outcome of each seed of `target`, by name: the rows of the table under
    /// `## target` in `fuzz/seeds/README.md`, ``| `name` | `outcome` | what it is |``.
    fn index(target: &str) -> BTreeMap<String, String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/README.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let section = text
            .split("\n## ")
            .find(|s| s.lines().next() == Some(target))
            .unwrap_or_else(|| panic!("no `## {target}` in {}", path.display()));
        let code = |cell: &str| cell.trim().trim_matches('`').to_owned();
        section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|row| {
                let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
                assert_eq!(cells.len(), 3, "{target}: a row is seed | outcome | what: {row}");
                (code(cells[0]), code(cells[1]))
            })
            .collect()
    }

    /// Runs `outcome` on every seed of `target` and compares it with the index; lists every
    /// seed that differs, has no row, or whose row has no file.
    fn check(target: &str, outcome: impl Fn(&[u8]) -> String) {
        let (seeds, index) = (seeds(target), index(target));
        let mut wrong = Vec::new();
        for (name, input) in &seeds {
            let got = outcome(input);
            match index.get(name) {
                Some(expected) if *expected == got => {}
                Some(expected) => wrong.push(format!("{name}: expected `{expected}`, got `{got}`")),
                None => {
                    wrong.push(format!("{name}: no row in fuzz/seeds/README.md (gives `{got}`)"))
                }
            }
        }
        for name in index.keys().filter(|name| !seeds.contains_key(*name)) {
            wrong.push(format!("{name}: a row in fuzz/seeds/README.md but no file"));
        }
        assert!(wrong.is_empty(), "fuzz/seeds/{target}:\n{}", wrong.join("\n"));
    }

    #[test]
    fn client_frame_seeds_give_their_expected_frames() {
        check("client_frames", |input| {
            let messages = super::client_frames(input);
            if messages.is_empty() {
                return "no text message".into();
            }
            let each =
                messages.iter().map(|[chat, stream]| format!("chat {chat}, stream {stream}"));
            each.collect::<Vec<_>>().join("; ")
        });
    }

    #[test]
    fn provider_stream_seeds_give_their_expected_completions() {
        check("provider_stream", |input| match super::provider_stream(input) {
            Ok(completion) => {
                let mut outcome = format!("text {:?}", completion.text);
                if !completion.thinking.is_empty() {
                    outcome.push_str(&format!(", thinking {:?}", completion.thinking));
                }
                for call in &completion.tool_calls {
                    outcome.push_str(&format!(", call {} {}", call.name, call.arguments));
                }
                outcome
            }
            Err(err) => format!("error {}", err.kind()),
        });
    }
}
