//! What users spent: usage reports from the store's ledger, and the monthly budget that
//! admission checks before a turn is accepted.

use std::time::Duration;

use serde::Serialize;

use super::{Inner, Runtime, RuntimeError};
use crate::store::{StoreError, UsageLine, UsageQuery};

/// A user's monthly budget and how much of it is spent.
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// The budget of a calendar month (UTC).
    pub limit: f64,
    /// Spent since the month began.
    pub spent: f64,
    /// When the next month begins (epoch milliseconds).
    #[serde(skip)]
    pub resets_at: i64,
    /// When the next month begins (RFC 3339).
    #[serde(rename = "resets_at")]
    pub resets: String,
}

impl Budget {
    /// Whether nothing is left of it.
    pub fn spent(&self) -> bool {
        self.spent >= self.limit
    }
}

impl Inner {
    /// The user's monthly budget, if they have one, with what they spent this month (every
    /// node's turns: the ledger is in the shared store).
    pub(super) async fn budget_of(&self, user: &str) -> Result<Option<Budget>, StoreError> {
        let Some(limit) = self.budget.of(user) else {
            return Ok(None);
        };
        let (month, next) = crate::clock::month_of(crate::clock::now_ms());
        let spent = self.store.spent_since(user, month).await?;
        Ok(Some(Budget { limit, spent, resets_at: next, resets: crate::clock::rfc3339(next) }))
    }
}

impl Runtime {
    /// Usage summed as `query` asks, from the ledger (which outlives sessions).
    pub async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageLine>, RuntimeError> {
        Ok(self.inner.store.usage_report(query).await?)
    }

    /// The user's monthly budget, if they have one, with what they spent this month.
    pub async fn budget(&self, user: &str) -> Result<Option<Budget>, RuntimeError> {
        Ok(self.inner.budget_of(user).await?)
    }

    /// Refuses a new turn of a user who has spent their budget, until the month ends.
    pub(super) async fn check_budget(&self, user: &str) -> Result<(), RuntimeError> {
        match self.budget(user).await? {
            Some(budget) if budget.spent() => {
                let left = budget.resets_at - crate::clock::now_ms();
                Err(RuntimeError::BudgetExceeded {
                    spent: budget.spent,
                    budget: budget.limit,
                    retry_after: Duration::from_millis(left.max(1000) as u64),
                })
            }
            _ => Ok(()),
        }
    }
}
