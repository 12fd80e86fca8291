//! Files a caller names under a directory of the server's: which names may be served,
//! and opening them. The `{"file": "relative/path.ndjson"}` form of a run reads under
//! `[runs] file_root`, `GET /v1/media/{media_id}/file` under `[ui] media_root`, and the
//! web viewer's files under `ANNOSTORE_UI_DIST` when set.
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
    /// No root is configured; names the setting that would be one.
    #[error("this server reads no such files; set {0}")]
    NoRoot(&'static str),
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

/// A file opened under a root.
#[derive(Debug)]
pub struct Opened {
    pub file: tokio::fs::File,
    pub len: u64,
    /// Where it is, every symlink resolved (under the root).
    pub path: PathBuf,
}

impl Opened {
    /// A path that opens this very file again, whatever was renamed or swapped since
    /// (on Linux, its `/proc/self/fd` entry, valid while `self.file` is open; elsewhere
    /// the resolved path).
    pub fn reopen_path(&self) -> PathBuf {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.path.clone()
        }
    }
}

/// The file `name` names under `root`, opened. `setting` names the configuration that
/// sets the root, for the error when there is none.
pub async fn open(
    root: Option<&Path>,
    setting: &'static str,
    name: &str,
) -> Result<Opened, FileError> {
    let root = root.ok_or(FileError::NoRoot(setting))?;
    check_relative(name)?;
    let root = tokio::fs::canonicalize(root)
        .await
        .map_err(|e| FileError::Root(e.kind()))?;
    let io_error = |e: io::Error| match e.kind() {
        // No such name: missing, a file where a directory should be, or a name longer
        // than the file system allows.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            FileError::NotFound(name.to_owned())
        }
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
    Ok(Opened {
        file,
        len: meta.len(),
        path,
    })
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
        let open = |root, name| open(root, "[runs] file_root", name);
        assert_eq!(open(r, "run.ndjson").await.unwrap().len, 5);
        let inside = open(r, "inside.ndjson").await.unwrap();
        assert_eq!(inside.len, 5);
        assert!(inside.path.ends_with("run.ndjson"), "{:?}", inside.path);
        let again = std::fs::read(inside.reopen_path()).unwrap();
        assert_eq!(again, b"12345");
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
        let long = "x".repeat(300);
        for missing in ["run.ndjson/x", long.as_str()] {
            let e = open(r, missing).await.unwrap_err();
            assert!(matches!(e, FileError::NotFound(_)), "{missing}: {e:?}");
        }
        let e = open(None, "run.ndjson").await.unwrap_err();
        assert!(matches!(e, FileError::NoRoot(_)), "{e:?}");
        assert!(e.to_string().contains("set [runs] file_root"), "{e}");
    }
}
