//! What a dry run checks of a file sink's destination, writing nothing: the directory a file
//! will be created in exists (or the nearest one that does, when the sink creates the rest)
//! and this process may create files in it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An error naming `dir` unless this process may create files in it (write and search
/// permission, asked of the system with `access`, so nothing is written).
pub fn dir_takes_files(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{}: no such directory", dir.display()));
    }
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a path with a NUL byte", dir.display()))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; access only reads it.
    let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) };
    if rc != 0 {
        return Err(format!(
            "{}: cannot create files here: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// [`dir_takes_files`] of the nearest existing ancestor of `path` (itself included), for a
/// sink that creates the missing directories.
pub fn nearest_takes_files(path: &Path) -> Result<(), String> {
    let mut dir = path;
    loop {
        if dir.exists() {
            return dir_takes_files(dir);
        }
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p,
            _ => return dir_takes_files(Path::new(".")),
        }
    }
}

/// The directory a file at `path` goes in (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_takes_files_and_ones_that_do_not() {
        let d = tempfile::tempdir().unwrap();
        assert!(dir_takes_files(d.path()).is_ok());
        assert!(nearest_takes_files(&d.path().join("a/b/c")).is_ok());
        let e = dir_takes_files(&d.path().join("none")).unwrap_err();
        assert!(e.contains("no such directory"), "{e}");
        let file = d.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(dir_takes_files(&file).is_err());
        if unsafe { libc::geteuid() } != 0 {
            let ro = d.path().join("ro");
            std::fs::create_dir(&ro).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
            assert!(dir_takes_files(&ro).is_err());
        }
    }
}
