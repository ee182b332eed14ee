//! The bed's PKI, as a kubeadm cluster has it: one CA signs the apiserver's serving
//! certificate and every client certificate (CN = user, O = group), and also signs the
//! node client certificates that the controller-manager issues during TLS bootstrap. A
//! separate key pair signs service-account tokens. As kubeadm, a second CA (front-proxy-ca)
//! signs only the client certificate the apiserver's aggregator presents to extension API
//! servers (metrics-server), which trust it through --requestheader-client-ca-file.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    fn at(dir: &Path, name: &str) -> Self {
        CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// The files of a generated PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertFiles,
    pub apiserver: CertFiles,
    /// The apiserver's client certificate towards kubelets (logs, exec, port-forward).
    pub apiserver_kubelet_client: CertFiles,
    pub admin: CertFiles,
    pub controller_manager: CertFiles,
    pub scheduler: CertFiles,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
    /// The CA extension API servers trust for requests the aggregator proxies.
    pub front_proxy_ca: CertFiles,
    /// The aggregator's client certificate (CN [`FRONT_PROXY_CLIENT_USER`]).
    pub front_proxy_client: CertFiles,
}

/// The user names and groups the bed's clients authenticate as.
pub const ADMIN_USER: &str = "kubernetes-admin";
pub const APISERVER_KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// kubeadm's name for the aggregator's client certificate (--requestheader-allowed-names).
pub const FRONT_PROXY_CLIENT_USER: &str = "front-proxy-client";

impl Pki {
    /// Generates a fresh PKI in `dir`. `apiserver_ips` and `apiserver_names` become the
    /// serving certificate's subject alternative names.
    pub fn generate(
        dir: &Path,
        apiserver_ips: &[IpAddr],
        apiserver_names: &[&str],
    ) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let ca = CertFiles::at(dir, "ca");
        let issuer = certificate_authority(&ca, "gantry-e2e-ca")?;

        let mut sans: Vec<SanType> = apiserver_ips
            .iter()
            .map(|ip| SanType::IpAddress(*ip))
            .collect();
        for name in apiserver_names {
            sans.push(SanType::DnsName((*name).try_into()?));
        }
        let apiserver = CertFiles::at(dir, "apiserver");
        leaf(
            &apiserver,
            "kube-apiserver",
            None,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        )?;

        let client = |name: &str, cn: &str, org: Option<&str>| -> Result<CertFiles> {
            let files = CertFiles::at(dir, name);
            leaf(
                &files,
                cn,
                org,
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
                &issuer,
            )?;
            Ok(files)
        };
        let admin = client("admin", ADMIN_USER, Some("system:masters"))?;
        let controller_manager =
            client("controller-manager", "system:kube-controller-manager", None)?;
        let scheduler = client("scheduler", "system:kube-scheduler", None)?;
        let apiserver_kubelet_client = client(
            "apiserver-kubelet-client",
            APISERVER_KUBELET_CLIENT_USER,
            None,
        )?;

        let sa_key = KeyPair::generate()?;
        let service_account_key = dir.join("sa.key");
        let service_account_pub = dir.join("sa.pub");
        write_secret(&service_account_key, &sa_key.serialize_pem())?;
        fs::write(&service_account_pub, sa_key.public_key_pem())?;

        let front_proxy_ca = CertFiles::at(dir, "front-proxy-ca");
        let front_proxy_issuer = certificate_authority(&front_proxy_ca, "front-proxy-ca")?;
        let front_proxy_client = CertFiles::at(dir, "front-proxy-client");
        leaf(
            &front_proxy_client,
            FRONT_PROXY_CLIENT_USER,
            None,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            &front_proxy_issuer,
        )?;

        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
            apiserver,
            apiserver_kubelet_client,
            admin,
            controller_manager,
            scheduler,
            service_account_key,
            service_account_pub,
            front_proxy_ca,
            front_proxy_client,
        })
    }
}

/// A self-signed CA named `cn`, written to `files`; the issuer that signs with it.
fn certificate_authority(files: &CertFiles, cn: &str) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, 3650);
    let cert = params.self_signed(&key)?;
    write_pair(files, &cert.pem(), &key.serialize_pem())?;
    Ok(Issuer::new(params, key))
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn leaf(
    files: &CertFiles,
    cn: &str,
    org: Option<&str>,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<()> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    set_validity(&mut params, 365);
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("sign certificate for {cn}"))?;
    write_pair(files, &cert.pem(), &key.serialize_pem())
}

fn write_pair(files: &CertFiles, cert_pem: &str, key_pem: &str) -> Result<()> {
    fs::write(&files.cert, cert_pem).with_context(|| format!("write {}", files.cert.display()))?;
    write_secret(&files.key, key_pem)
}

fn write_secret(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}
