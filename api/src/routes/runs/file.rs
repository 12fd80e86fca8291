//! The `{"file": "relative/path.ndjson"}` form of a run: which file under `[runs]
//! file_root` a caller may name, and opening it.
//!
//! A name must be relative and plain (no `..`, no root, no drive); after every symlink is
//! resolved the file must still lie under the root, and (on Linux) the file actually
//! opened is checked again through `/proc/self/fd`, so a symlink swapped in between the
//! check and the open cannot lead outside. Errors name only the relative name the caller
//! sent, never a server path.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a named file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("this server reads no files; set [runs] file_root")]
    NoRoot,
    #[error("file must be a relative path inside the server's file root, without `..`: {0:?}")]
    NotRelative(String),
    #[error("file {0:?} is outside the server's file root")]
    Outside(String),
    #[error("no file {0:?} under the server's file root")]
    NotFound(String),
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
    #[error("file {0:?} may not be read by the server")]
    Denied(String),
    /// The root itself is missing or unreadable: the server's configuration is at fault.
    #[error("the server's file root cannot be read: {0}")]
    Root(io::ErrorKind),
    #[error("file {name:?} cannot be read: {kind}")]
    Io { name: String, kind: io::ErrorKind },
}

/// The file `name` names under `root`, opened, with its size.
pub async fn open(root: Option<&Path>, name: &str) -> Result<(tokio::fs::File, u64), FileError> {
    let root = root.ok_or(FileError::NoRoot)?;
    check_relative(name)?;
    let root = tokio::fs::canonicalize(root)
        .await
        .map_err(|e| FileError::Root(e.kind()))?;
    let io_error = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => FileError::NotFound(name.to_owned()),
        io::ErrorKind::PermissionDenied => FileError::Denied(name.to_owned()),
        kind => FileError::Io {
            name: name.to_owned(),
            kind,
        },
    };
    let path = tokio::fs::canonicalize(root.join(name))
        .await
        .map_err(io_error)?;
    if !path.starts_with(&root) {
        return Err(FileError::Outside(name.to_owned()));
    }
    let file = tokio::fs::File::open(&path).await.map_err(io_error)?;
    if opened_path(&file).is_some_and(|opened| !opened.starts_with(&root)) {
        return Err(FileError::Outside(name.to_owned()));
    }
    let meta = file.metadata().await.map_err(io_error)?;
    if !meta.is_file() {
        return Err(FileError::NotAFile(name.to_owned()));
    }
    Ok((file, meta.len()))
}

/// Refuses absolute names and any component but plain names (and `.`).
fn check_relative(name: &str) -> Result<(), FileError> {
    let path = Path::new(name);
    let plain = !name.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(FileError::NotRelative(name.to_owned()))
    }
}

/// Where the open file really is, as the kernel says.
#[cfg(target_os = "linux")]
fn opened_path(file: &tokio::fs::File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

#[cfg(not(target_os = "linux"))]
fn opened_path(_: &tokio::fs::File) -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_names_pass() {
        for ok in ["run.ndjson", "a/b/run.ndjson", "./run.ndjson", "a/./b"] {
            assert!(check_relative(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "/etc/passwd", "../x", "a/../../x", "a/..", "//x"] {
            assert!(
                matches!(check_relative(bad), Err(FileError::NotRelative(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn symlinks_out_of_the_root_and_missing_files_are_refused_without_paths() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.ndjson"), "x").unwrap();
        std::fs::write(root.path().join("run.ndjson"), "12345").unwrap();
        std::fs::create_dir(root.path().join("dir")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.ndjson"),
            root.path().join("link.ndjson"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink("run.ndjson", root.path().join("inside.ndjson")).unwrap();

        let r = Some(root.path());
        assert_eq!(open(r, "run.ndjson").await.unwrap().1, 5);
        assert_eq!(open(r, "inside.ndjson").await.unwrap().1, 5);
        for escape in ["link.ndjson", "out/secret.ndjson"] {
            let e = open(r, escape).await.unwrap_err();
            assert!(matches!(e, FileError::Outside(_)), "{escape}: {e:?}");
            let text = e.to_string();
            assert!(!text.contains(&*outside.path().to_string_lossy()), "{text}");
            assert!(!text.contains(&*root.path().to_string_lossy()), "{text}");
        }
        assert!(matches!(
            open(r, "missing.ndjson").await,
            Err(FileError::NotFound(_))
        ));
        assert!(matches!(open(r, "dir").await, Err(FileError::NotAFile(_))));
        assert!(matches!(
            open(None, "run.ndjson").await,
            Err(FileError::NoRoot)
        ));
    }
}
