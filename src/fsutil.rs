//! File helpers, the one save path of every command and the app: atomic writes (an interrupted
//! save never leaves a half-written file), no silent replacement of an existing file or link,
//! output folders checked before any work, and bounded reads of regular files only.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Longest file name written, in bytes (most file systems allow 255).
pub const MAX_NAME_BYTES: usize = 255;

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so readers
/// see either the old file or the complete new one. Replaces an existing file: only for files the
/// program owns (autosave, checkpoints) or that the user chose to replace.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temporary(path, bytes, true)
}

/// Writes `bytes` to a new file at `path`, atomically, and refuses when anything — a file, a
/// folder, a link, even a dangling one — already has that name. The check and the write are one
/// step (a hard link from the temporary file), so a file appearing meanwhile is not replaced
/// either.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    if is_taken(path) {
        return Err(already_exists(path));
    }
    write_via_temporary(path, bytes, false)
}

/// Writes with [`write_atomic`] when `overwrite`, else with [`write_new`].
pub fn write(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    if overwrite {
        write_atomic(path, bytes)
    } else {
        write_new(path, bytes)
    }
}

/// Whether something (a file, folder or link, dangling or not) has this name.
pub fn is_taken(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn already_exists(path: &Path) -> Error {
    Error::invalid(
        "output file",
        path.display(),
        "already exists; choose another name (EPS Studio never replaces a file silently)",
    )
}

fn write_via_temporary(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    check_name(path)?;
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(io)?;
    // A short temporary name, so a final name near the length limit still works.
    let tmp: PathBuf = dir.join(format!(
        ".eps-studio-{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if replace {
            return std::fs::rename(&tmp, path);
        }
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => std::fs::remove_file(&tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
            // File systems without hard links: check, then rename (not atomic against a file
            // appearing in between, but never replacing one that was there).
            Err(_) if !is_taken(path) => std::fs::rename(&tmp, path),
            Err(e) => Err(e),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(already_exists(path)),
        other => other.map_err(io),
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Refuses a file name longer than [`MAX_NAME_BYTES`].
pub fn check_name(path: &Path) -> Result<()> {
    let len = path.file_name().map_or(0, |n| n.as_encoded_bytes().len());
    if len > MAX_NAME_BYTES {
        return Err(Error::invalid(
            "output file name",
            path.display(),
            format!(
                "is {len} bytes long, more than the {MAX_NAME_BYTES} file systems allow; use a shorter name"
            ),
        ));
    }
    Ok(())
}

/// Prepares an output folder before any work: creates it if needed and proves it writable by
/// creating and removing a file, so a bad `--out` (a file, a read-only place) is found before a
/// long run instead of after it.
pub fn prepare_output_dir(dir: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::metadata(dir)
        && !meta.is_dir()
    {
        return Err(Error::invalid(
            "output folder",
            dir.display(),
            "is a file, not a folder; choose a folder for the results",
        ));
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let probe = dir.join(format!(".eps-studio-probe-{}", std::process::id()));
    std::fs::File::create_new(&probe).map_err(io)?;
    std::fs::remove_file(&probe).map_err(io)
}

/// Checks, before any work, that a new file can be written at `path`: nothing has the name yet
/// (unless `overwrite`), the name is not too long and its folder is writable.
pub fn check_output_file(path: &Path, overwrite: bool) -> Result<()> {
    check_output_name(path, overwrite)?;
    prepare_output_dir(parent_of(path))
}

/// The name checks of [`check_output_file`] alone (length, nothing there unless `overwrite`, not
/// a folder), without touching the disk: for each file of a run whose folder was checked once.
pub fn check_output_name(path: &Path, overwrite: bool) -> Result<()> {
    check_name(path)?;
    if is_taken(path) {
        if !overwrite {
            return Err(already_exists(path));
        }
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(Error::invalid(
                "output file",
                path.display(),
                "is a folder; choose a file name",
            ));
        }
    }
    Ok(())
}

/// Shortens `stem` so that `stem` plus a suffix of `reserve` bytes fits in a file name, cutting at
/// a character boundary.
pub fn fit_stem(stem: &str, reserve: usize) -> &str {
    let max = MAX_NAME_BYTES.saturating_sub(reserve);
    if stem.len() <= max {
        return stem;
    }
    let mut end = max;
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    &stem[..end]
}

/// Whether two paths name the same existing file, however they are spelt: relative or absolute,
/// through `..`, links or hard links. A path that does not exist is nobody's file.
pub fn is_same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
    }
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a regular file of at most `max_bytes` ([`crate::limits::input_file`]); a file that grows
/// past the limit while being read is refused too.
pub fn read_bounded(what: &'static str, path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let len = crate::limits::input_file(what, path, max_bytes)?;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::invalid(
            what,
            path.display(),
            "grew past the size limit while being read",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() -> Result<()> {
        let dir = tempdir();
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

    #[test]
    fn new_files_never_replace_files_or_links() -> Result<()> {
        let dir = tempdir();
        let file = dir.join("a.png");
        write_new(&file, b"one")?;
        let e = write_new(&file, b"two")
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(read(&file)?, b"one");
        #[cfg(unix)]
        {
            let link = dir.join("dangling.png");
            std::os::unix::fs::symlink(dir.join("nowhere.png"), &link).map_err(|source| {
                Error::Io {
                    path: link.clone(),
                    source,
                }
            })?;
            assert!(write_new(&link, b"x").is_err());
            assert!(!dir.join("nowhere.png").exists(), "wrote through the link");
            assert!(check_output_file(&link, false).is_err());
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn bad_output_places_are_found_before_work() -> Result<()> {
        let dir = tempdir();
        let file = dir.join("a.txt");
        write_new(&file, b"x")?;
        let e = prepare_output_dir(&file)
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("is a file"), "{e}");
        let long = dir.join(format!("{}.png", "n".repeat(300)));
        let e = check_output_file(&long, false)
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("shorter name"), "{e}");
        assert_eq!(fit_stem(&"é".repeat(200), 20).len(), 234);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempdir();
        assert!(read_bounded("photo", &dir, 1 << 20).is_err());
        #[cfg(unix)]
        {
            let e = read_bounded("photo", Path::new("/dev/zero"), 1 << 20)
                .expect_err("must be refused")
                .to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let big = dir.join("big.bin");
        assert!(write_new(&big, &[0; 2048]).is_ok());
        assert!(read_bounded("photo", &big, 1024).is_err());
        assert!(read_bounded("photo", &big, 4096).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_file_is_recognised_however_it_is_spelt() -> Result<()> {
        let dir = tempdir();
        let file = dir.join("photo.jpg");
        write_new(&file, b"x")?;
        let absolute = std::fs::canonicalize(&file).map_err(|source| Error::Io {
            path: file.clone(),
            source,
        })?;
        let dotted = dir.join("sub/../photo.jpg");
        let _ = std::fs::create_dir_all(dir.join("sub"));
        assert!(is_same_file(&file, &absolute));
        assert!(is_same_file(&file, &dotted));
        #[cfg(unix)]
        {
            let link = dir.join("link.jpg");
            let _ = std::os::unix::fs::symlink(&file, &link);
            assert!(is_same_file(&file, &link));
        }
        assert!(!is_same_file(&file, &dir.join("other.jpg")));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    fn tempdir() -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "eps-fsutil-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::create_dir_all(&dir);
        dir
    }
}
