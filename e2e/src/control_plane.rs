//! The control plane of a bed, on loopback: etcd, kube-apiserver (authorization
//! Node,RBAC; NodeRestriction; service-account signing and TokenRequest; bootstrap
//! tokens), kube-controller-manager (signs and approves node client certificates, issues
//! service-account tokens) and kube-scheduler, plus the kubeconfigs of its clients.
//! Like Kubernetes' hack/local-up-cluster.sh, without kubeadm.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bed::free_port;
use crate::http::wait_http_ok;
use crate::kubeconfig::{self, Credentials};
use crate::kubectl::Kubectl;
use crate::network::{KUBERNETES_SERVICE_IP, SERVICE_RANGE};
use crate::paths;
use crate::pki::{self, CertFiles, Pki};
use crate::state::BedState;
use crate::wait;

/// Group that bootstrap-token nodes join besides system:bootstrappers.
const BOOTSTRAP_GROUP: &str = "system:bootstrappers:gantry-e2e";

#[derive(Clone, Debug)]
pub struct ControlPlane {
    pub pki: Pki,
    pub apiserver_url: String,
    pub admin_kubeconfig: PathBuf,
    /// A kubeconfig holding only a bootstrap token: what a joining node is given.
    pub bootstrap_kubeconfig: PathBuf,
    /// The apiserver's audit log (JSON lines), when the bed was asked for one.
    pub audit_log: Option<PathBuf>,
}

/// Starts the control plane; with `audit_users`, the apiserver logs those users'
/// requests (Metadata level) to `audit.log` in the bed directory.
pub fn start(state: &mut BedState, audit_users: &[String]) -> Result<ControlPlane> {
    let dir = state.dir.clone();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let service_ip: IpAddr = KUBERNETES_SERVICE_IP.parse()?;
    let pki = Pki::generate(
        &dir.join("pki"),
        &[loopback, service_ip],
        &[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    )?;

    // etcd
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let etcd_addr = format!("127.0.0.1:{client_port}");
    let etcd_url = format!("http://{etcd_addr}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(paths::tool("etcd")?);
    cmd.args(["--name", "gantry-e2e"])
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("gantry-e2e={peer_url}")])
        // A test cluster is thrown away with its bed: durability buys nothing here.
        .arg("--unsafe-no-fsync")
        .args(["--log-level", "warn"]);
    let etcd = state.spawn("etcd", cmd)?;
    wait_http_ok(&etcd, &etcd_addr, "/health", Duration::from_secs(60))?;

    // kube-apiserver
    let api_port = free_port()?;
    let apiserver_url = format!("https://127.0.0.1:{api_port}");
    let p = |path: &PathBuf| path.display().to_string();
    let mut cmd = Command::new(paths::tool("kube-apiserver")?);
    cmd.args(["--etcd-servers", &etcd_url])
        .args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &api_port.to_string(),
        ])
        .args(["--advertise-address", "127.0.0.1"])
        // The apiserver cannot publish a loopback address as the `kubernetes` service's
        // endpoint; there is no kube-proxy to use it either.
        .args(["--endpoint-reconciler-type", "none"])
        .args(["--service-cluster-ip-range", SERVICE_RANGE])
        .args(["--authorization-mode", "Node,RBAC"])
        .args(["--enable-admission-plugins", "NodeRestriction"])
        .arg("--allow-privileged=true")
        .arg("--enable-bootstrap-token-auth=true")
        .args(["--client-ca-file", &p(&pki.ca.cert)])
        .args(["--tls-cert-file", &p(&pki.apiserver.cert)])
        .args(["--tls-private-key-file", &p(&pki.apiserver.key)])
        .args([
            "--kubelet-client-certificate",
            &p(&pki.apiserver_kubelet_client.cert),
        ])
        .args([
            "--kubelet-client-key",
            &p(&pki.apiserver_kubelet_client.key),
        ])
        .args(["--kubelet-preferred-address-types", "InternalIP,Hostname"])
        // The aggregation layer, as kubeadm configures it: the aggregator proxies to
        // extension API servers (metrics-server) with the front-proxy client certificate
        // and the user in X-Remote-* headers. With no kube-proxy in the bed, it dials the
        // endpoint addresses of an APIService's Service itself.
        .args([
            "--requestheader-client-ca-file",
            &p(&pki.front_proxy_ca.cert),
        ])
        .args([
            "--requestheader-allowed-names",
            pki::FRONT_PROXY_CLIENT_USER,
        ])
        .args(["--requestheader-username-headers", "X-Remote-User"])
        .args(["--requestheader-group-headers", "X-Remote-Group"])
        .args(["--requestheader-extra-headers-prefix", "X-Remote-Extra-"])
        .args(["--proxy-client-cert-file", &p(&pki.front_proxy_client.cert)])
        .args(["--proxy-client-key-file", &p(&pki.front_proxy_client.key)])
        .arg("--enable-aggregator-routing=true")
        .args([
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
        ])
        .args(["--service-account-key-file", &p(&pki.service_account_pub)])
        .args([
            "--service-account-signing-key-file",
            &p(&pki.service_account_key),
        ])
        .args(["--cert-dir", &p(&dir.join("apiserver"))])
        .arg("--profiling=false")
        .args(["--v", "1"]);
    let audit_log = if audit_users.is_empty() {
        None
    } else {
        let policy = dir.join("audit-policy.yaml");
        fs::write(&policy, audit_policy(audit_users))?;
        let log = dir.join("audit.log");
        cmd.args(["--audit-policy-file", &p(&policy)])
            .args(["--audit-log-path", &p(&log)])
            .args(["--audit-log-format", "json"]);
        Some(log)
    };
    let apiserver = state.spawn("kube-apiserver", cmd)?;
    state.apiserver_url = Some(apiserver_url.clone());
    state.save()?;

    let admin_kubeconfig = dir.join("admin.kubeconfig");
    client_kubeconfig(
        &admin_kubeconfig,
        &apiserver_url,
        &pki.ca.cert,
        pki::ADMIN_USER,
        &pki.admin,
    )?;
    let kubectl = Kubectl::new(&admin_kubeconfig)?;
    wait::until(
        "kube-apiserver to be ready (/readyz)",
        Duration::from_secs(120),
        || {
            apiserver.ensure_alive()?;
            Ok(kubectl
                .run(&["get", "--raw", "/readyz"])
                .ok()
                .filter(|o| o.trim() == "ok")
                .map(|_| ()))
        },
    )?;

    let token = bootstrap_token()?;
    kubectl
        .apply_yaml(&(bootstrap_objects(&token) + &apiserver_address_config_map(api_port)))
        .context("create the bootstrap token, the node RBAC bindings and the apiserver address")?;
    let bootstrap_kubeconfig = dir.join("bootstrap.kubeconfig");
    kubeconfig::write(
        &bootstrap_kubeconfig,
        &apiserver_url,
        &pki.ca.cert,
        "kubelet-bootstrap",
        Credentials::Token(&token),
    )?;

    // kube-controller-manager and kube-scheduler
    let cm_kubeconfig = dir.join("controller-manager.kubeconfig");
    client_kubeconfig(
        &cm_kubeconfig,
        &apiserver_url,
        &pki.ca.cert,
        "system:kube-controller-manager",
        &pki.controller_manager,
    )?;
    let cm_port = free_port()?;
    let mut cmd = component("kube-controller-manager", &cm_kubeconfig, cm_port)?;
    cmd.arg("--use-service-account-credentials=true")
        .args([
            "--service-account-private-key-file",
            &p(&pki.service_account_key),
        ])
        .args(["--root-ca-file", &p(&pki.ca.cert)])
        .args(["--cluster-signing-cert-file", &p(&pki.ca.cert)])
        .args(["--cluster-signing-key-file", &p(&pki.ca.key)])
        .args(["--controllers", "*,bootstrapsigner,tokencleaner"])
        .args(["--service-cluster-ip-range", SERVICE_RANGE])
        .args(["--cluster-name", "gantry-e2e"])
        .args(["--v", "1"]);
    let cm = state.spawn("kube-controller-manager", cmd)?;

    let sched_kubeconfig = dir.join("scheduler.kubeconfig");
    client_kubeconfig(
        &sched_kubeconfig,
        &apiserver_url,
        &pki.ca.cert,
        "system:kube-scheduler",
        &pki.scheduler,
    )?;
    let sched_port = free_port()?;
    let mut cmd = component("kube-scheduler", &sched_kubeconfig, sched_port)?;
    cmd.args(["--v", "1"]);
    let scheduler = state.spawn("kube-scheduler", cmd)?;

    // The service-account controller creating `default` shows the controller-manager
    // works; pods cannot be admitted before that account exists anyway.
    wait::until(
        "the controller-manager to create ServiceAccount default/default",
        Duration::from_secs(120),
        || {
            cm.ensure_alive()?;
            Ok(kubectl
                .run(&["get", "serviceaccount", "default", "-n", "default"])
                .ok()
                .map(|_| ()))
        },
    )?;
    wait::until("kube-scheduler to listen", Duration::from_secs(60), || {
        scheduler.ensure_alive()?;
        Ok(TcpStream::connect(("127.0.0.1", sched_port))
            .ok()
            .map(|_| ()))
    })?;

    Ok(ControlPlane {
        pki,
        apiserver_url,
        admin_kubeconfig,
        bootstrap_kubeconfig,
        audit_log,
    })
}

/// An audit policy that logs the requests of `users` at Metadata level (who, verb,
/// resource, status; no bodies) and nothing else.
fn audit_policy(users: &[String]) -> String {
    let list: Vec<String> = users.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  users: [{}]\n- level: None\n",
        list.join(", ")
    )
}

/// A kubeconfig whose user authenticates with a client certificate of the bed's PKI.
fn client_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    certs: &CertFiles,
) -> Result<()> {
    kubeconfig::write(
        path,
        server,
        ca,
        user,
        Credentials::ClientCert {
            cert: &certs.cert,
            key: &certs.key,
        },
    )
}

/// kube-controller-manager or kube-scheduler: authenticated and authorized through
/// `kubeconfig`, serving its health endpoints on 127.0.0.1:`port`, alone (no leader
/// election).
fn component(tool: &str, kubeconfig: &Path, port: u16) -> Result<Command> {
    let mut cmd = Command::new(paths::tool(tool)?);
    for flag in [
        "--kubeconfig",
        "--authentication-kubeconfig",
        "--authorization-kubeconfig",
    ] {
        cmd.arg(flag).arg(kubeconfig);
    }
    cmd.args([
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        &port.to_string(),
    ])
    .arg("--leader-elect=false");
    Ok(cmd)
}

/// Where the apiserver listens, for pods on the host network (metrics-server): pods in the
/// pod network cannot reach it, since it listens on loopback and the `kubernetes` service
/// address leads nowhere without kube-proxy. A Deployment reads it into
/// KUBERNETES_SERVICE_HOST/PORT, which override the service's variables.
/// manifests/demo/metrics-server.yaml reads this ConfigMap by name: rename both.
const APISERVER_ADDRESS_CONFIG_MAP: &str = "gantry-e2e-apiserver";

fn apiserver_address_config_map(port: u16) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {APISERVER_ADDRESS_CONFIG_MAP}\n  namespace: kube-system\ndata:\n  host: 127.0.0.1\n  port: \"{port}\"\n"
    )
}

/// A bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` from the kernel's random source.
fn bootstrap_token() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 22];
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    Ok(format!("{}.{}", &chars[..6], &chars[6..]))
}

/// The token's Secret and the RBAC bindings kubeadm creates so nodes can join: the
/// bootstrap group may create CSRs, which the controller-manager auto-approves, and nodes
/// may renew their own certificates. The apiserver's kubelet client may use kubelet APIs.
fn bootstrap_objects(token: &str) -> String {
    let (id, secret) = token.split_once('.').unwrap_or((token, ""));
    let binding = |name: &str, role: &str, kind: &str, subject: &str| {
        format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {role}\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: {kind}\n  name: {subject}\n"
        )
    };
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{id}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {id}\n  token-secret: {secret}\n  usage-bootstrap-authentication: \"true\"\n  usage-bootstrap-signing: \"true\"\n  auth-extra-groups: {BOOTSTRAP_GROUP}\n"
    );
    yaml += &binding(
        "gantry-e2e:node-bootstrapper",
        "system:node-bootstrapper",
        "Group",
        "system:bootstrappers",
    );
    yaml += &binding(
        "gantry-e2e:node-autoapprove-bootstrap",
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "Group",
        "system:bootstrappers",
    );
    yaml += &binding(
        "gantry-e2e:node-autoapprove-certificate-rotation",
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        "Group",
        "system:nodes",
    );
    yaml += &binding(
        "gantry-e2e:apiserver-kubelet-client",
        "system:kubelet-api-admin",
        "User",
        pki::APISERVER_KUBELET_CLIENT_USER,
    );
    yaml
}
