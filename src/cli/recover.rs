//! `pump recover [options] restore_from restore_to` (cbrecovery's options).

use clap::Args;
use pump::VbucketSet;

use super::credentials::CredentialArgs;
use super::{print_out, Failure};
use crate::repair::recover::{recover, RecoverError, RecoverReport, RecoverRequest};

/// cbrecovery's options.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The cluster to read from, e.g. http://10.1.2.3:8091
    pub restore_from: String,
    /// The cluster to repair, e.g. http://10.3.4.5:8091
    pub restore_to: String,
    /// Source bucket.
    #[arg(short = 'b', long = "bucket-source", default_value = "default")]
    pub bucket_source: String,
    /// Destination bucket.
    #[arg(short = 'B', long = "bucket-destination", default_value = "default")]
    pub bucket_destination: String,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// Only these vbuckets, e.g. 500,612,700-712.
    #[arg(short = 'l', long = "vbucket-list")]
    pub vbucket_list: Option<String>,
    /// Add this node to the destination for the recovered data.
    #[arg(short = 'a', long = "add-node")]
    pub add_node: Option<String>,
    /// The failed-over node it replaces.
    #[arg(short = 'r', long = "remove-node")]
    pub remove_node: Option<String>,
    /// Show what is missing and the plan; change nothing.
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,
    /// More output.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Vbuckets transferred at once (each one stream).
    #[arg(short = 't', long = "threads", default_value_t = 4)]
    pub threads: usize,
    /// Write what happened as JSON on standard output (nothing else there).
    #[arg(long)]
    pub json: bool,
}

/// Runs the recovery and prints its report.
pub async fn run(args: RecoverArgs) -> Result<(), Failure> {
    let req = RecoverRequest {
        from: args.restore_from.clone(),
        to: args.restore_to.clone(),
        bucket_source: args.bucket_source,
        bucket_destination: args.bucket_destination,
        source_auth: args.credentials.source()?,
        dest_auth: args.credentials.dest()?,
        vbuckets: args
            .vbucket_list
            .as_deref()
            .map(VbucketSet::parse)
            .transpose()?,
        add_node: args.add_node,
        remove_node: args.remove_node,
        dry_run: args.dry_run,
        verbose: args.verbose,
        threads: args.threads.max(1),
    };
    let started = std::time::Instant::now();
    let report = recover(req).await.map_err(|e| match e {
        RecoverError::Usage(m) => Failure::Usage(m),
        other => Failure::Failed(other.to_string()),
    })?;
    if args.json {
        return print_out(&format!(
            "{}\n",
            report_json(&report, args.dry_run, started.elapsed().as_secs_f64())
        ));
    }
    if report.missing.is_empty() {
        eprintln!(
            "nothing missing on {}: no vbucket to recover",
            pump::spec::redact(&args.restore_to)
        );
        return Ok(());
    }
    if args.dry_run {
        eprintln!(
            "dry run ({}): {} vbuckets missing, nothing changed",
            report.dialect,
            report.missing.len()
        );
        return Ok(());
    }
    print_report(&report, started.elapsed().as_secs_f64(), usize::MAX);
    Ok(())
}

/// The report as one JSON object: the vbuckets missing, each one recovered, and the totals
/// split by mutations, deletions and expirations.
fn report_json(report: &RecoverReport, dry_run: bool, secs: f64) -> serde_json::Value {
    let mut ops = [pump::OpCounts::default(); 3];
    let (mut items, mut bytes, mut skipped, mut failed) = (0, 0, 0, 0);
    for r in &report.recovered {
        for (total, one) in ops.iter_mut().zip(r.counts.ops.iter()) {
            total.received += one.received;
            total.written += one.written;
            total.skipped += one.skipped;
            total.failed += one.failed;
        }
        items += r.items;
        bytes += r.bytes;
        skipped += r.counts.skipped;
        failed += r.counts.failed;
    }
    let op = |c: &pump::OpCounts| serde_json::json!({"received": c.received, "written": c.written, "skipped": c.skipped, "failed": c.failed});
    serde_json::json!({
        "dialect": report.dialect,
        "dry_run": dry_run,
        "missing": report.missing,
        "recovered": report.recovered.iter().map(|r| serde_json::json!({
            "vbucket": r.vbucket, "node": r.node, "items": r.items, "bytes": r.bytes, "seconds": r.seconds,
        })).collect::<Vec<_>>(),
        "items_written": items,
        "bytes_written": bytes,
        "skipped": skipped,
        "failed": failed,
        "mutations": op(&ops[0]),
        "deletions": op(&ops[1]),
        "expirations": op(&ops[2]),
        "seconds": secs,
    })
}

/// The per-vbucket table (its first `rows` lines) and the totals, on stderr.
pub fn print_report(report: &RecoverReport, secs: f64, rows: usize) {
    eprintln!(
        "{:>8}  {:<22} {:>10} {:>12} {:>12}",
        "vbucket", "into", "items", "bytes", "items/s"
    );
    for r in report.recovered.iter().take(rows) {
        eprintln!(
            "{:>8}  {:<22} {:>10} {:>12} {:>12.0}",
            r.vbucket,
            r.node,
            r.items,
            r.bytes,
            r.items as f64 / r.seconds.max(1e-9)
        );
    }
    if report.recovered.len() > rows {
        eprintln!("     ... {} more vbuckets", report.recovered.len() - rows);
    }
    let items: u64 = report.recovered.iter().map(|r| r.items).sum();
    let bytes: u64 = report.recovered.iter().map(|r| r.bytes).sum();
    eprintln!(
        "{} vbuckets recovered ({}), {items} items, {bytes} bytes in {secs:.2} s: {:.0} items/s, {:.1} MB/s",
        report.recovered.len(),
        report.dialect,
        items as f64 / secs.max(1e-9),
        bytes as f64 / 1e6 / secs.max(1e-9)
    );
}
