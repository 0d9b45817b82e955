//! Creating and opening files safely, for every file pump writes or reads as data.
//!
//! ```text
//! lib.rs   create_private / replace_private: a temporary file made new (O_CREAT|O_EXCL,
//!          O_NOFOLLOW, O_CLOEXEC), mode 0600, whatever the umask: never a file or a
//!          symlink planted at its name, never readable by others while it is written
//!          Perms: the mode (and owner) a finished file gets just before it takes its
//!          final name: a new file's (0666 less the umask), or another file's (the copy
//!          it replaces)
//!          open_regular: a data file opened for reading only when it is a regular file
//!          (O_NONBLOCK, then fstat: a FIFO is an error, not a read that never returns)
//! ```
//!
//! The life of a file pump writes: `replace_private(NAME.partial)` (any stale file or link
//! at that name is unlinked, never followed), write, sync, `Perms::apply`, rename (or link)
//! to NAME. A reader never sees a half-written file under its final name, and no one but the
//! writer can read or swap it while it is written.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The mode of a temporary file while it is written.
pub const PRIVATE_MODE: u32 = 0o600;

/// Creates `path`, which must not exist (not even as a dangling symlink), for reading and
/// writing, with mode 0600.
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// [`create_private`] after unlinking whatever is at `path` (a stale temporary file of an
/// earlier run, or a symlink: the link is removed, its target is not touched).
pub fn replace_private(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_private(path)
}

/// Writes `bytes` to `path` through the temporary file `tmp`: made private
/// ([`replace_private`]), written, synced, given `path`'s final mode ([`Perms::for_name`]) and
/// renamed over `path`. A reader sees the old file or the new one, never part of it.
pub fn write_replacing(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = replace_private(tmp)?;
    let written = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| Perms::for_name(path).apply(&f))
        .and_then(|_| std::fs::rename(tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// The permission bits and, optionally, the owner a finished file is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    /// Permission bits (the low 12 bits of `st_mode`).
    pub mode: u32,
    /// User and group ids; `None` leaves the file owned by whoever wrote it.
    pub owner: Option<(u32, u32)>,
}

impl Perms {
    /// What a file created the ordinary way gets: 0666 less this process's umask, owned by
    /// its writer.
    pub fn new_file() -> Perms {
        Perms {
            mode: 0o666 & !umask(),
            owner: None,
        }
    }

    /// The mode a finished file gets when it takes the name `path`: the mode of the regular
    /// file it replaces there (as writing over that file would have kept), else a new file's.
    pub fn for_name(path: &Path) -> Perms {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => Perms {
                mode: m.mode() & 0o777,
                owner: None,
            },
            _ => Perms::new_file(),
        }
    }

    /// The mode, owner and group of an existing file (`meta` from `std::fs::metadata`).
    pub fn like(meta: &Metadata) -> Perms {
        Perms {
            mode: meta.mode() & 0o7777,
            owner: Some((meta.uid(), meta.gid())),
        }
    }

    /// [`Perms::like`] the file at `path`.
    pub fn of(path: &Path) -> io::Result<Perms> {
        std::fs::metadata(path).map(|m| Perms::like(&m))
    }

    /// Gives `file` this owner (when set and different) and then this mode.
    pub fn apply(&self, file: &File) -> io::Result<()> {
        let fd = file.as_raw_fd();
        if let Some((uid, gid)) = self.owner {
            let now = file.metadata()?;
            if (now.uid(), now.gid()) != (uid, gid) {
                // SAFETY: fchown on a descriptor this function borrows; no memory involved.
                if unsafe { libc::fchown(fd, uid, gid) } != 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot give it owner {uid} and group {gid}: {e}"),
                    ));
                }
            }
        }
        // SAFETY: as above.
        if unsafe { libc::fchmod(fd, self.mode as libc::mode_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// [`Perms::apply`] to the file at `path` (a file another library created, e.g. SQLite),
    /// opened without following a symlink.
    pub fn apply_to(&self, path: &Path) -> io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        self.apply(&f)
    }
}

/// This process's umask, read from `/proc/self/status` once (0o022 where it cannot be read:
/// setting the umask to read it back would race with other threads creating files). The pump
/// never changes its umask, so a worker does not read it again for every job's files.
pub fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// Opens `path` for reading when it is a regular file (a symlink to one is followed); any
/// other kind of file is an error of kind `InvalidInput` that says what it is. The open
/// itself never blocks: a FIFO is opened non-blocking, then refused.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind_of(&meta)),
        ));
    }
    // Back to blocking reads (O_NONBLOCK means nothing to a regular file, but a descriptor
    // handed on should not surprise its next user).
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// What kind of file `meta` describes, in words.
pub fn kind_of(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_file_is_0600_whatever_the_umask_and_never_opens_a_planted_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.partial");
        let mut f = create_private(&p).unwrap();
        f.write_all(b"abc").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // A second create fails: the name exists.
        assert_eq!(
            create_private(&p).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        // A symlink planted at the name, dangling or not, is never followed.
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let link = d.path().join("y.partial");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_private(&link).is_err());
        let dangling = d.path().join("z.partial");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(create_private(&dangling).is_err());
        assert!(!d.path().join("nowhere").exists());
        // replace_private removes the link, not its target, and makes a new file.
        let mut f = replace_private(&link).unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn perms_give_the_mode_and_the_owner_of_another_file() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("model");
        std::fs::write(&model, b"m").unwrap();
        std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o640)).unwrap();
        let p = d.path().join("new");
        let f = create_private(&p).unwrap();
        let perms = Perms::of(&model).unwrap();
        assert_eq!(perms.mode, 0o640);
        perms.apply(&f).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        let model_meta = std::fs::metadata(&model).unwrap();
        assert_eq!((m.uid(), m.gid()), (model_meta.uid(), model_meta.gid()));
        // As root, another owner is given for real.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let other = Perms {
                mode: 0o604,
                owner: Some((4321, 8765)),
            };
            other.apply_to(&p).unwrap();
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4321, 8765, 0o604));
        }
        assert_eq!(Perms::new_file().mode, 0o666 & !umask());
    }

    #[test]
    fn a_file_written_through_a_temporary_name_gets_the_mode_of_the_file_it_replaces() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, path) = (d.path().join("f.tmp"), d.path().join("f"));
        std::os::unix::fs::symlink(d.path().join("elsewhere"), &tmp).unwrap();
        write_replacing(&tmp, &path, b"one").unwrap();
        assert!(!d.path().join("elsewhere").exists());
        assert!(!tmp.exists());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&path), 0o666 & !umask());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_replacing(&tmp, &path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_fifo_is_refused_at_once_and_a_regular_file_opens() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("data-0000.cbb");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo has no other precondition.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&fifo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = open_regular(d.path()).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file).is_ok());
    }
}
