//! TLS for the API: the serving configuration (client certificates requested but
//! optional, so bearer tokens and anonymous requests still reach authentication), the
//! identity a verified client certificate carries, and the self-signed serving
//! certificate upstream makes when no tlsCertFile is configured.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read the serving certificate: {0}")]
    Cert(String),
    #[error("read the serving key: {0}")]
    Key(String),
    #[error("read the client CA bundle: {0}")]
    ClientCa(String),
    #[error("build the TLS configuration: {0}")]
    Config(String),
}

/// The rustls configuration of the API port. With a client CA, certificates are
/// requested and verified against it but not required, as upstream's kubelet asks
/// with tls.RequestClientCert: a request without one goes on to bearer-token and
/// anonymous authentication. Without a client CA, none are requested.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    // Explicitly ring: other crates in the binary enable aws-lc-rs as well, and with
    // two providers compiled in rustls refuses to pick a process default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                let cert = cert.map_err(|e| TlsError::ClientCa(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TlsError::ClientCa("no CERTIFICATE block".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // HTTP/1.1 only: exec, attach and port-forward are HTTP/1.1 upgrades.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who a verified client certificate says the client is: upstream's
/// CommonNameUserConversion takes the user from the subject's CN and the groups from
/// its O values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

/// The identity of the leaf of a chain rustls has already verified. None when there is
/// no certificate or its CN is empty (upstream then goes on to the other
/// authenticators).
pub fn cert_identity(chain: &[CertificateDer<'_>]) -> Option<CertIdentity> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    if user.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(CertIdentity { user, groups })
}

/// A serving certificate for the node when none is configured, made as upstream's
/// GenerateSelfSignedCertKey makes it: a CA `<node>-ca@<unix time>` signs a leaf
/// `<node>@<unix time>` valid for a year whose SANs are the node name and its IPs; the
/// certificate PEM is the leaf followed by the CA, the key PEM the leaf's key.
pub fn self_signed(node_name: &str, ips: &[IpAddr]) -> anyhow::Result<(String, String)> {
    let now = OffsetDateTime::now_utc();
    let stamp = now.unix_timestamp();
    let not_before = now - Duration::hours(1);
    let not_after = now + Duration::days(365);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("{node_name}-ca@{stamp}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{node_name}@{stamp}"));
    // A node name that is an IP is an IP SAN, as upstream decides with ParseIP.
    let mut sans = match node_name.parse::<IpAddr>() {
        Ok(ip) => vec![SanType::IpAddress(ip)],
        Err(_) => vec![SanType::DnsName(node_name.try_into()?)],
    };
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    leaf.subject_alt_names = sans;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_cert = leaf.signed_by(&key, &issuer)?;
    Ok((
        format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_names_the_node_and_its_ips_and_loads_as_serving_config() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let (cert, key) = self_signed("node-a", &[ip]).unwrap();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf and CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
        let cn = leaf.subject().iter_common_name().next().unwrap();
        assert!(cn.as_str().unwrap().starts_with("node-a@"));
        let sans = leaf.subject_alternative_name().unwrap().unwrap();
        let text = format!("{:?}", sans.value.general_names);
        assert!(text.contains("node-a"), "{text}");
        assert!(
            text.contains("10.0.0.7") || text.contains("[10, 0, 0, 7]"),
            "{text}"
        );
        server_config(&cert, &key, None).unwrap();
    }

    #[test]
    fn client_cert_identity_is_cn_and_organizations() {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "alice");
        p.distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let cert = p.self_signed(&key).unwrap();
        let id = cert_identity(&[cert.der().clone()]).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["system:masters".to_string()]);
        assert_eq!(cert_identity(&[]), None);
    }

    #[test]
    fn a_bad_key_is_an_error_naming_the_key() {
        let (cert, _) = self_signed("n", &[]).unwrap();
        let err = server_config(&cert, "not a key", None).unwrap_err();
        assert!(err.to_string().contains("serving key"), "{err}");
    }
}
