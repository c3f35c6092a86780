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
//! The WAL beside the file is found the same way when a write's fsync opens it (see
//! [`DatabaseFile::sync_wal`]): a WAL removed underneath fails every durable write until
//! payhook restarts and SQLite starts a new one.

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

    /// Makes every frame the WAL holds durable (`fdatasync` of the `-wal` file): what a
    /// `synchronous = FULL` commit does inside the write lock, done after it by
    /// [`super::Pool::write_with`]. Call it holding a connection in WAL mode, which keeps the
    /// WAL file in place: SQLite removes it only when its last connection closes.
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        let synced = std::fs::File::open(&self.wal).and_then(|wal| wal.sync_data());
        synced.map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                // SQLite goes on writing to the removed file, and the next start has none
                // of what only the WAL held.
                "was removed while payhook had it open; commits cannot be made durable \
                 (deliveries get 503 and Stripe retries them): restart payhook"
                    .to_owned()
            } else {
                format!("cannot be synced: {e}")
            };
            StoreError::Sync(format!("the SQLite WAL {} {why}", self.wal.display()))
        })
    }

    /// Fails unless the path still names the file the pool opened.
    pub fn check(&self) -> Result<(), StoreError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db.sqlite3");
        std::fs::write(&path, b"one").expect("write");
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
}
