//! Whether the SQLite file payhook opened is still the file its path names.
//!
//! An open SQLite connection keeps writing to its file after the file is unlinked (an
//! operator's `rm -rf` of the data directory, a volume unmounted underneath, a backup
//! restored over the path): commits succeed, deliveries are acknowledged, and everything is
//! gone at the next start. So the device and inode the path named when the pool opened it
//! are remembered, and every write transaction stats the path before it commits (one `stat`
//! per transaction, about a microsecond): a path that is gone or names another file fails the
//! transaction, so nothing commits into a file nobody will read again.
//!
//! The same holds for the WAL beside the file: SQLite goes on committing into a removed
//! WAL, and the next start reads none of what was only there. So each write transaction
//! also checks that the WAL is still there; until payhook restarts (and SQLite creates a
//! new one), writes fail.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseFile {
    path: PathBuf,
    device: u64,
    inode: u64,
    /// The WAL SQLite keeps beside the file: the file's real path (SQLite follows symbolic
    /// links to place it) plus `-wal`.
    wal: PathBuf,
}

impl DatabaseFile {
    /// Remembers what `path` names now; call once the pool has the file open.
    pub fn remember(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        let mut wal = std::fs::canonicalize(path)?.into_os_string();
        wal.push("-wal");
        Ok(Self {
            path: path.to_owned(),
            device: meta.dev(),
            inode: meta.ino(),
            wal: wal.into(),
        })
    }

    /// Fails unless the path still names the file the pool opened, with its WAL beside it.
    pub fn check(&self) -> Result<(), StoreError> {
        self.check_file()?;
        self.check_wal()
    }

    fn check_file(&self) -> Result<(), StoreError> {
        let why = match std::fs::metadata(&self.path) {
            Ok(meta) if meta.dev() == self.device && meta.ino() == self.inode => return Ok(()),
            Ok(_) => "now names another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was removed",
            Err(_) => "cannot be read",
        };
        Err(StoreError::FileGone(format!(
            "the SQLite database {} {why} while payhook had it open; nothing more is written to \
             the old file (deliveries get 503 and Stripe retries them): restore the file or \
             restart payhook",
            self.path.display()
        )))
    }

    /// The WAL is checked for being there, not for being the same file: SQLite removes it
    /// when its last connection closes and creates another at the next open, which a pool
    /// whose connections all went idle may do. A transaction holds a connection in WAL mode,
    /// which keeps the file in place, so when it is missing someone removed it.
    fn check_wal(&self) -> Result<(), StoreError> {
        match std::fs::symlink_metadata(&self.wal) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::FileGone(format!(
                    "the SQLite WAL {} was removed while payhook had it open; commits would go \
                     into the removed file, which the next start does not read (deliveries get \
                     503 and Stripe retries them): restart payhook",
                    self.wal.display()
                )))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db.sqlite3");
        std::fs::write(&path, b"one").expect("write");
        std::fs::write(dir.path().join("db.sqlite3-wal"), b"frames").expect("write");
        let file = DatabaseFile::remember(&path).expect("stat");
        file.check().expect("same file");
        let replacement = dir.path().join("restored");
        std::fs::write(&replacement, b"two").expect("write");
        std::fs::rename(&replacement, &path).expect("replace");
        let err = file.check().unwrap_err().to_string();
        assert!(err.contains("now names another file"), "{err}");
        std::fs::remove_file(&path).expect("remove");
        let err = file.check().unwrap_err().to_string();
        assert!(err.contains("was removed"), "{err}");
    }

    #[test]
    fn a_removed_wal_is_noticed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db.sqlite3");
        std::fs::write(&path, b"one").expect("write");
        let wal = dir.path().join("db.sqlite3-wal");
        std::fs::write(&wal, b"frames").expect("write");
        let file = DatabaseFile::remember(&path).expect("stat");
        file.check().expect("both there");
        std::fs::remove_file(&wal).expect("remove the WAL");
        let err = file.check().unwrap_err().to_string();
        assert!(err.contains("db.sqlite3-wal was removed"), "{err}");
    }
}
