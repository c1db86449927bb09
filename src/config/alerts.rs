//! `[alerts]`: threshold rules per org, their evaluation and delivery (docs/ALERTS.md).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Evaluate the orgs' alert rules and deliver their firings.
    pub enabled: bool,
    /// How often every rule is evaluated, in milliseconds.
    pub evaluate_interval_ms: u64,
    /// How long a webhook may take to answer, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// The wait before the first retry of a webhook, in milliseconds; it doubles at every
    /// retry, up to five minutes.
    pub webhook_backoff_ms: u64,
    /// Attempts of one webhook delivery before it is `failed`.
    pub webhook_max_attempts: u32,
    /// The most rules one org may have.
    pub max_rules_per_org: usize,
}

/// The longest wait between two attempts of a webhook.
pub const MAX_BACKOFF_MS: u64 = 300_000;

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            evaluate_interval_ms: 1_000,
            webhook_timeout_ms: 5_000,
            webhook_backoff_ms: 1_000,
            webhook_max_attempts: 10,
            max_rules_per_org: 100,
        }
    }
}

impl AlertsConfig {
    pub fn evaluate_interval(&self) -> Duration {
        Duration::from_millis(self.evaluate_interval_ms)
    }

    pub fn webhook_timeout(&self) -> Duration {
        Duration::from_millis(self.webhook_timeout_ms)
    }

    /// The wait after failed attempt number `attempt` (1 = the first).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(30);
        Duration::from_millis(
            self.webhook_backoff_ms
                .saturating_mul(factor)
                .min(MAX_BACKOFF_MS),
        )
    }

    /// What is wrong with the settings, one line each.
    pub(super) fn problems(&self, p: &mut Vec<String>) {
        let ranges: [(&str, u64, u64, u64); 4] = [
            (
                "evaluate_interval_ms",
                self.evaluate_interval_ms,
                100,
                60_000,
            ),
            ("webhook_timeout_ms", self.webhook_timeout_ms, 100, 120_000),
            (
                "webhook_backoff_ms",
                self.webhook_backoff_ms,
                10,
                MAX_BACKOFF_MS,
            ),
            (
                "webhook_max_attempts",
                u64::from(self.webhook_max_attempts),
                1,
                100,
            ),
        ];
        for (key, value, lo, hi) in ranges {
            if !(lo..=hi).contains(&value) {
                p.push(format!("alerts.{key} {value}: must be within {lo}..={hi}"));
            }
        }
        if !(1..=10_000).contains(&self.max_rules_per_org) {
            p.push(format!(
                "alerts.max_rules_per_org {}: must be within 1..=10000",
                self.max_rules_per_org
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_five_minutes() {
        let c = AlertsConfig::default();
        assert_eq!(c.backoff(1), Duration::from_secs(1));
        assert_eq!(c.backoff(2), Duration::from_secs(2));
        assert_eq!(c.backoff(4), Duration::from_secs(8));
        assert_eq!(c.backoff(40), Duration::from_millis(MAX_BACKOFF_MS));
    }

    #[test]
    fn out_of_range_settings_name_the_key_and_the_value() {
        let c = AlertsConfig {
            evaluate_interval_ms: 5,
            webhook_max_attempts: 0,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.problems(&mut p);
        assert_eq!(
            p,
            [
                "alerts.evaluate_interval_ms 5: must be within 100..=60000",
                "alerts.webhook_max_attempts 0: must be within 1..=100"
            ]
        );
    }
}
