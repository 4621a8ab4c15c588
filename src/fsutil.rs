//! File helpers: atomic writes, so an interrupted save never leaves a half-written file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so readers
/// see either the old file or the complete new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("eps-fsutil-{}", std::process::id()));
        let path = dir.join("a.bin");
        write_atomic(&path, b"one")?;
        write_atomic(&path, b"two")?;
        assert_eq!(read(&path)?, b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?
            .collect();
        assert_eq!(names.len(), 1, "temporary files left behind");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
