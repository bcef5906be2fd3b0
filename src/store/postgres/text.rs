//! Strings as PostgreSQL can store them. Its TEXT cannot hold U+0000, which SQLite stores as
//! is and which reaches the store in ordinary ways (a tool printing a binary file, a message
//! holding `"\u0000"`, an id typed into a URL). Every string a caller passes is therefore
//! escaped on the way in and unescaped on the way out, so it round-trips exactly as on
//! SQLite: U+0000 is written as `ESC 0` and `ESC` itself as `ESC ESC`, `ESC` being U+10FFFF,
//! a noncharacter that text has no business holding. A string holding neither, that is
//! nearly every string, passes unchanged and uncopied; escaping is one-to-one, so equality
//! in SQL still compares the caller's strings.
//!
//! This file has no SQLite twin: it is the one difference of the PostgreSQL backend that is
//! not in its SQL.

use std::borrow::Cow;

use sqlx::Row;
use sqlx::postgres::PgRow;

const ESC: char = '\u{10FFFF}';

/// `text` as stored.
pub(super) fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['\0', ESC]) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\0' => escaped.extend([ESC, '0']),
            ESC => escaped.extend([ESC, ESC]),
            other => escaped.push(other),
        }
    }
    Cow::Owned(escaped)
}

/// An optional `text` as stored.
pub(super) fn escape_opt(text: Option<&str>) -> Option<Cow<'_, str>> {
    text.map(escape)
}

/// A stored string as the caller gave it.
pub(super) fn unescape(stored: String) -> String {
    if !stored.contains(ESC) {
        return stored;
    }
    let mut text = String::with_capacity(stored.len());
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        if c != ESC {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => text.push('\0'),
            // `ESC ESC`, or an `ESC` this file did not write: kept as it is.
            Some(ESC) | None => text.push(ESC),
            Some(other) => text.extend([ESC, other]),
        }
    }
    text
}

/// The string in `column` of `row`, unescaped.
pub(super) fn get(row: &PgRow, column: &str) -> Result<String, sqlx::Error> {
    row.try_get(column).map(unescape)
}

/// The optional string in `column` of `row`, unescaped.
pub(super) fn get_opt(row: &PgRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    row.try_get::<Option<String>, _>(column).map(|text| text.map(unescape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_round_trips_and_plain_ones_are_not_copied() {
        let esc = ESC.to_string();
        for text in [
            "",
            "plain",
            "a\0b",
            "\0",
            "\0\0",
            &esc,
            &format!("{esc}0"),
            &format!("x{esc}\0{esc}{esc}y"),
        ] {
            let stored = escape(text);
            assert!(!stored.contains('\0'), "{text:?} stored as {stored:?}");
            assert_eq!(unescape(stored.into_owned()), text);
        }
        assert!(matches!(escape("plain ✓"), Cow::Borrowed(_)));
        // Distinct strings stay distinct once stored, so lookups by equality still work.
        assert_ne!(escape("a\0"), escape(&format!("a{esc}0")));
    }
}
