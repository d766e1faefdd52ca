//! `serve`'s options on who may call it and how much (see `healstore::serve::guard`): tokens,
//! `--insecure-no-auth`, and the limits on bodies, time and concurrent requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use healstore::serve::guard::{
    DEFAULT_MAX_CONCURRENT, Guard, Limits, TOKENS_ENV, Tokens, check_exposure,
};

#[derive(Debug, Clone, clap::Args)]
pub struct GuardArgs {
    /// Bearer tokens, one `ROLE TOKEN` a line (ROLE `read` or `write`); the file must be
    /// readable by its owner only. Without it, tokens are taken from HEALSTORE_TOKENS when
    /// set (same format, entries also separated by commas).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve without tokens on an address other hosts can reach (refused otherwise).
    #[arg(long, conflicts_with = "token_file")]
    pub insecure_no_auth: bool,
    /// The longest request body, in bytes or with a unit (KiB, MiB); JSON Lines bodies are
    /// read a line at a time and not limited in total.
    #[arg(long, value_name = "SIZE", default_value = "2MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// How long a request may take until its answer begins (then 503), and how long a JSON
    /// Lines upload may stay silent.
    #[arg(long, value_name = "WAIT", default_value = "30s", value_parser = super::parse_wait)]
    pub request_timeout: Duration,
    /// Requests served at once (an open event stream holds one); past it, 503 at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENT, value_parser = parse_count)]
    pub max_concurrent: usize,
}

impl GuardArgs {
    /// The tokens (from the file, else the environment), the exposure check for `listen`, and
    /// the limits, as one guard.
    pub fn guard(&self, listen: SocketAddr) -> anyhow::Result<Guard> {
        let env_set = std::env::var_os(TOKENS_ENV).is_some();
        let tokens = match &self.token_file {
            Some(_) if env_set => anyhow::bail!(
                "tokens are given both by --token-file and {TOKENS_ENV}: give one of them"
            ),
            Some(path) => Some(Tokens::read_file(path)?),
            None => Tokens::from_env()?,
        };
        if tokens.is_some() && self.insecure_no_auth {
            anyhow::bail!("--insecure-no-auth and tokens ({TOKENS_ENV}) contradict each other");
        }
        check_exposure(listen, tokens.is_some(), self.insecure_no_auth)?;
        Ok(Guard::new(
            tokens,
            Limits {
                max_body: self.max_body,
                request_timeout: self.request_timeout,
                max_concurrent: self.max_concurrent,
            },
        ))
    }
}

/// A count of at least one.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a count of at least 1")),
    }
}

/// A size: a whole number of bytes, or with a unit (`KiB`, `MiB`; `K`, `M`, `KB`, `MB` taken
/// as the same powers of two). At least 1 KiB, so that every request's own JSON fits.
fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("{s:?} is not a size; use bytes or a unit: 65536, 512KiB, 2MiB");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| bad())?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(scale).ok_or_else(bad)?;
    if bytes < 1024 {
        return Err(format!("{s:?} is too small: a body limit is at least 1KiB"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(
            parse_size("2MiB"),
            Ok(healstore::serve::guard::DEFAULT_MAX_BODY)
        );
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("10").is_err());
        assert!(parse_size("2TB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
