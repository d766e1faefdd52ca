//! The analytics commands as requests: their parameters as the command line and the HTTP API
//! take them (windows, thresholds and durations as text, checked here), and the documents
//! they answer with. One definition for both front ends, so that `healstore mttr --format
//! json` and `GET /v1/mttr` are the same document.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::advice::AdviceOptions;
use super::patterns::LearnReport;
use super::{
    Analytics, EffectivenessOptions, LearnOptions, MttrBy, MttrPoint, MttrTo, PredictOptions,
    Recommendation, Window, WindowInfo, parse_duration,
};
use crate::config::Config;
use crate::{Error, Result};

/// A command's time window: a length ending at `until` (default: now), or `since` to
/// `until`. The start is inclusive, the end exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowSpec {
    /// The window's length (`90s`, `15m`, `1h`, `24h`, `7d`, `2w`); not with `since`.
    pub length: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl WindowSpec {
    /// The window, at `now`, with `default` as its length when neither a length nor a start
    /// is given.
    pub fn resolve(&self, now: DateTime<Utc>, default: &str) -> Result<Window> {
        let until = self.until.unwrap_or(now);
        match (&self.length, self.since) {
            (Some(_), Some(_)) => Err(Error::InvalidInput(
                "give a window's length or its start (since), not both".into(),
            )),
            (_, Some(since)) => Window::new(since, until),
            (length, None) => {
                let length = parse_duration(length.as_deref().unwrap_or(default))?;
                Window::last(length, until)
            }
        }
    }
}

/// The default of [`Verdicts::min_results`].
pub const DEFAULT_MIN_RESULTS: i64 = 10;
/// The default of [`Verdicts::flap_threshold`].
pub const DEFAULT_FLAP_THRESHOLD: i64 = 3;

/// Thresholds of the commands that give verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdicts {
    /// Healing results a strategy needs before it gets a verdict other than `monitor` (>= 1).
    pub min_results: i64,
    /// Opens in the window from which a circuit counts as flapping (>= 1).
    pub flap_threshold: i64,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            min_results: DEFAULT_MIN_RESULTS,
            flap_threshold: DEFAULT_FLAP_THRESHOLD,
        }
    }
}

impl Verdicts {
    pub fn advice(&self) -> Result<AdviceOptions> {
        for (name, v) in [
            ("min_results", self.min_results),
            ("flap_threshold", self.flap_threshold),
        ] {
            if v < 1 {
                return Err(Error::InvalidInput(format!("{name} {v} is not at least 1")));
            }
        }
        Ok(AdviceOptions {
            effectiveness: EffectivenessOptions {
                min_results: self.min_results,
                min_results_for_trend: 10,
            },
            flap_threshold: self.flap_threshold,
        })
    }
}

/// Defaults of [`Learning`].
pub const DEFAULT_MIN_OCCURRENCES: i64 = 5;
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.7;
pub const DEFAULT_SEQUENCE_GAP: &str = "1h";
pub const DEFAULT_CORRELATION_WINDOW: &str = "10s";

/// Pattern-learning thresholds, and whether what is learned is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Learning {
    /// Occurrences a pattern needs (>= 2).
    pub min_occurrences: i64,
    /// Confidence a pattern needs (0 to 1).
    pub min_confidence: f64,
    /// Longest gap between two steps of a sequence.
    pub sequence_gap: String,
    /// How soon after A a B counts as following it.
    pub correlation_window: String,
    /// Record the learned patterns (and predictions) as events.
    pub record: bool,
}

impl Default for Learning {
    fn default() -> Self {
        Learning {
            min_occurrences: DEFAULT_MIN_OCCURRENCES,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            sequence_gap: DEFAULT_SEQUENCE_GAP.into(),
            correlation_window: DEFAULT_CORRELATION_WINDOW.into(),
            record: true,
        }
    }
}

impl Learning {
    pub fn options(&self) -> Result<LearnOptions> {
        if self.min_occurrences < 2 {
            return Err(Error::InvalidInput(format!(
                "min_occurrences {} is not at least 2",
                self.min_occurrences
            )));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(Error::InvalidInput(format!(
                "min_confidence {} is not between 0 and 1",
                self.min_confidence
            )));
        }
        Ok(LearnOptions {
            min_occurrences: self.min_occurrences,
            min_confidence: self.min_confidence,
            sequence_gap: parse_duration(&self.sequence_gap)?,
            correlation_window: parse_duration(&self.correlation_window)?,
            ..LearnOptions::default()
        })
    }
}

impl MttrTo {
    /// `recover` or `remediate`, as the command line and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            MttrTo::Recover => "recover",
            MttrTo::Remediate => "remediate",
        }
    }
}

impl std::str::FromStr for MttrTo {
    type Err = Error;
    fn from_str(s: &str) -> Result<MttrTo> {
        match s {
            "recover" => Ok(MttrTo::Recover),
            "remediate" => Ok(MttrTo::Remediate),
            _ => Err(Error::InvalidInput(format!(
                "{s:?} is not one of recover, remediate"
            ))),
        }
    }
}

impl std::str::FromStr for MttrBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<MttrBy> {
        match s {
            "failure-type" => Ok(MttrBy::FailureType),
            "strategy" => Ok(MttrBy::Strategy),
            "agent" => Ok(MttrBy::Agent),
            _ => Err(Error::InvalidInput(format!(
                "{s:?} is not one of failure-type, strategy, agent"
            ))),
        }
    }
}

/// `mttr --format json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MttrReport {
    pub window: WindowInfo,
    /// `recover` or `remediate`.
    pub to: &'static str,
    /// The bucket's length as given (`1h`).
    pub bucket: String,
    pub series: Vec<MttrPoint>,
}

/// `recommendations --format json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommendationsReport {
    pub window: WindowInfo,
    pub recommendations: Vec<Recommendation>,
}

impl Analytics {
    /// The MTTR series of `mttr`, with the window, what it measures to and the bucket.
    pub async fn mttr_report(
        &self,
        window: &Window,
        to: MttrTo,
        by: Option<MttrBy>,
        bucket: &str,
    ) -> Result<MttrReport> {
        let bucket_len = parse_duration(bucket)?;
        let series = self.mttr_series(window, to, by, bucket_len).await?;
        Ok(MttrReport {
            window: window.describe(),
            to: to.as_str(),
            bucket: bucket.to_owned(),
            series,
        })
    }

    /// The recommendations of `recommendations`, with the window.
    pub async fn recommendations_report(
        &self,
        window: &Window,
        options: &AdviceOptions,
    ) -> Result<RecommendationsReport> {
        Ok(RecommendationsReport {
            window: window.describe(),
            recommendations: self.recommendations(window, options).await?,
        })
    }

    /// The patterns of `patterns`: learned over the window, and recorded as events unless
    /// `record` is false (then `recorded` is 0).
    pub async fn patterns_report(
        &self,
        window: &Window,
        options: &LearnOptions,
        record: bool,
        now: DateTime<Utc>,
    ) -> Result<LearnReport> {
        if record {
            self.learn_and_record(window, options, now).await
        } else {
            Ok(LearnReport {
                window: window.describe(),
                patterns: self.learn_patterns(window, options).await?,
                recorded: 0,
            })
        }
    }
}

impl PredictOptions {
    /// The options of `predict`: patterns learned over `window` (which ends at the instant
    /// predicted from), the configured routes as the fallback recommendations.
    pub fn for_request(
        config: &Config,
        learning: &Learning,
        agent: Option<&str>,
        window: &Window,
    ) -> Result<PredictOptions> {
        Ok(PredictOptions {
            learn: learning.options()?,
            learn_window: window.until - window.since,
            agent: agent.map(str::to_owned),
            routes: config.route_names(),
            record: learning.record,
            ..PredictOptions::default()
        })
    }
}
