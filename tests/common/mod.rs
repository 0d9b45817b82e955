//! Helpers shared by the end-to-end tests: run the pump binary, read a CSV it wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `pump ARGS` and returns its output.
pub fn pump(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pump"))
        .args(args)
        .arg("-q")
        .output()
        .expect("the pump binary runs")
}

/// Runs `pump transfer SOURCE SINK EXTRA...`, asserting success.
pub fn transfer_ok(source: &str, sink: &str, extra: &[&str]) {
    let mut args = vec!["transfer", source, sink];
    args.extend_from_slice(extra);
    let out = pump(&args);
    assert!(
        out.status.success(),
        "pump {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rows of a CSV file, header first.
pub fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .expect("the csv file opens");
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Every `data-*.cbb` (or other file named `name`) under `dir`, sorted.
pub fn files_named(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()).is_some_and(pred) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The data files under a backup directory.
pub fn data_files(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, &|n| n.starts_with("data-") && n.ends_with(".cbb"))
}
