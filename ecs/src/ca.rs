//! The servers' CA from Secrets Manager: ECS puts a secret into an environment variable, and
//! Berth's TLS clients read files, so each Berth container writes `BERTH_CA_CERT_PEM` to the
//! `caCertFile`s of `BERTH_ECS_CONFIG_JSON` before it connects (the Terraform modules set
//! both). Whichever container starts first writes it; the others find it in place.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::TaskConfig;

pub const CA_ENV: &str = "BERTH_CA_CERT_PEM";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{CA_ENV} holds no PEM certificate")]
    NotPem,
    #[error("{CA_ENV} is set but BERTH_ECS_CONFIG_JSON names no caCertFile to write it to")]
    NoFile,
    #[error("cannot write the CA to {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

fn write_atomically(path: &Path, pem: &str) -> Result<(), CaError> {
    let err = |e: std::io::Error| CaError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if std::fs::read_to_string(path).is_ok_and(|t| t == pem) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Written aside and renamed, so a container starting at the same time never reads half.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(pem.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes `pem` (the variable's value, if set) to every `caCertFile` the config names.
pub fn install(cfg: &TaskConfig, pem: Option<&str>) -> Result<Vec<PathBuf>, CaError> {
    let Some(pem) = pem.filter(|p| !p.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(CaError::NotPem);
    }
    let mut files: Vec<PathBuf> = [
        cfg.servers.http.ca_cert_file.clone(),
        cfg.servers.rpc.ca_cert_file.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    files.dedup();
    if files.is_empty() {
        return Err(CaError::NoFile);
    }
    for f in &files {
        write_atomically(f, pem)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn cfg(dir: &Path) -> TaskConfig {
        let ca = dir.join("sub/ca.pem");
        TaskConfig::parse(&format!(
            r#"{{"servers": {{"hosts": ["s"], "http": {{"https": true, "caCertFile": "{0}"}}, "rpc": {{"tls": true, "caCertFile": "{0}"}}}}}}"#,
            ca.display()
        ))
        .unwrap()
    }

    #[test]
    fn writes_the_ca_once_where_the_config_says() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        assert_eq!(install(&c, None).unwrap(), Vec::<PathBuf>::new());
        let files = install(&c, Some(PEM)).unwrap();
        assert_eq!(files, [dir.path().join("sub/ca.pem")]);
        assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), PEM);
        // Again (another container): nothing changes.
        install(&c, Some(PEM)).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }

    #[test]
    fn bad_input_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        assert!(matches!(install(&c, Some("junk")), Err(CaError::NotPem)));
        let plain = TaskConfig::parse(r#"{"servers": {"hosts": ["s"]}}"#).unwrap();
        assert!(matches!(install(&plain, Some(PEM)), Err(CaError::NoFile)));
    }
}
