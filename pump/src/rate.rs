//! `--rate`: a token bucket the channel's sender passes every batch through, so that a restore
//! cannot flatten a live cluster.
//!
//! ```text
//! --rate 50000 | 50k | 2M        items per second (k = 1,000, M = 1,000,000)
//! --rate 10MB/s | 512KB/s        bytes per second of keys, values and metadata (KB = 1,000)
//! ```
//!
//! The bucket fills at the rate up to a tenth of a second's worth and starts empty. A batch
//! takes as many tokens as it holds items (or bytes) and may take the bucket below zero: its
//! sender then waits until the debt is paid back at the rate, so a run of any length holds the
//! rate on average, however large its batches, and several senders share it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// What a rate counts, and how many per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Items(f64),
    Bytes(f64),
}

impl Rate {
    /// Parses `50000`, `50k`, `2M` (items/s, also with `/s`) or `10MB/s`, `512KB/s`, `1GB/s`,
    /// `100B/s` (bytes/s). Zero, negative and unknown units are usage errors.
    pub fn parse(s: &str) -> Result<Rate, Error> {
        let bad = || {
            Error::usage(format!(
                "--rate {s:?}: expected items per second (50000, 50k, 2M) or bytes per second (10MB/s, 512KB/s)"
            ))
        };
        let t = s.trim();
        let t = t.strip_suffix("/s").unwrap_or(t);
        let end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (n, unit) = t.split_at(end);
        let n: f64 = n.parse().map_err(|_| bad())?;
        let rate = match unit {
            "" => Rate::Items(n),
            "k" | "K" => Rate::Items(n * 1e3),
            "M" => Rate::Items(n * 1e6),
            "B" => Rate::Bytes(n),
            "KB" | "kB" => Rate::Bytes(n * 1e3),
            "MB" => Rate::Bytes(n * 1e6),
            "GB" => Rate::Bytes(n * 1e9),
            _ => return Err(bad()),
        };
        let per_sec = rate.per_sec();
        if !(per_sec.is_finite() && per_sec >= 1.0) {
            return Err(bad());
        }
        Ok(rate)
    }

    /// Units per second.
    pub fn per_sec(self) -> f64 {
        match self {
            Rate::Items(n) | Rate::Bytes(n) => n,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Items(n) => write!(f, "{n:.0} items/s"),
            Rate::Bytes(n) => write!(f, "{:.3} MB/s", n / 1e6),
        }
    }
}

/// The token bucket; see the module doc.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// An empty bucket filling at `rate`.
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            capacity: (rate.per_sec() / 10.0).max(1.0),
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// The rate it holds.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes the tokens of a batch of `items` items and `bytes` bytes; returns once they are
    /// paid for.
    pub async fn acquire(&self, items: u64, bytes: u64) {
        let want = match self.rate {
            Rate::Items(_) => items as f64,
            Rate::Bytes(_) => bytes as f64,
        };
        let wait = {
            let Ok(mut s) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            let (tokens, last) = *s;
            let filled = (tokens + now.duration_since(last).as_secs_f64() * self.rate.per_sec())
                .min(self.capacity);
            let left = filled - want;
            *s = (left, now);
            if left >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-left / self.rate.per_sec())
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_items_and_bytes_per_second() {
        assert_eq!(Rate::parse("50000").unwrap(), Rate::Items(50_000.0));
        assert_eq!(Rate::parse("50k").unwrap(), Rate::Items(50_000.0));
        assert_eq!(Rate::parse("2M").unwrap(), Rate::Items(2_000_000.0));
        assert_eq!(Rate::parse("1.5k/s").unwrap(), Rate::Items(1_500.0));
        assert_eq!(Rate::parse("10MB/s").unwrap(), Rate::Bytes(10_000_000.0));
        assert_eq!(Rate::parse("512KB/s").unwrap(), Rate::Bytes(512_000.0));
        for bad in ["", "0", "0k", "-5", "fast", "10 MB/s", "3T", "0.5"] {
            let e = Rate::parse(bad).unwrap_err();
            assert!(
                e.is_usage() && e.to_string().contains("--rate"),
                "{bad:?}: {e}"
            );
        }
    }

    #[tokio::test]
    async fn the_bucket_never_lets_more_than_the_rate_through_whatever_the_senders() {
        let limiter = std::sync::Arc::new(RateLimiter::new(Rate::Items(100_000.0)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    l.acquire(1000, 0).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 30,000 items at 100,000/s from an empty bucket: 0.3 s at least (the last batch's
        // sender returns once its tokens are paid for). How close it holds the rate is the
        // bench's to measure.
        let took = start.elapsed().as_secs_f64();
        assert!((0.29..3.0).contains(&took), "{took}");
    }

    #[tokio::test]
    async fn a_byte_rate_counts_bytes_not_items() {
        let limiter = RateLimiter::new(Rate::Bytes(1_000_000.0));
        let start = Instant::now();
        for _ in 0..4 {
            limiter.acquire(1_000_000, 50_000).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((0.19..3.0).contains(&took), "{took}");
    }
}
