//! What the end-to-end benches share.

use std::path::PathBuf;
use std::process::Command;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace")
        .to_path_buf()
}

/// The `pump` binary the benches run: `$PUMP_BIN`, else `target/release/pump`, built (or
/// brought up to date, a no-op when it is) first, so that a bench never measures a stale one.
pub fn pump_binary() -> PathBuf {
    if let Ok(p) = std::env::var("PUMP_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--bin", "pump"])
        .current_dir(workspace_root())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "cannot build the pump binary; set PUMP_BIN to a built one"
    );
    target.join("release").join("pump")
}
