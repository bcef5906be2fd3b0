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

/// One report line as a backend reads it: the key and the sums (`None` for a sum of none).
pub(crate) struct Sums {
    /// The user, the model, or the day's number since 1970-01-01.
    pub key: String,
    /// Distinct turns.
    pub turns: Option<i64>,
    /// Input tokens, cached ones included.
    pub prompt: Option<i64>,
    pub completion: Option<i64>,
    /// Input tokens read from a provider's cache.
    pub cached: Option<i64>,
    /// The cost in billionths; `None` when no call had prices.
    pub cost_nanos: Option<i64>,
}

impl Sums {
    /// The line, its key a date when it is a day's number.
    pub(crate) fn into_line(self, group: UsageGroup) -> UsageLine {
        let count = |sum: Option<i64>| sum.unwrap_or(0).max(0) as u64;
        let (prompt, completion) = (count(self.prompt), count(self.completion));
        let key = match (group, self.key.parse::<i64>()) {
            (UsageGroup::Day, Ok(day)) => crate::clock::date(day),
            _ => self.key,
        };
        UsageLine {
            key,
            turns: count(self.turns),
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
                cached_tokens: count(self.cached),
                cost: self.cost_nanos.map(from_nanos),
            },
        }
    }
}

/// A token count as stored (past `i64::MAX`, which no real call reaches, it saturates).
pub(crate) fn stored_count(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}

/// A cost in billionths, as stored (exact sums).
pub(crate) fn nanos(cost: Option<f64>) -> Option<i64> {
    cost.map(|c| (c * 1e9).round() as i64)
}

/// A stored cost in the prices' currency.
pub(crate) fn from_nanos(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}
