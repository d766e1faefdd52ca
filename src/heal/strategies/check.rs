//! Checks of configured settings. Every refusal is one line that names the key as it is
//! written in the configuration file (`invalid configuration: task_retry.multiplier = -2: must
//! be a finite number of at least 1`), so that a person can find and fix it.

use std::fmt::Display;

use crate::error::{Error, Result};

/// The longest configurable duration: 100 years, in milliseconds. Past it, instants computed
/// from a duration would saturate at the end of representable time.
pub const MAX_DURATION_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// The settings of one section of the configuration (`task_retry`, `limits`,
/// `gradual_degradation.levels[2]`...).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section<'a>(pub &'a str);

impl Section<'_> {
    /// The error for `key = value` of this section.
    pub fn refuse(&self, key: &str, value: impl Display, why: impl Display) -> Error {
        Error::InvalidInput(format!(
            "invalid configuration: {}.{key} = {value}: {why}",
            self.0
        ))
    }

    /// A count of at least `min`.
    pub fn at_least(&self, key: &str, value: u64, min: u64) -> Result<()> {
        if value < min {
            return Err(self.refuse(key, value, format!("must be at least {min}")));
        }
        Ok(())
    }

    /// A duration in milliseconds, from `min` to [`MAX_DURATION_MS`].
    pub fn duration(&self, key: &str, value: u64, min: u64) -> Result<()> {
        if value < min || value > MAX_DURATION_MS {
            return Err(self.refuse(
                key,
                value,
                format!("must be a duration from {min} to {MAX_DURATION_MS} ms (100 years)"),
            ));
        }
        Ok(())
    }

    /// A finite number of at least `min` (NaN and infinities are refused).
    pub fn number_at_least(&self, key: &str, value: f64, min: f64) -> Result<()> {
        if !(value.is_finite() && value >= min) {
            return Err(self.refuse(
                key,
                value,
                format!("must be a finite number of at least {min}"),
            ));
        }
        Ok(())
    }

    /// A finite number above `min` (NaN and infinities are refused).
    pub fn number_above(&self, key: &str, value: f64, min: f64) -> Result<()> {
        if !(value.is_finite() && value > min) {
            return Err(self.refuse(key, value, format!("must be a finite number above {min}")));
        }
        Ok(())
    }

    /// A number from `min` to `max`, both included (NaN is refused).
    pub fn number_within(&self, key: &str, value: f64, min: f64, max: f64) -> Result<()> {
        if !(value >= min && value <= max) {
            return Err(self.refuse(key, value, format!("must be a number from {min} to {max}")));
        }
        Ok(())
    }

    /// A number above `min` and at most `max` (NaN is refused).
    pub fn number_above_up_to(&self, key: &str, value: f64, min: f64, max: f64) -> Result<()> {
        if !(value > min && value <= max) {
            return Err(self.refuse(
                key,
                value,
                format!("must be a number above {min} and at most {max}"),
            ));
        }
        Ok(())
    }

    /// A lower setting not above the upper one it bounds (`base_ms` and `max_ms`, say).
    pub fn not_above<T: PartialOrd + Display>(
        &self,
        (low_key, low): (&str, T),
        (high_key, high): (&str, T),
    ) -> Result<()> {
        if low > high {
            return Err(self.refuse(
                low_key,
                low,
                format!("must not be above {}.{high_key} ({high})", self.0),
            ));
        }
        Ok(())
    }
}
