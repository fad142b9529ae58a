//! Write-to-temp-then-rename, so that readers (and an interrupted run) only ever see
//! whole files. The temporary file is created exclusively under a random name (never
//! through a link planted in a shared directory) and removed on every error path.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // O_EXCL with a random name; dropped (and so deleted) if anything below fails.
    let mut tmp = tempfile::Builder::new().prefix(".ivbench-").suffix(".tmp").tempfile_in(dir)?;
    // tempfile creates 0600; results, reports and sites are for reading by others.
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    // rename(2) replaces a link at `path` itself; it never writes through it.
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(names(d.path()), vec!["a.txt"]);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = d.path().join("summary.csv");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
    }

    #[test]
    fn predictable_temp_names_planted_as_links_are_not_used() {
        // The old scheme wrote `.<name>.tmp.<pid>`; a link planted there must stay untouched.
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let planted = d.path().join(format!(".manifest.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&d.path().join("manifest.json"), b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x");
        // A directory at the target makes the final rename fail after the data was written.
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"").unwrap();
        assert!(write_atomic(&target, b"data").is_err());
        assert_eq!(names(d.path()), vec!["x"], "a temporary file was left behind");
    }
}
