//! Puts Berth's binaries into the shared volume, so that containers built from other images
//! (Envoy's) can run them: a hard link when the volume is on the same file system, else a
//! copy; written beside the target and renamed, so a reader never sees half a binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The binaries other containers run from `bootstrapDir`.
pub const SHARED: &[&str] = &[
    "berth-mesh-init",
    "berth-envoy-entrypoint",
    "berth-health-sync",
];

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot find {0} beside berth-mesh-init or on PATH")]
    NotFound(String),
    #[error("cannot install {from} as {to}: {reason}")]
    Io {
        from: String,
        to: String,
        reason: String,
    },
}

/// Where a sibling binary is: next to this one, else on PATH.
pub fn locate(name: &str, own: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    let beside = own.parent().map(|d| d.join(name));
    beside
        .into_iter()
        .chain(
            path_var
                .unwrap_or_default()
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(name)),
        )
        .find(|p| p.is_file())
}

pub fn install(from: &Path, dir: &Path, name: &str) -> Result<PathBuf, InstallError> {
    let to = dir.join(name);
    let err = |e: std::io::Error| InstallError::Io {
        from: from.display().to_string(),
        to: to.display().to_string(),
        reason: e.to_string(),
    };
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).map_err(err)?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    std::fs::rename(&tmp, &to).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_an_executable_copy_and_replaces_an_old_one() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("berth-x");
        std::fs::write(&src, b"#!/bin/sh\n").unwrap();
        let vol = d.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::write(vol.join("berth-x"), b"old").unwrap();
        let to = install(&src, &vol, "berth-x").unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::metadata(&to).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            locate("berth-x", &d.path().join("self"), None),
            Some(src.clone())
        );
        assert_eq!(
            locate("berth-y", &d.path().join("self"), Some("/nonexistent")),
            None
        );
        assert!(matches!(
            install(&d.path().join("none"), &vol, "n"),
            Err(InstallError::Io { .. })
        ));
    }
}
