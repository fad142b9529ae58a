//! One sweep per results directory at a time. `flock` rather than a pid file: the kernel
//! drops the lock when the holder dies, so a crashed run never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
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
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LockError::Io(dir.to_path_buf(), e))?;
        // SAFETY: flock on the fd of an open file; no memory is passed.
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
}
