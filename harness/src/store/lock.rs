//! One sweep per results directory at a time. `flock` rather than a pid file: the kernel
//! drops the lock when the holder dies, so a crashed run never leaves a stale lock.
//!
//! The lock file lives in a directory other users may be able to write, so it is opened
//! without following a link, without blocking on a FIFO, never truncated, and must turn
//! out to be a regular file: a planted link or device makes the run refuse, not write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const LOCK_NAME: &str = ".ivbench.lock";

#[derive(Debug)]
pub struct DirLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("results directory {0} is in use by another ivbench run (lock held on {1}); wait for it to finish or use another --out")]
    Busy(PathBuf, PathBuf),
    #[error("cannot lock results directory {0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("refusing to use lock file {0}: it is {1}, not a regular file (planted by someone?); remove it or use another --out")]
    NotAFile(PathBuf, &'static str),
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_NAME);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            let ft = meta.file_type();
            let kind = if ft.is_symlink() {
                Some("a symbolic link")
            } else if ft.is_fifo() {
                Some("a FIFO")
            } else if ft.is_dir() {
                Some("a directory")
            } else if !ft.is_file() {
                Some("a device or socket")
            } else {
                None
            };
            if let Some(kind) = kind {
                return Err(LockError::NotAFile(path, kind));
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            // A link swapped in after the check above still fails here (ELOOP), and a
            // FIFO cannot block the open.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => LockError::NotAFile(path.clone(), "a symbolic link"),
                _ => LockError::Io(dir.to_path_buf(), e),
            })?;
        match file.metadata() {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err(LockError::NotAFile(path, "not a regular file")),
            Err(e) => return Err(LockError::Io(dir.to_path_buf(), e)),
        }
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                LockError::Busy(dir.to_path_buf(), path)
            } else {
                LockError::Io(dir.to_path_buf(), err)
            });
        }
        Ok(DirLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_dir_is_refused_until_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(d.path()).unwrap();
        assert!(matches!(DirLock::acquire(d.path()), Err(LockError::Busy(..))));
        drop(first);
        DirLock::acquire(d.path()).unwrap();
    }

    #[test]
    fn a_planted_link_at_the_lock_name_is_refused_and_its_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join(LOCK_NAME)).unwrap();
        let e = DirLock::acquire(d.path()).unwrap_err();
        assert!(matches!(e, LockError::NotAFile(_, "a symbolic link")), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A dangling link (the target does not exist yet) must not create the target.
        let d2 = tempfile::tempdir().unwrap();
        let target = d2.path().join("created-through-link");
        std::os::unix::fs::symlink(&target, d2.path().join(LOCK_NAME)).unwrap();
        assert!(DirLock::acquire(d2.path()).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn a_planted_fifo_does_not_block() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LOCK_NAME);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(DirLock::acquire(d.path()), Err(LockError::NotAFile(_, "a FIFO"))));
    }
}
