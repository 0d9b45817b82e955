//! `pump`: the command line.
//!
//! ```text
//! cli/mod.rs       argument parsing (clap), exit codes, Ctrl-C
//! cli/transfer.rs  pump transfer SOURCE SINK
//! cli/recover.rs   pump recover (cbrecovery)
//! cli/meta2.rs     pump meta2 check|sync|move|rebuild|generate
//! cli/node.rs      pump node: one reference node in the foreground
//! cli/cluster.rs   pump cluster up|failover: a local cluster of reference nodes
//! repair/          the phases before and after a transfer (recover, meta2)
//! ```
//!
//! Exit codes: 0 success, 1 the transfer or repair failed, 2 a usage error.

mod cli;
mod repair;

fn main() -> std::process::ExitCode {
    cli::main()
}
