//! Scale out: one transfer or meta2 repair split into jobs on beanstalkd, run by `pump worker`s
//! on any number of machines. The queue, the job body and the records are `pump_queue`'s (its
//! crate doc has the flow and where each job's checkpoint lives); this module is the pump's
//! side of it.
//!
//! ```text
//! plan.rs     split a transfer into vbucket ranges (-l, the source's map, gen's vbuckets) and a
//!             meta2 rebuild or check into batches of bases; put the run
//! worker.rs   the worker: slots, reserve, touch, record, delete / release / bury, Ctrl-C,
//!             reconnecting when beanstalkd goes away
//! execute.rs  one job: a transfer through crate::transfer (as `pump transfer -l RANGE`) and
//!             pump::run, resumed from the record's DCP positions; a meta2 rebuild or check of
//!             the bases not done yet; what it has done so far (Live), and whether a failure is
//!             permanent
//! ```

pub mod execute;
pub mod plan;
pub mod worker;

use std::time::Duration;

use pump_queue::{Client, QueueUrl};

use crate::failure::Failure;

/// How long any wait on beanstalkd may take (a reserve adds its own wait).
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the queue, or says why not.
pub async fn connect(url: &QueueUrl) -> Result<Client, Failure> {
    Client::connect(&url.addr(), QUEUE_TIMEOUT)
        .await
        .map_err(|e| Failure::Failed(format!("{e} (the queue {url})")))
}

/// `pump_queue::Error` as a command's failure: a bad URL or run is a usage error.
pub fn failure(e: pump_queue::Error) -> Failure {
    match e {
        pump_queue::Error::Usage(m) => Failure::Usage(m),
        e => Failure::Failed(e.to_string()),
    }
}

/// This machine's name and this process, as records name their worker: `host pid 4242`.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host} pid {}", std::process::id())
}
