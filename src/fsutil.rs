//! Small file-system helpers: writes that are all-or-nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old
/// file or the whole new one: temp file in the same directory, fsync, rename,
/// then fsync of the directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, bytes, 0o666, true).map(|_| ())
}

/// Like [`write_atomic`], for a secret: the file is readable by its owner
/// only (mode 0600) from its first byte.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, bytes, 0o600, true).map(|_| ())
}

/// Like [`write_atomic`], for a script others run (mode 0755, less the umask).
pub fn write_executable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, bytes, 0o777, true).map(|_| ())
}

/// Writes a secret (mode 0600) only if `path` does not exist yet, all or
/// nothing; false when another writer was first (its file is kept, so two
/// processes starting at once agree on one file).
pub fn create_private(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    write_with(path, bytes, 0o600, false)
}

fn write_with(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> io::Result<bool> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the path names no file"))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        // A link fails on an existing name where a rename would replace it.
        let placed = if replace {
            fs::rename(&temp, path).map(|()| true)
        } else {
            let linked = match fs::hard_link(&temp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            };
            let _ = fs::remove_file(&temp);
            linked
        }?;
        File::open(dir)?.sync_all()?;
        Ok(placed)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("tabagent-fsutil-{}", std::process::id()));
        let path = dir.join("a.json");
        write_atomic(&path, b"first, longer").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_are_private_and_created_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tabagent-secret-{}", std::process::id()));
        let path = dir.join("token");
        assert!(create_private(&path, b"one").unwrap());
        assert!(!create_private(&path, b"two").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_private(&path, b"three").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }
}
