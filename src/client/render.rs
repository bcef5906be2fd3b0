//! How `parley chat` writes to the terminal: answers as they stream, tool calls and their
//! results as short dim lines, notices on lines of their own. Text from the server is
//! shown, never obeyed: control characters (escape sequences a model or a tool could emit
//! to retitle the terminal, rewrite the screen or set the clipboard) are replaced.

use std::io::Write;

use serde_json::Value;

/// How a line looks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Answer text.
    Plain,
    /// Notices, tool results, thinking.
    Dim,
    /// Tool calls.
    Tool,
    /// Approval questions.
    Ask,
    /// Errors.
    Error,
}

impl Style {
    fn ansi(self) -> &'static str {
        match self {
            Style::Plain => "",
            Style::Dim => "\x1b[2m",
            Style::Tool => "\x1b[36m",
            Style::Ask => "\x1b[1;33m",
            Style::Error => "\x1b[31m",
        }
    }
}

/// The terminal.
pub(crate) struct Screen {
    out: Box<dyn Write + Send>,
    color: bool,
    /// Whether a person types the input on this terminal (which echoes it).
    interactive: bool,
    /// Whether the cursor is at the start of a line.
    line_start: bool,
    /// The style of the text being written, so a streamed run is styled once.
    current: Style,
    /// Whether a question (the prompt, an approval) is the last thing on the screen.
    asking: bool,
}

/// How many lines of a tool's output are shown.
const OUTPUT_LINES: usize = 3;
/// How many characters of a line of tool output or arguments are shown.
const LINE_CHARS: usize = 160;

impl Screen {
    /// A screen writing to `out`, in color when `color`; `interactive` when a person types
    /// the input on this terminal.
    pub(crate) fn new(out: Box<dyn Write + Send>, color: bool, interactive: bool) -> Self {
        Self { out, color, interactive, line_start: true, current: Style::Plain, asking: false }
    }

    /// Whether a person types the input on this terminal.
    pub(crate) fn interactive(&self) -> bool {
        self.interactive
    }

    /// Writes server text as it streams, in `style`.
    pub(crate) fn stream(&mut self, style: Style, text: &str) {
        let text = shown(text);
        if text.is_empty() {
            return;
        }
        self.style(style);
        self.asking = false;
        self.line_start = text.ends_with('\n');
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Ends the line being written, if any.
    pub(crate) fn end_line(&mut self) {
        if !self.line_start {
            self.style(Style::Plain);
            let _ = self.out.write_all(b"\n");
            self.line_start = true;
        }
        let _ = self.out.flush();
    }

    /// Writes `text` (server text or not) as whole lines of their own, in `style`.
    pub(crate) fn line(&mut self, style: Style, text: &str) {
        self.end_line();
        self.stream(style, text);
        self.end_line();
    }

    /// Asks something and leaves the cursor after the question.
    pub(crate) fn ask(&mut self, style: Style, question: &str) {
        self.end_line();
        self.stream(style, question);
        self.style(Style::Plain);
        self.line_start = false;
        self.asking = true;
        let _ = self.out.flush();
    }

    /// Whether a question is the last thing on the screen, still to be answered.
    pub(crate) fn asking(&self) -> bool {
        self.asking
    }

    /// The question on the screen is no longer the one to answer: the next one is asked
    /// on a line of its own.
    pub(crate) fn reopen(&mut self) {
        self.asking = false;
    }

    /// A line was typed: the question on the screen has its answer.
    pub(crate) fn answered(&mut self) {
        // A terminal echoed the newline that ended the answer; piped input shows nothing.
        self.line_start = self.interactive || self.line_start;
        self.asking = false;
    }

    /// A tool call: its name and arguments on one line.
    pub(crate) fn tool_call(&mut self, name: &str, args: &Value) {
        self.line(Style::Tool, &format!("⚙ {name} {}", one_line(&compact(args))));
    }

    /// A tool's result: how it went and the first lines of its output.
    pub(crate) fn tool_result(&mut self, frame: &Value) {
        let output = frame["output"].as_str().unwrap_or_default();
        let (mark, style) =
            if frame["is_error"] == true { ("✗", Style::Error) } else { ("↳", Style::Dim) };
        let lines: Vec<&str> = output.lines().filter(|line| !line.trim().is_empty()).collect();
        let took = frame["duration_ms"].as_u64().map(|ms| format!(" {ms} ms")).unwrap_or_default();
        let name = frame["name"].as_str().unwrap_or("tool");
        let mut text = format!("  {mark} {name}{took}");
        for line in lines.iter().take(OUTPUT_LINES) {
            text.push_str("\n    ");
            text.push_str(&one_line(line));
        }
        if lines.len() > OUTPUT_LINES {
            text.push_str(&format!("\n    … {} more lines", lines.len() - OUTPUT_LINES));
        }
        self.line(style, &text);
    }

    fn style(&mut self, style: Style) {
        if style != self.current {
            if self.color {
                let _ = self.out.write_all(b"\x1b[0m");
                let _ = self.out.write_all(style.ansi().as_bytes());
            }
            self.current = style;
        }
    }
}

/// `text` with every control character but newline and tab replaced, so nothing the
/// server sends can drive the terminal, and with the invisible characters that reorder or
/// hide text replaced too, so what is shown (an approval's command) is what it says.
pub(crate) fn shown(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '\r')
        .map(|c| {
            if (c.is_control() && c != '\n' && c != '\t') || deceptive(c) { '\u{fffd}' } else { c }
        })
        .collect()
}

/// Bidirectional overrides and isolates, and invisible spaces and joiners (not the
/// zero-width joiners emoji and scripts need, nor the plain direction marks).
fn deceptive(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{061c}')
}

/// A JSON value on one line.
pub(crate) fn compact(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `text` cut to one line of at most [`LINE_CHARS`] characters.
fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut cut: String = line.chars().take(LINE_CHARS).collect();
    if cut.len() < line.len() || text.lines().nth(1).is_some() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        let hostile = "ok\x1b]0;pwned\x07 \x1b[2J\u{9b}31m\r\nnext\tcol";
        let text = shown(hostile);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{text:?}");
        assert_eq!(text, "ok\u{fffd}]0;pwned\u{fffd} \u{fffd}[2J\u{fffd}31m\nnext\tcol");
    }

    #[test]
    fn text_cannot_hide_or_reorder_what_it_shows() {
        // "rm -rf ~" written backwards behind a right-to-left override reads as harmless.
        let text = shown("ls \u{202e}~ fr- mr\u{202c} x\u{200b}y\u{2066}z");
        assert_eq!(text, "ls \u{fffd}~ fr- mr\u{fffd} x\u{fffd}y\u{fffd}z");
        // Emoji joined by zero-width joiners stay whole.
        assert_eq!(shown("👩\u{200d}💻"), "👩\u{200d}💻");
    }

    #[test]
    fn long_and_many_lines_are_cut() {
        assert_eq!(one_line("a\nb"), "a…");
        assert_eq!(one_line(&"x".repeat(200)).chars().count(), LINE_CHARS + 1);
        assert_eq!(one_line("short"), "short");
    }
}
