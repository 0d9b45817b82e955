//! How a command ended, as an exit code: shared by the command line (`cli/`) and the repair
//! phases (`repair/`), which must not depend on the command line.
//!
//! ```text
//! Ok(())                 exit 0
//! Failure::Failed(msg)   exit 1: the work failed (a transfer, a repair, a peer)
//! Failure::Usage(msg)    exit 2: the user asked for something that cannot be
//! ```

/// How a command ended, as an exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2: the user asked for something that cannot be.
    Usage(String),
    /// Exit 1: the work failed.
    Failed(String),
}

impl From<pump::Error> for Failure {
    fn from(e: pump::Error) -> Self {
        if e.is_usage() {
            Failure::Usage(e.to_string())
        } else {
            Failure::Failed(e.to_string())
        }
    }
}
