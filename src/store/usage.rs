//! The usage ledger's types: what a report asks for and what it answers, and costs as the
//! backends store them (billionths, so sums are exact).

use serde::Serialize;

use crate::conversation::Usage;

/// What usage is summed by in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    User,
    Model,
    /// The UTC date (`YYYY-MM-DD`).
    Day,
}

/// Which usage a report sums.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// Epoch milliseconds, inclusive.
    pub from: i64,
    /// Epoch milliseconds, exclusive.
    pub to: i64,
    /// Only this user's.
    pub user: Option<String>,
    pub group_by: UsageGroup,
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageLine {
    /// The user, the model or the date the line sums.
    pub key: String,
    /// Turns that used tokens.
    pub turns: u64,
    pub usage: Usage,
}

/// A cost in billionths, as stored (exact sums).
pub(crate) fn nanos(cost: Option<f64>) -> Option<i64> {
    cost.map(|c| (c * 1e9).round() as i64)
}

/// A stored cost in the prices' currency.
pub(crate) fn from_nanos(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}
