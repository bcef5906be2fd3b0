//! A user's workspace folder and the confinement of every path a tool touches to it:
//! paths are resolved lexically, then the deepest existing ancestor is canonicalized, so
//! neither `..` nor a symlink can lead out.

use std::path::{Component, Path, PathBuf};

use super::ToolError;

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
    /// inside the workspace, following symlinks of the parts that exist.
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
                Err(_) => {
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
}
