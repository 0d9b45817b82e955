//! How a command ended, as an exit code: shared by the command line (`cli/`) and the repair
//! phases (`repair/`), which must not depend on the command line.
//!
//! ```text
//! Ok(())                 exit 0
//! Failure::Failed(msg)   exit 1: the work failed (a transfer, a repair, a peer)
//! Failure::Usage(msg)    exit 2: the user asked for something that cannot be
//! Failure::Interrupted   exit 130: stopped by Ctrl-C, once what was in flight was drained
//! ```

/// How a command ended, as an exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2: the user asked for something that cannot be.
    Usage(String),
    /// Exit 1: the work failed.
    Failed(String),
    /// Exit 130: stopped by Ctrl-C (after draining what was in flight).
    Interrupted(String),
}

impl From<pump::Error> for Failure {
    fn from(e: pump::Error) -> Self {
        match e {
            pump::Error::Cancelled => Failure::Interrupted("interrupted".into()),
            e if e.is_usage() => Failure::Usage(e.to_string()),
            e => Failure::Failed(e.to_string()),
        }
    }
}
