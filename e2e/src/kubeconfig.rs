//! Kubeconfig files for the bed's clients. Written as JSON, which kubectl and every
//! Kubernetes component read as YAML.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::json;

/// How a kubeconfig's user authenticates.
pub enum Credentials<'a> {
    /// A client certificate and key (PEM files).
    ClientCert { cert: &'a Path, key: &'a Path },
    /// A bearer token (a bootstrap token for nodes).
    Token(&'a str),
}

/// Writes a kubeconfig with one cluster, user and context, embedding the CA and any
/// client certificate so the file stands alone.
pub fn write(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    creds: Credentials<'_>,
) -> Result<()> {
    let b64 = |p: &Path| -> Result<String> {
        let bytes = fs::read(p).with_context(|| format!("read {}", p.display()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let user_entry = match creds {
        Credentials::ClientCert { cert, key } => json!({
            "client-certificate-data": b64(cert)?,
            "client-key-data": b64(key)?,
        }),
        Credentials::Token(token) => json!({ "token": token }),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "gantry-e2e", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca)?,
        }}],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{ "name": "gantry-e2e", "context": { "cluster": "gantry-e2e", "user": user } }],
        "current-context": "gantry-e2e",
    });
    fs::write(path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("write kubeconfig {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}
