//! Progress while a run goes: a live bar when stderr is a terminal, a line every few seconds
//! otherwise (logs, CI), or a JSON object per line (`--progress json`), on stderr.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, lines otherwise.
    Auto,
    /// Lines every `interval`.
    Lines,
    /// One JSON object per line every `interval` (see [`crate::stats::Snapshot::to_json`]).
    Json,
    /// Nothing (embedders, `-q`).
    Off,
}

/// Reports until `done` is cancelled. Returns the task to await.
pub fn spawn(
    stats: Arc<Stats>,
    mode: ProgressMode,
    interval: Duration,
    done: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = matches!(mode, ProgressMode::Auto) && std::io::stderr().is_terminal();
        if matches!(mode, ProgressMode::Off) {
            done.cancelled().await;
            return;
        }
        if bar {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} items {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            loop {
                let s = stats.snapshot();
                pb.set_length(s.expected.max(s.items_read));
                pb.set_position(s.items_written + s.skipped + s.failed);
                let secs = stats.elapsed().as_secs_f64().max(1e-9);
                pb.set_message(format!(
                    "{:.0} items/s {:.1} MB/s",
                    s.items_written as f64 / secs,
                    s.bytes_written as f64 / 1e6 / secs
                ));
                tokio::select! {
                    _ = done.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            pb.finish_and_clear();
        } else {
            loop {
                tokio::select! {
                    _ = done.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                let s = stats.snapshot();
                if matches!(mode, ProgressMode::Json) {
                    eprintln!("{}", s.to_json(stats.elapsed()));
                    continue;
                }
                let secs = stats.elapsed().as_secs_f64().max(1e-9);
                eprintln!(
                    "progress: {} items written ({} read), {:.0} items/s, {:.1} MB/s, {} failed",
                    s.items_written,
                    s.items_read,
                    s.items_written as f64 / secs,
                    s.bytes_written as f64 / 1e6 / secs,
                    s.failed
                );
            }
        }
    })
}
