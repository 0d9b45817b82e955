//! Argument parsing and dispatch. Each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cluster;
mod credentials;
mod demo;
mod meta2;
mod node;
mod recover;
mod transfer;

/// pump: move vbucket data and meta2 bases from a source to a sink, at wire speed.
#[derive(Debug, Parser)]
#[command(name = "pump", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Move every item of SOURCE into SINK (cbtransfer).
    Transfer(Box<transfer::TransferArgs>),
    /// Bring back the vbuckets a failed-over node lost, from another cluster (cbrecovery).
    Recover(Box<recover::RecoverArgs>),
    /// List the source and sink kinds and their spec syntax.
    Kinds,
    /// Run one reference node (KV + REST) in the foreground.
    Node(Box<node::NodeArgs>),
    /// A local cluster of reference nodes: up, failover.
    Cluster(Box<cluster::ClusterArgs>),
    /// The whole repair on local clusters: load, failover, recover, check.
    Demo(demo::DemoArgs),
    /// meta2 bases: check, sync, move, rebuild, generate.
    Meta2(Box<meta2::Meta2Args>),
}

pub use crate::failure::Failure;
pub use crate::kinds::registry;

/// Parses the arguments, runs the command, prints errors, returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pump: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Transfer(args) => transfer::run(*args).await,
            Command::Recover(args) => recover::run(*args).await,
            Command::Node(args) => node::run(*args).await,
            Command::Cluster(args) => cluster::run(*args).await,
            Command::Meta2(args) => meta2::run(*args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Kinds => {
                print_kinds();
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("pump: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("pump: {m}");
            ExitCode::from(1)
        }
    }
}

fn print_kinds() {
    let r = registry();
    println!("sources:");
    for k in r.sources() {
        println!("  {:<10} {}", k.name(), k.syntax());
    }
    println!("sinks:");
    for k in r.sinks() {
        println!("  {:<10} {}", k.name(), k.syntax());
    }
}
