//! A user's workspace folder and the confinement of every path a tool touches to it:
//! paths are resolved lexically, then the deepest existing ancestor is canonicalized, so
//! neither `..` nor a symlink can lead out. Files are read and written only here
//! ([`Workspace::read`], [`Workspace::write`]), never with a plain `open` elsewhere: the
//! last step of the path is opened without following a symlink, because one planted
//! between the check and the open would otherwise decide where the bytes go.

use std::path::{Component, Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ToolError;

/// Flags of every file open: a symlink as the last component fails with `ELOOP` instead of
/// being followed, and a FIFO neither blocks the open nor gets treated as a file.
const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// The folder a user's tools work in.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace of `user` under `root`, created if missing.
    pub fn for_user(root: &Path, user: &str) -> Result<Self, ToolError> {
        if user.is_empty() || user.contains(['/', '\\']) || user == "." || user == ".." {
            return Err(ToolError::Denied(format!("invalid user name {user:?}")));
        }
        let dir = root.join(user);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ToolError::Failed(format!("creating the workspace: {e}")))?;
        let root = dir
            .canonicalize()
            .map_err(|e| ToolError::Failed(format!("opening the workspace: {e}")))?;
        Ok(Self { root })
    }

    /// The workspace folder itself (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `path` (relative to the workspace, or absolute inside it) to a path that is
    /// inside the workspace, following symlinks of the parts that exist. A symlink that
    /// leads nowhere is refused: writing through it would create its target, wherever
    /// that is.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, ToolError> {
        if path.contains('\0') {
            return Err(ToolError::InvalidArguments("path contains a NUL byte".into()));
        }
        let requested = Path::new(path);
        let joined = if requested.is_absolute() {
            requested.to_path_buf()
        } else {
            self.root.join(requested)
        };
        let mut lexical = PathBuf::new();
        for component in joined.components() {
            match component {
                Component::ParentDir => {
                    if !lexical.pop() {
                        return Err(outside(path));
                    }
                }
                Component::CurDir => {}
                other => lexical.push(other.as_os_str()),
            }
        }
        if !lexical.starts_with(&self.root) {
            return Err(outside(path));
        }
        // Canonicalize the deepest part that exists: that is where a symlink would lead out.
        let mut existing = lexical.as_path();
        let mut rest = Vec::new();
        let canonical = loop {
            match existing.canonicalize() {
                Ok(canonical) => break canonical,
                Err(err) => {
                    // It is there but does not canonicalize: a symlink to nowhere (or a loop).
                    match existing.symlink_metadata() {
                        Ok(meta) if meta.file_type().is_symlink() => {
                            return Err(ToolError::Denied(format!(
                                "{path:?} goes through a symlink that points nowhere"
                            )));
                        }
                        Ok(_) => {
                            return Err(ToolError::Failed(format!("resolving {path:?}: {err}")));
                        }
                        Err(_) => {}
                    }
                    let Some(parent) = existing.parent() else {
                        return Err(outside(path));
                    };
                    if let Some(name) = existing.file_name() {
                        rest.push(name.to_owned());
                    }
                    existing = parent;
                }
            }
        };
        if !canonical.starts_with(&self.root) {
            return Err(outside(path));
        }
        let mut resolved = canonical;
        resolved.extend(rest.iter().rev());
        Ok(resolved)
    }

    /// Reads the file at `path`; returns where it is (for its name) and its bytes.
    pub async fn read(&self, path: &str) -> Result<(PathBuf, Vec<u8>), ToolError> {
        let resolved = self.resolve(path)?;
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(OPEN_FLAGS)
            .open(&resolved)
            .await
            .map_err(|e| io_error(path, "reading", e))?;
        self.check_opened(path, &resolved, &file).await?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await.map_err(|e| io_error(path, "reading", e))?;
        Ok((resolved, bytes))
    }

    /// Writes `bytes` to the file at `path`, replacing it and creating folders as needed;
    /// returns where it is.
    pub async fn write(&self, path: &str, bytes: &[u8]) -> Result<PathBuf, ToolError> {
        let resolved = self.resolve(path)?;
        if resolved == self.root {
            return Err(ToolError::InvalidArguments("path names the workspace itself".into()));
        }
        if let Some(parent) = resolved.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| ToolError::Failed(format!("creating folders for {path:?}: {e}")))?;
            // The folders exist now, so this canonicalizes them: a link swapped in while
            // they were made (by a command running beside this call) shows up here.
            if self.resolve(path)? != resolved {
                return Err(outside(path));
            }
        }
        // Truncated only once the opened file has been checked, so a refusal changes nothing.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(OPEN_FLAGS)
            .open(&resolved)
            .await
            .map_err(|e| io_error(path, "writing", e))?;
        self.check_opened(path, &resolved, &file).await?;
        file.set_len(0).await.map_err(|e| io_error(path, "writing", e))?;
        file.write_all(bytes).await.map_err(|e| io_error(path, "writing", e))?;
        // A tokio file finishes its last write in the background unless flushed.
        file.flush().await.map_err(|e| io_error(path, "writing", e))?;
        Ok(resolved)
    }

    /// Refuses an opened `file` that is not a regular file, or whose path no longer leads
    /// into the workspace (a folder on the way was swapped for a link after `resolve`).
    async fn check_opened(
        &self,
        path: &str,
        resolved: &Path,
        file: &tokio::fs::File,
    ) -> Result<(), ToolError> {
        let meta = file.metadata().await.map_err(|e| io_error(path, "opening", e))?;
        if meta.is_dir() {
            return Err(ToolError::IsADirectory(path.into()));
        }
        if !meta.is_file() {
            return Err(ToolError::Denied(format!("{path:?} is not a regular file")));
        }
        match tokio::fs::canonicalize(resolved).await {
            Ok(canonical) if canonical.starts_with(&self.root) => Ok(()),
            Ok(_) => Err(outside(path)),
            Err(e) => Err(io_error(path, "opening", e)),
        }
    }

    /// `path` as shown to the model: relative to the workspace.
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }
}

fn outside(path: &str) -> ToolError {
    ToolError::Denied(format!("{path:?} is outside the workspace"))
}

/// The error kinds the file tools branch on; `ELOOP` is a symlink met by `O_NOFOLLOW`.
fn io_error(path: &str, doing: &str, err: std::io::Error) -> ToolError {
    match err.kind() {
        std::io::ErrorKind::NotFound => ToolError::NotFound(path.into()),
        std::io::ErrorKind::IsADirectory => ToolError::IsADirectory(path.into()),
        _ if err.raw_os_error() == Some(libc::ELOOP) => {
            ToolError::Denied(format!("{path:?} is a symlink that was not followed"))
        }
        _ => ToolError::Failed(format!("{doing} {path:?}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confines_paths() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::for_user(dir.path(), "alice").unwrap();
        std::fs::create_dir(ws.root().join("sub")).unwrap();
        assert!(ws.resolve("sub/new.txt").unwrap().starts_with(ws.root()));
        assert!(ws.resolve("sub/../a.txt").is_ok());
        assert!(matches!(ws.resolve("../bob/x"), Err(ToolError::Denied(_))));
        assert!(matches!(ws.resolve("/etc/passwd"), Err(ToolError::Denied(_))));
        std::os::unix::fs::symlink("/etc", ws.root().join("link")).unwrap();
        assert!(matches!(ws.resolve("link/passwd"), Err(ToolError::Denied(_))));
        assert!(matches!(ws.resolve("link/new/deeper"), Err(ToolError::Denied(_))));
        assert!(Workspace::for_user(dir.path(), "..").is_err());
    }

    #[tokio::test]
    async fn a_dangling_symlink_as_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("file");
        let ws = Workspace::for_user(dir.path(), "alice").unwrap();
        std::os::unix::fs::symlink(&target, ws.root().join("innocent.txt")).unwrap();

        assert!(matches!(ws.resolve("innocent.txt"), Err(ToolError::Denied(_))));
        let written = ws.write("innocent.txt", b"planted").await;
        assert!(matches!(written, Err(ToolError::Denied(_))), "{written:?}");
        assert!(matches!(ws.read("innocent.txt").await, Err(ToolError::Denied(_))));
        assert!(!target.exists(), "the link's target was created outside the workspace");
    }

    #[tokio::test]
    async fn a_dangling_symlink_as_a_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("missing_dir");
        let ws = Workspace::for_user(dir.path(), "alice").unwrap();
        std::os::unix::fs::symlink(&target, ws.root().join("dir")).unwrap();

        assert!(matches!(ws.resolve("dir/x"), Err(ToolError::Denied(_))));
        let written = ws.write("dir/x", b"planted").await;
        assert!(matches!(written, Err(ToolError::Denied(_))), "{written:?}");
        let written = ws.write("dir/deeper/x", b"planted").await;
        assert!(matches!(written, Err(ToolError::Denied(_))), "{written:?}");
        assert!(!target.exists(), "a folder was created outside the workspace");
    }

    #[tokio::test]
    async fn a_symlink_that_stays_inside_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::for_user(dir.path(), "alice").unwrap();
        std::fs::create_dir(ws.root().join("sub")).unwrap();
        std::fs::write(ws.root().join("sub/real.txt"), "inside").unwrap();
        std::os::unix::fs::symlink("sub/real.txt", ws.root().join("alias.txt")).unwrap();
        std::os::unix::fs::symlink("sub", ws.root().join("folder")).unwrap();

        let (resolved, bytes) = ws.read("alias.txt").await.unwrap();
        assert_eq!(bytes, b"inside");
        assert_eq!(resolved, ws.root().join("sub/real.txt"));
        assert_eq!(ws.read("folder/real.txt").await.unwrap().1, b"inside");
        ws.write("folder/new.txt", b"made").await.unwrap();
        assert_eq!(std::fs::read(ws.root().join("sub/new.txt")).unwrap(), b"made");
    }

    #[tokio::test]
    async fn folders_and_missing_files_keep_their_error_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::for_user(dir.path(), "alice").unwrap();
        std::fs::create_dir(ws.root().join("sub")).unwrap();
        assert!(matches!(ws.read("sub").await, Err(ToolError::IsADirectory(_))));
        assert!(matches!(ws.write("sub", b"x").await, Err(ToolError::IsADirectory(_))));
        assert!(matches!(ws.read("nope.txt").await, Err(ToolError::NotFound(_))));
        assert!(matches!(ws.write(".", b"x").await, Err(ToolError::InvalidArguments(_))));
        ws.write("a/b/c.txt", b"longer text").await.unwrap();
        ws.write("a/b/c.txt", b"short").await.unwrap();
        assert_eq!(ws.read("a/b/c.txt").await.unwrap().1, b"short", "replaced, not overlaid");
    }
}
