//! `pump`: the command line.
//!
//! ```text
//! cli/mod.rs       argument parsing (clap), exit codes, Ctrl-C
//! cli/transfer.rs  pump transfer SOURCE SINK
//! cli/recover.rs   pump recover (cbrecovery)
//! cli/backup.rs    pump info, pump examine: what a backup directory holds
//! cli/verify.rs    pump verify A B: do two item endpoints hold the same items
//! cli/metrics.rs   --metrics ADDR: Prometheus metrics of a running transfer
//! cli/meta2.rs     pump meta2 check|sync|move|rebuild|generate
//! cli/node.rs      pump node: one reference node in the foreground
//! cli/cluster.rs   pump cluster up|failover: a local cluster of reference nodes
//! cli/plan.rs      pump plan transfer|meta2|status|retry: work split into jobs on beanstalkd
//! cli/worker.rs    pump worker: run those jobs
//! repair/          the phases before and after a transfer (recover, meta2)
//! scale/           plans, the worker, one job run (scale-out on beanstalkd, pump_queue)
//! transfer.rs      TransferRequest -> source and sink: pump transfer and transfer jobs share it
//! failure.rs       Failure: how a command ended, as an exit code (cli/ and repair/ share it)
//! kinds.rs         registry(): every source and sink kind (cli/ and repair/ share it)
//! ```
//!
//! `repair/` and `scale/` never import `cli/`: they depend on `failure.rs`, `kinds.rs` and
//! `transfer.rs`.
//!
//! Exit codes: 0 success, 1 the transfer or repair failed (or `verify` found a difference), 2 a
//! usage error, 130 stopped by Ctrl-C.

mod cli;
mod failure;
mod kinds;
mod repair;
mod scale;
mod transfer;

fn main() -> std::process::ExitCode {
    cli::main()
}
