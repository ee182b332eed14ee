//! The node's client credentials: TLS bootstrap and rotation, as the upstream kubelet
//! does them (pkg/kubelet/certificate/bootstrap and client-go's certificate manager).
//!
//! With a usable `--kubeconfig` the node uses it. Otherwise it takes the bootstrap
//! kubeconfig, makes a key, asks for a client certificate with a CSR (signer
//! kubernetes.io/kube-apiserver-client-kubelet, subject system:node:NAME in
//! system:nodes), waits until it is approved and signed, stores key and certificate in
//! `<cert dir>/kubelet-client-current.pem` and writes a kubeconfig that points at that
//! file. Before the certificate expires (at 70–90 % of its life, as upstream) it asks
//! again with its own credentials and swaps the file; clients made afterwards use the
//! new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const CURRENT: &str = "kubelet-client-current.pem";

/// Where the node keeps its credentials.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub node_name: String,
    /// The kubeconfig the node uses (written after bootstrap).
    pub kubeconfig: PathBuf,
    /// The bootstrap kubeconfig, if given.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the client key and certificate live.
    pub cert_dir: PathBuf,
}

/// A kube client that follows certificate rotation: `get` returns a client made with
/// the current certificate.
#[derive(Clone)]
pub struct ClientHandle(Arc<RwLock<Client>>);

impl ClientHandle {
    pub fn get(&self) -> Client {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, client: Client) {
        match self.0.write() {
            Ok(mut c) => *c = client,
            Err(poisoned) => *poisoned.into_inner() = client,
        }
    }
}

/// Makes sure the node has a usable client certificate (bootstrapping one if needed)
/// and returns a client with it.
pub async fn client(creds: &Credentials) -> Result<ClientHandle> {
    if let Some(client) = existing_client(creds).await? {
        return Ok(ClientHandle(Arc::new(RwLock::new(client))));
    }
    let Some(bootstrap) = &creds.bootstrap_kubeconfig else {
        bail!(
            "kubeconfig {} is missing or its certificate is unusable, and no --bootstrap-kubeconfig was given",
            creds.kubeconfig.display()
        );
    };
    tracing::info!(bootstrap = %bootstrap.display(), "no usable client certificate: TLS bootstrap");
    let bootstrap_client = client_from(bootstrap)
        .await
        .with_context(|| format!("read bootstrap kubeconfig {}", bootstrap.display()))?;
    let pem = request_certificate(&bootstrap_client, &creds.node_name).await?;
    store(creds, &pem)?;
    write_kubeconfig(creds, bootstrap)?;
    let client = client_from(&creds.kubeconfig).await?;
    Ok(ClientHandle(Arc::new(RwLock::new(client))))
}

/// The client of an existing kubeconfig whose certificate is still valid.
async fn existing_client(creds: &Credentials) -> Result<Option<Client>> {
    if !creds.kubeconfig.exists() {
        return Ok(None);
    }
    let current = creds.cert_dir.join(CURRENT);
    if current.exists() {
        match cert_validity(&std::fs::read_to_string(&current)?) {
            Ok((_, not_after)) if not_after > now() => {}
            Ok(_) => {
                tracing::warn!(cert = %current.display(), "client certificate expired");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(cert = %current.display(), error = %e, "client certificate unreadable");
                return Ok(None);
            }
        }
    }
    match client_from(&creds.kubeconfig).await {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            tracing::warn!(kubeconfig = %creds.kubeconfig.display(), error = %e, "kubeconfig unusable");
            Ok(None)
        }
    }
}

pub async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read kubeconfig {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("load kubeconfig {}", kubeconfig.display()))?;
    // Upstream's node client defaults: 50 QPS would be the limit; kube has none, and
    // each request has a deadline so a stuck apiserver does not stall a loop forever.
    config.read_timeout = Some(Duration::from_secs(60));
    Client::try_from(config).with_context(|| format!("client for {}", kubeconfig.display()))
}

/// Creates a CSR for `node`'s client certificate and waits until it is signed;
/// returns key and certificate as one PEM.
async fn request_certificate(client: &Client, node: &str) -> Result<String> {
    let key = rcgen::KeyPair::generate().context("generate the node's client key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let request = params
        .serialize_request(&key)
        .context("make the certificate signing request")?
        .pem()?;

    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut csr = CertificateSigningRequest::default();
    // Upstream names them node-csr-<hash>; a generated name never collides with an
    // older request of the same node.
    csr.metadata.generate_name = Some("node-csr-".to_string());
    csr.spec = CertificateSigningRequestSpec {
        request: ByteString(request.into_bytes()),
        signer_name: CLIENT_SIGNER.to_string(),
        usages: Some(vec!["digital signature".into(), "client auth".into()]),
        ..Default::default()
    };
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .context("create the node's CertificateSigningRequest")?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, "waiting for the client certificate to be approved and signed");
    // Upstream waits up to 15 minutes (bootstrap) before giving up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    loop {
        let csr = csrs
            .get(&name)
            .await
            .with_context(|| format!("read CSR {name}"))?;
        if let Some(status) = &csr.status {
            for c in status.conditions.iter().flatten() {
                if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                    bail!(
                        "CSR {name} was {}: {}",
                        c.type_.to_lowercase(),
                        c.message.clone().unwrap_or_default()
                    );
                }
            }
            if let Some(cert) = &status.certificate {
                if !cert.0.is_empty() {
                    let cert = String::from_utf8(cert.0.clone())
                        .map_err(|_| anyhow!("CSR {name}: the certificate is not PEM"))?;
                    tracing::info!(csr = %name, "client certificate issued");
                    return Ok(format!("{}{}", cert, key.serialize_pem()));
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("CSR {name} was not signed within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes the key and certificate file atomically (mode 0600).
fn store(creds: &Credentials, pem: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(&creds.cert_dir)
        .with_context(|| format!("create {}", creds.cert_dir.display()))?;
    let tmp = creds.cert_dir.join(format!(".{CURRENT}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, creds.cert_dir.join(CURRENT))
        .with_context(|| format!("install {}", creds.cert_dir.join(CURRENT).display()))?;
    Ok(())
}

/// The node's kubeconfig: the bootstrap kubeconfig's cluster, with the stored client
/// certificate as credentials (as upstream writes it).
fn write_kubeconfig(creds: &Credentials, bootstrap: &Path) -> Result<()> {
    let kc = Kubeconfig::read_from(bootstrap)?;
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| {
            anyhow!(
                "bootstrap kubeconfig {} names no cluster",
                bootstrap.display()
            )
        })?;
    let current = creds.cert_dir.join(CURRENT);
    let cfg = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": cluster}],
        "users": [{"name": "default-auth", "user": {
            "client-certificate": current,
            "client-key": current,
        }}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster",
            "namespace": "default",
            "user": "default-auth",
        }}],
        "current-context": "default-context",
    });
    if let Some(dir) = creds.kubeconfig.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = creds.kubeconfig.with_extension("tmp");
    std::fs::write(&tmp, serde_saphyr::to_string(&cfg)?)?;
    std::fs::rename(&tmp, &creds.kubeconfig)
        .with_context(|| format!("write {}", creds.kubeconfig.display()))?;
    Ok(())
}

/// (notBefore, notAfter) of the first certificate in `pem`, as Unix seconds.
fn cert_validity(pem: &str) -> Result<(i64, i64)> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow!("no PEM certificate: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| anyhow!("bad certificate: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// When to rotate a certificate valid from `not_before` to `not_after`: at a point
/// between 70 % and 90 % of its life (upstream's jittered deadline), here taken from
/// the node name's hash so it is stable across restarts.
fn rotation_deadline(not_before: i64, not_after: i64, node: &str) -> i64 {
    let life = (not_after - not_before).max(0);
    let jitter = node
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        % 21;
    not_before + life * (70 + jitter as i64) / 100
}

/// Rotates the client certificate before it expires, for as long as the node runs.
pub async fn rotate_forever(creds: Credentials, handle: ClientHandle) {
    loop {
        let current = creds.cert_dir.join(CURRENT);
        let wait = match std::fs::read_to_string(&current)
            .map_err(anyhow::Error::from)
            .and_then(|p| cert_validity(&p))
        {
            Ok((nb, na)) => (rotation_deadline(nb, na, &creds.node_name) - now()).max(0),
            // A kubeconfig with inline or other credentials: nothing of ours to rotate.
            Err(_) => return,
        };
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        match request_certificate(&handle.get(), &creds.node_name).await {
            Ok(pem) => match store(&creds, &pem) {
                Ok(()) => match client_from(&creds.kubeconfig).await {
                    Ok(client) => {
                        handle.set(client);
                        tracing::info!("client certificate rotated");
                    }
                    Err(e) => tracing::error!(error = %e, "client with the rotated certificate"),
                },
                Err(e) => tracing::error!(error = %e, "store the rotated certificate"),
            },
            Err(e) => {
                tracing::error!(error = %e, "certificate rotation failed; retrying in 30 s");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_falls_between_70_and_90_percent_of_the_certificate_life() {
        for node in ["a", "node-1", "reference", "gantry-xyz"] {
            let d = rotation_deadline(1000, 2000, node);
            assert!((1700..=1900).contains(&d), "{node}: {d}");
        }
    }

    #[test]
    fn validity_is_read_from_a_pem_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["n".to_string()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            cert_validity(&cert.pem()).unwrap(),
            (1_700_000_000, 1_800_000_000)
        );
    }
}
