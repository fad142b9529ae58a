//! Bounded reads of the files ivbench reads back (run directories, sweep configs): a
//! file larger than its kind can legitimately be, or one that never ends (`/dev/zero`),
//! is an error naming the file, never an unbounded allocation.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A sweep config is a few kilobytes of TOML.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// A manifest holds a fingerprint and one entry per point.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// summary.csv: one line per point.
pub const MAX_SUMMARY_BYTES: u64 = 64 << 20;
/// One probe's interval log: a few compressed histograms per point.
pub const MAX_HLOG_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is larger than {limit} bytes, more than such a file can hold; refusing to read it", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
}

/// The whole file, if it is at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let io_err = |source| ReadError::Io { path: path.to_path_buf(), source };
    let f = File::open(path).map_err(io_err)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(io_err)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), limit });
    }
    Ok(buf)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, limit: u64) -> Result<String, ReadError> {
    let bytes = read_bounded(path, limit)?;
    String::from_utf8(bytes)
        .map_err(|e| ReadError::Io { path: path.to_path_buf(), source: io::Error::new(io::ErrorKind::InvalidData, e) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_refused_at_the_limit() {
        let e = read_bounded(Path::new("/dev/zero"), 4096).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 4096, .. }), "{e}");
        assert!(e.to_string().contains("/dev/zero"), "{e}");
    }

    #[test]
    fn a_small_file_is_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        assert!(read_bounded(&p, 4).is_err());
        assert!(read_text_bounded(&d.path().join("missing"), 4).unwrap_err().to_string().contains("missing"));
    }
}
