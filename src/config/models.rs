//! `[models.NAME]` (a model's fallback chain and prices) and `[budget]` (what a user may
//! spend a month). Which models exist is the providers' business (`[providers.NAME]`);
//! the registry in `providers/` checks that these tables name them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::list_or_string;

/// Settings of one model, by the name clients ask for it with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Models tried in order when this one is unavailable, rate limited or times out
    /// before it answers. From the environment, a comma-separated list.
    #[serde(deserialize_with = "list_or_string")]
    pub fallback: Vec<String>,
    /// Price of a million input tokens (in the currency budgets are counted in).
    pub input_price: Option<f64>,
    /// Price of a million output tokens.
    pub output_price: Option<f64>,
    /// Price of a million input tokens read from the provider's prompt cache; unset: the
    /// input price.
    pub cached_input_price: Option<f64>,
}

impl ModelConfig {
    /// Refuses prices that are not prices, naming the model.
    pub(super) fn validate(&self, name: &str) -> Result<(), String> {
        let prices = [
            ("input_price", self.input_price),
            ("output_price", self.output_price),
            ("cached_input_price", self.cached_input_price),
        ];
        for (key, price) in prices {
            // A bound no real price nears, so no sum of costs can overflow.
            if price.is_some_and(|p| !(0.0..=1_000_000.0).contains(&p)) {
                return Err(format!("models.{name}.{key} must be a price from 0 to 1000000"));
            }
        }
        Ok(())
    }
}

/// Monthly spending limits, in the currency of the models' prices. A user who has spent
/// their budget this calendar month (UTC) cannot start turns until the next.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetConfig {
    /// Every user's monthly budget (0: none).
    pub monthly: f64,
    /// Budgets of particular users, by user name, in place of `monthly` (0: none).
    pub users: BTreeMap<String, f64>,
}

impl BudgetConfig {
    /// The monthly budget of `user`, if they have one.
    pub fn of(&self, user: &str) -> Option<f64> {
        let budget = self.users.get(user).copied().unwrap_or(self.monthly);
        (budget > 0.0).then_some(budget)
    }

    /// Refuses budgets that are not amounts.
    pub(super) fn validate(&self) -> Result<(), String> {
        let all = std::iter::once(("monthly".to_owned(), self.monthly))
            .chain(self.users.iter().map(|(user, b)| (format!("users.{user}"), *b)));
        for (key, budget) in all {
            if !budget.is_finite() || budget < 0.0 {
                return Err(format!("budget.{key} must be a number of 0 or more"));
            }
        }
        Ok(())
    }
}
