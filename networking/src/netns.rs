//! Pod namespaces pinned by bind mounts, with no process kept alive to hold them.
//!
//! As `ip netns add` and containerd's CRI (pkg/netns) do: a dedicated short-lived thread
//! unshares the namespaces, prepares them (hostname, loopback up) and bind-mounts its
//! `/proc/self/task/<tid>/ns/<kind>` files onto files under the pod's directory. The
//! mounts keep the namespaces alive after the thread exits, and the thread's exit means no
//! pooled thread is ever left inside a pod's namespaces.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

/// Which namespaces a pod gets of its own (the rest are shared with the host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsSet {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

impl NsSet {
    pub const ALL: NsSet = NsSet {
        net: true,
        ipc: true,
        uts: true,
    };

    fn kinds(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| match k {
            Kind::Net => self.net,
            Kind::Ipc => self.ipc,
            Kind::Uts => self.uts,
        })
    }

    fn clone_flags(self) -> CloneFlags {
        self.kinds()
            .fold(CloneFlags::empty(), |flags, k| flags | k.clone_flag())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Net,
    Ipc,
    Uts,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Net, Kind::Ipc, Kind::Uts];

    /// The name under /proc/<pid>/ns/ and of the pin file.
    fn name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// The pins of one pod's namespaces; `None` where the pod shares the host's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    pub dir: PathBuf,
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl PodNamespaces {
    /// The pins that are still mounted under `dir`, e.g. after the agent restarted.
    pub fn existing(dir: &Path) -> PodNamespaces {
        let pinned = |k: Kind| Some(dir.join(k.name())).filter(|p| is_pinned(p));
        PodNamespaces {
            dir: dir.to_path_buf(),
            net: pinned(Kind::Net),
            ipc: pinned(Kind::Ipc),
            uts: pinned(Kind::Uts),
        }
    }

    fn set(&mut self, kind: Kind, path: PathBuf) {
        match kind {
            Kind::Net => self.net = Some(path),
            Kind::Ipc => self.ipc = Some(path),
            Kind::Uts => self.uts = Some(path),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("create pod namespace dir {dir}: {source}")]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("pin {path}: a namespace is already mounted there")]
    AlreadyPinned { path: PathBuf },
    #[error("set hostname {hostname:?}: the pod has no UTS namespace of its own, and setting it would change the host's")]
    HostnameWithoutUts { hostname: String },
    #[error("start the thread that creates the namespaces under {dir}: {source}")]
    Spawn { dir: PathBuf, source: io::Error },
    #[error("the thread creating the namespaces under {dir} panicked")]
    ThreadPanicked { dir: PathBuf },
    #[error("unshare {kinds} namespaces for {dir}: {source}")]
    Unshare {
        kinds: String,
        dir: PathBuf,
        source: Errno,
    },
    #[error("set hostname {hostname:?} in the new UTS namespace for {dir}: {source}")]
    SetHostname {
        hostname: String,
        dir: PathBuf,
        source: Errno,
    },
    #[error("bring loopback up in the new network namespace for {dir}: {source}")]
    LoopbackUp { dir: PathBuf, source: Errno },
    #[error("create pin file {path}: {source}")]
    CreatePin { path: PathBuf, source: io::Error },
    #[error("bind-mount {from} onto {path}: {source}")]
    Pin {
        from: PathBuf,
        path: PathBuf,
        source: Errno,
    },
    #[error("unmount namespace pin {path}: {source}")]
    Unmount { path: PathBuf, source: Errno },
    #[error("remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

/// Creates the namespaces `want` says and pins them at `dir/net`, `dir/ipc`, `dir/uts`.
/// A new UTS namespace gets `hostname`; a new network namespace gets `lo` up. On failure
/// everything this call created is unmounted and removed before the error returns.
pub fn create(dir: &Path, want: NsSet, hostname: Option<&str>) -> Result<PodNamespaces> {
    if let Some(h) = hostname.filter(|_| !want.uts) {
        return Err(NetnsError::HostnameWithoutUts {
            hostname: h.to_string(),
        });
    }
    // Only a directory this call made is removed on rollback; a caller's stays.
    let created_dir = !dir.exists();
    fs::create_dir_all(dir).map_err(|source| NetnsError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let rollback = |pins: &[PathBuf]| {
        for pin in pins {
            if let Err(e) = unpin(pin) {
                tracing::warn!(error = %e, "rollback of a namespace pin");
            }
        }
        if created_dir {
            let _ = fs::remove_dir(dir);
        }
    };
    // Checked before the thread starts, so that after a panic every wanted path is ours.
    for kind in want.kinds() {
        let path = dir.join(kind.name());
        if is_pinned(&path) {
            rollback(&[]);
            return Err(NetnsError::AlreadyPinned { path });
        }
    }
    if want.kinds().next().is_none() {
        return Ok(PodNamespaces {
            dir: dir.to_path_buf(),
            ..Default::default()
        });
    }

    let owned_dir = dir.to_path_buf();
    let owned_hostname = hostname.map(str::to_string);
    let thread = std::thread::Builder::new()
        .name("gantry-netns".into())
        .spawn(move || pin_new_namespaces(&owned_dir, want, owned_hostname.as_deref()));
    let thread = match thread {
        Ok(t) => t,
        Err(source) => {
            rollback(&[]);
            return Err(NetnsError::Spawn {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    match thread.join() {
        Ok((pins, Ok(()))) => {
            let mut out = PodNamespaces {
                dir: dir.to_path_buf(),
                ..Default::default()
            };
            for (kind, path) in want.kinds().zip(pins) {
                out.set(kind, path);
            }
            Ok(out)
        }
        Ok((pins, Err(e))) => {
            rollback(&pins);
            Err(e)
        }
        Err(_) => {
            let all: Vec<PathBuf> = want.kinds().map(|k| dir.join(k.name())).collect();
            rollback(&all);
            Err(NetnsError::ThreadPanicked {
                dir: dir.to_path_buf(),
            })
        }
    }
}

/// Runs on the dedicated thread, which exits right after: returns the pin files it
/// created (in `want` order) whether or not it got through, so the caller can undo them.
fn pin_new_namespaces(
    dir: &Path,
    want: NsSet,
    hostname: Option<&str>,
) -> (Vec<PathBuf>, Result<()>) {
    let mut pins = Vec::new();
    let result = (|| {
        unshare(want.clone_flags()).map_err(|source| NetnsError::Unshare {
            kinds: want.kinds().map(Kind::name).collect::<Vec<_>>().join("+"),
            dir: dir.to_path_buf(),
            source,
        })?;
        if let Some(h) = hostname {
            nix::unistd::sethostname(h).map_err(|source| NetnsError::SetHostname {
                hostname: h.to_string(),
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        if want.net {
            loopback_up().map_err(|source| NetnsError::LoopbackUp {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let tid = nix::unistd::gettid();
        for kind in want.kinds() {
            let path = dir.join(kind.name());
            // Mode 0 as `ip netns add`: the file is only a mount point.
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o000)
                .open(&path)
                .map_err(|source| NetnsError::CreatePin {
                    path: path.clone(),
                    source,
                })?;
            pins.push(path.clone());
            let from = PathBuf::from(format!("/proc/self/task/{tid}/ns/{}", kind.name()));
            mount(
                Some(&from),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| NetnsError::Pin {
                from: from.clone(),
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    })();
    (pins, result)
}

nix::ioctl_read_bad!(siocgifflags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(siocsifflags, libc::SIOCSIFFLAGS, libc::ifreq);

/// Sets IFF_UP on `lo` of the calling thread's network namespace (a new namespace has it
/// down, and pods expect 127.0.0.1 to work even when CNI adds no loopback plugin).
fn loopback_up() -> nix::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming an interface; the socket is open.
    unsafe {
        siocgifflags(sock.as_raw_fd(), &mut req)?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        siocsifflags(sock.as_raw_fd(), &req)?;
    }
    Ok(())
}

/// Unmounts and deletes the pins under `dir`, then `dir` itself. Missing pins or a missing
/// `dir` are fine, so this is safe to call again after a crash or a previous call.
pub fn remove(dir: &Path) -> Result<()> {
    for kind in Kind::ALL {
        unpin(&dir.join(kind.name()))?;
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetnsError::Remove {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn unpin(path: &Path) -> Result<()> {
    // A pin mounted twice (a create racing a crash) needs as many unmounts; EINVAL says
    // no mount is left there, ENOENT that the file is gone.
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(source) => {
                return Err(NetnsError::Unmount {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetnsError::Remove {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Whether `path` is a mounted namespace file (nsfs), as the CNI plugins' `ns` package
/// checks before entering it.
pub fn is_pinned(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Connects to `port` on localhost inside the network namespace pinned at `netns`
/// (the host's when `None`), for port-forwarding: the socket is created by a thread
/// that entered the namespace, and keeps that namespace after the thread ends. IPv4
/// is tried first, then IPv6, as the upstream runtimes do.
pub fn connect_tcp_in(netns: Option<&Path>, port: u16) -> io::Result<std::net::TcpStream> {
    let connect = move || -> io::Result<std::net::TcpStream> {
        let v4 = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
        match v4 {
            Ok(s) => Ok(s),
            Err(e4) => {
                std::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port)).map_err(|_| e4)
            }
        }
    };
    let Some(path) = netns else {
        return connect();
    };
    let ns = fs::File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<std::net::TcpStream> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            connect()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the port-forward thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn root() -> bool {
        let ok = nix::unistd::geteuid().is_root();
        if !ok {
            eprintln!("skipped: needs root");
        }
        ok
    }

    fn mounts_under(dir: &Path) -> Vec<String> {
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let needle = dir.to_string_lossy().to_string();
        info.lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    fn nsenter(flag: &str, pin: &Path, cmd: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--{flag}={}", pin.display()))
            .args(cmd)
            .output()
            .expect("run nsenter");
        assert!(out.status.success(), "nsenter {cmd:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn create_pins_three_new_namespaces_with_hostname_and_loopback_up() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("pod-a");
        let ns = create(&dir, NsSet::ALL, Some("pod-a-host")).expect("create");
        for (kind, pin) in [("net", &ns.net), ("ipc", &ns.ipc), ("uts", &ns.uts)] {
            let pin = pin.as_ref().expect("pinned");
            assert_eq!(pin, &dir.join(kind));
            assert!(is_pinned(pin), "{kind} is an nsfs mount");
            let host = fs::metadata(format!("/proc/self/ns/{kind}")).expect("host ns");
            let pod = fs::metadata(pin).expect("pin");
            assert_ne!(host.ino(), pod.ino(), "{kind} differs from the host's");
        }
        assert_eq!(
            PodNamespaces::existing(&dir),
            ns,
            "existing() finds the same pins"
        );
        let uts = ns.uts.as_deref().expect("uts");
        assert_eq!(nsenter("uts", uts, &["hostname"]).trim(), "pod-a-host");
        let net = ns.net.as_deref().expect("net");
        let lo = nsenter("net", net, &["ip", "-o", "link", "show", "lo"]);
        assert!(lo.contains("<LOOPBACK,UP"), "lo is up: {lo}");

        remove(&dir).expect("remove");
        assert!(!dir.exists());
        assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
        remove(&dir).expect("remove twice");
    }

    #[test]
    fn create_only_net_leaves_ipc_and_uts_shared() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("pod-b");
        let want = NsSet {
            net: true,
            ..Default::default()
        };
        let ns = create(&dir, want, None).expect("create");
        assert!(ns.net.is_some() && ns.ipc.is_none() && ns.uts.is_none());
        assert!(!dir.join("uts").exists());
        remove(&dir).expect("remove");
        assert!(mounts_under(&dir).is_empty());
    }

    #[test]
    fn hostname_without_uts_namespace_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("pod-c");
        let want = NsSet {
            net: true,
            ..Default::default()
        };
        let err = create(&dir, want, Some("x")).expect_err("refused");
        assert!(matches!(err, NetnsError::HostnameWithoutUts { .. }));
        assert!(!dir.exists());
    }

    #[test]
    fn failure_on_the_third_pin_unmounts_and_removes_the_first_two() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("pod-d");
        // A directory where the uts pin goes: net and ipc get mounted, uts fails.
        fs::create_dir_all(dir.join("uts")).expect("mkdir");
        let err = create(&dir, NsSet::ALL, Some("h")).expect_err("uts pin fails");
        assert!(matches!(err, NetnsError::CreatePin { .. }), "{err}");
        assert!(err.to_string().contains("uts"), "{err}");
        assert!(!dir.join("net").exists() && !dir.join("ipc").exists());
        assert!(dir.join("uts").is_dir(), "what the caller had is kept");
        assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
    }

    #[test]
    fn failure_in_the_thread_removes_the_dir_it_created() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("pod-e");
        // Longer than HOST_NAME_MAX (64): sethostname fails after unshare.
        let err = create(&dir, NsSet::ALL, Some(&"h".repeat(80))).expect_err("EINVAL");
        assert!(matches!(err, NetnsError::SetHostname { .. }), "{err}");
        assert!(!dir.exists());
        assert!(mounts_under(&dir).is_empty());
    }

    #[test]
    fn unwritable_location_fails_without_leftovers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("a-file");
        fs::write(&file, "").expect("write");
        let dir = file.join("pod-f");
        let err = create(&dir, NsSet::ALL, None).expect_err("not a directory");
        assert!(matches!(err, NetnsError::CreateDir { .. }), "{err}");
        assert!(err.to_string().contains("pod-f"), "{err}");
        assert!(mounts_under(&dir).is_empty());
    }

    #[test]
    fn creating_over_live_pins_is_refused_and_keeps_them() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("pod-g");
        let ns = create(&dir, NsSet::ALL, None).expect("create");
        let err = create(&dir, NsSet::ALL, None).expect_err("already pinned");
        assert!(matches!(err, NetnsError::AlreadyPinned { .. }), "{err}");
        assert!(ns.net.as_deref().is_some_and(is_pinned));
        remove(&dir).expect("remove");
        assert!(mounts_under(&dir).is_empty());
    }

    #[test]
    fn remove_of_a_missing_dir_is_fine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        remove(&tmp.path().join("never-made")).expect("idempotent");
    }
}
