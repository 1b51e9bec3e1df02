//! Small durable-file helpers shared by the store, the node, the auditor and
//! the CLI: atomic replacement, directory fsync, secret files, and the
//! clock entry timestamps are read from.

use crate::error::{LedgerError, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub use crate::store::{fsync_dir, write_atomic};

/// Creates `path` (which must not exist) with mode 0600 holding `bytes`,
/// durably: the file and its directory are fsynced.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(LedgerError::io("create", path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(LedgerError::io("write", path))?;
    fsync_dir(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Reads a secret file, refusing one that group or others may read (the
/// error says how to fix it).
pub fn read_secret(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(LedgerError::io("read", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LedgerError::io("read key file", path)(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("mode {mode:04o}; it must not be readable by group or others (chmod 600)"),
        )));
    }
    fs::read_to_string(path).map_err(LedgerError::io("read", path))
}

/// Unix time in nanoseconds (0 before 1970): the clock a writer stamps
/// entries with. Pure code never calls it; time is an argument there.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Makes everything written on `dir`'s file system durable: one `syncfs`
/// (cheaper than an fsync per file when a run writes thousands).
pub fn syncfs(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir).map_err(LedgerError::io("open", dir))?;
    // SAFETY: syncfs on a descriptor this function owns for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(LedgerError::io("syncfs", dir)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Whether some process holds the `flock` of `dir/LOCK` right now (see
/// [`lock_dir`]): a liveness check that cannot lie about a dead process,
/// since the kernel drops the lock with its last descriptor. `false` when
/// the lock file does not exist. Takes the lock for an instant when free.
pub fn is_locked(dir: &Path) -> Result<bool> {
    let path = dir.join(crate::store::LOCK_FILE);
    let f = match std::fs::OpenOptions::new().read(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(LedgerError::io("open", &path)(e)),
    };
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        // Free (dropping `f` releases it).
        return Ok(false);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        return Ok(true);
    }
    Err(LedgerError::io("lock", &path)(err))
}

/// Takes the exclusive `flock` on `dir/LOCK` (created if missing), held
/// while the returned file is open: one writer per directory (a log, an
/// auditor's or a witness's state). [`LedgerError::Locked`] if another
/// process holds it.
pub fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(crate::store::LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(LedgerError::io("open", &path))?;
    use std::os::fd::AsRawFd;
    // A lock can be held for a moment by a process that is not a writer: a
    // child forked (before its exec) while we held an earlier descriptor of
    // this file, or a writer that is just exiting. Wait briefly before
    // calling the log busy.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);
    let start = std::time::Instant::now();
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(f);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock {
            return Err(LedgerError::io("lock", &path)(err));
        }
        if start.elapsed() >= PATIENCE {
            return Err(LedgerError::Locked(dir.to_path_buf()));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_0600_and_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        write_secret(&p, b"s3cret").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret(&p).unwrap(), "s3cret");
        assert!(write_secret(&p, b"other").is_err());
        assert_eq!(read_secret(&p).unwrap(), "s3cret");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
