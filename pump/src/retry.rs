//! What to do with a status, and how long to wait before trying again.
//!
//! Transport code asks [`Verdict::of`] and [`RetryPolicy::backoff`]; it never decides itself.

use std::time::Duration;

use pump_protocol::Status;
use rand::Rng;

/// How a sink treats a status returned for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Written.
    Done,
    /// Declined harmlessly (KEY_EEXISTS on add, KEY_ENOENT on delete): counted, not fatal.
    Skip,
    /// Temporary (TMPFAIL, EBUSY, ENOMEM): back off and resend this message.
    Retry,
    /// The vbucket moved: refresh the map and re-route.
    Reroute,
    /// This key cannot be written: report it, go on, end non-zero.
    Fail,
    /// The destination refuses the credentials (or has none for this connection): retrying
    /// cannot help; the run stops, naming the flags that give them.
    Denied,
}

impl Verdict {
    /// The verdict for `status` answered to a write; `add` when the write was an ADD and
    /// `delete` when it was a DELETE.
    pub fn of(status: Status, add: bool, delete: bool) -> Verdict {
        match status {
            Status::Success => Verdict::Done,
            Status::KeyEexists if add => Verdict::Skip,
            Status::KeyEnoent if delete => Verdict::Skip,
            Status::NotMyVbucket => Verdict::Reroute,
            Status::AuthError | Status::Eaccess => Verdict::Denied,
            s if s.is_temporary() => Verdict::Retry,
            _ => Verdict::Fail,
        }
    }
}

/// Capped exponential backoff with jitter, up to `max_retry` attempts (cbtransfer's
/// max_retry, default 10, and backoff_cap, default 10 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_retry: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retry: 10,
            base: Duration::from_millis(10),
            cap: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `attempt` (1-based), or `None` when attempts are used up.
    /// The delay is drawn between half and all of `min(cap, base * 2^(attempt-1))`.
    pub fn backoff(&self, attempt: u32) -> Option<Duration> {
        if attempt == 0 || attempt > self.max_retry {
            return None;
        }
        let exp = self.base.saturating_mul(1u32 << (attempt - 1).min(20));
        let ceiling = exp.min(self.cap);
        let half = ceiling / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros().max(1) as u64);
        Some(half + Duration::from_micros(jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_design() {
        assert_eq!(Verdict::of(Status::Success, false, false), Verdict::Done);
        assert_eq!(Verdict::of(Status::KeyEexists, true, false), Verdict::Skip);
        assert_eq!(Verdict::of(Status::KeyEexists, false, false), Verdict::Fail);
        assert_eq!(Verdict::of(Status::KeyEnoent, false, true), Verdict::Skip);
        assert_eq!(Verdict::of(Status::Etmpfail, false, false), Verdict::Retry);
        assert_eq!(Verdict::of(Status::Enomem, false, false), Verdict::Retry);
        assert_eq!(Verdict::of(Status::Ebusy, false, false), Verdict::Retry);
        assert_eq!(
            Verdict::of(Status::NotMyVbucket, false, false),
            Verdict::Reroute
        );
        assert_eq!(Verdict::of(Status::E2big, false, false), Verdict::Fail);
        assert_eq!(
            Verdict::of(Status::AuthError, false, false),
            Verdict::Denied
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_stops_after_max_retry() {
        let p = RetryPolicy {
            max_retry: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(300),
        };
        assert_eq!(p.backoff(0), None);
        for _ in 0..50 {
            let d1 = p.backoff(1).unwrap();
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d5 = p.backoff(5).unwrap();
            assert!(
                d5 >= Duration::from_millis(150) && d5 <= Duration::from_millis(300),
                "{d5:?}"
            );
        }
        assert_eq!(p.backoff(6), None);
    }
}
