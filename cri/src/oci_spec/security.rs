//! Capabilities, seccomp and AppArmor from the CRI security context, as containerd's
//! CRI plugin decides them (opts.WithCapabilities, oci.WithPrivileged,
//! sputil.GenerateSeccompSpecOpts / GenerateApparmorSpecOpts).

use std::path::Path;

use ::oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxSeccomp};

use super::{seccomp_default, HostLookup};
use crate::api::{self, security_profile::ProfileType};
use crate::error::{CriError, Result};

/// containerd 1.x's default set for CRI containers (Docker's default minus nothing).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability oci-spec knows, in kernel bit order (CAP_CHOWN is bit 0).
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Capability sets in a stable order (oci-spec stores them as hash sets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct CapSets {
    pub bounding: Vec<Capability>,
    pub effective: Vec<Capability>,
    pub permitted: Vec<Capability>,
    pub inheritable: Vec<Capability>,
    pub ambient: Vec<Capability>,
}

impl CapSets {
    pub fn to_oci(&self) -> LinuxCapabilities {
        let set = |v: &[Capability]| -> Option<Capabilities> { Some(v.iter().copied().collect()) };
        let mut c = LinuxCapabilities::default();
        c.set_bounding(set(&self.bounding));
        c.set_effective(set(&self.effective));
        c.set_permitted(set(&self.permitted));
        c.set_inheritable(set(&self.inheritable));
        c.set_ambient(set(&self.ambient));
        c
    }
}

fn add(v: &mut Vec<Capability>, c: Capability) {
    if !v.contains(&c) {
        v.push(c);
    }
}

/// "net_admin", "NET_ADMIN" and "CAP_NET_ADMIN" name the same capability.
fn parse_capability(who: &str, field: &str, name: &str) -> Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse().map_err(|_| {
        CriError::InvalidArgument(format!(
            "{who}: capabilities.{field}: unknown capability {name:?}"
        ))
    })
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The process capabilities. A privileged container gets every capability the agent
/// holds (containerd's cap.Current()) and its add/drop lists are ignored; otherwise
/// the default set, then "ALL" in add (the agent's set) or drop (nothing), then the
/// single adds and drops. Ambient capabilities are cleared unless requested; a
/// requested ambient capability is also added to the other sets, which the kernel
/// requires.
pub(super) fn capabilities(
    who: &str,
    sc: Option<&api::LinuxContainerSecurityContext>,
    host_capabilities: &[Capability],
) -> Result<CapSets> {
    let privileged = sc.is_some_and(|s| s.privileged);
    if privileged {
        let all = host_capabilities.to_vec();
        return Ok(CapSets {
            bounding: all.clone(),
            effective: all.clone(),
            permitted: all,
            ..CapSets::default()
        });
    }
    let mut s = CapSets {
        bounding: DEFAULT_CAPABILITIES.to_vec(),
        effective: DEFAULT_CAPABILITIES.to_vec(),
        permitted: DEFAULT_CAPABILITIES.to_vec(),
        ..CapSets::default()
    };
    let Some(caps) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(s);
    };
    if caps.add_capabilities.iter().any(|c| is_all(c)) {
        s.bounding = host_capabilities.to_vec();
        s.effective = host_capabilities.to_vec();
        s.permitted = host_capabilities.to_vec();
    }
    if caps.drop_capabilities.iter().any(|c| is_all(c)) {
        s = CapSets::default();
    }
    for name in caps.add_capabilities.iter().filter(|c| !is_all(c)) {
        let c = parse_capability(who, "add_capabilities", name)?;
        for set in [&mut s.bounding, &mut s.effective, &mut s.permitted] {
            add(set, c);
        }
    }
    for name in caps.drop_capabilities.iter().filter(|c| !is_all(c)) {
        let c = parse_capability(who, "drop_capabilities", name)?;
        for set in [
            &mut s.bounding,
            &mut s.effective,
            &mut s.permitted,
            &mut s.inheritable,
        ] {
            set.retain(|x| *x != c);
        }
    }
    for name in &caps.add_ambient_capabilities {
        let c = parse_capability(who, "add_ambient_capabilities", name)?;
        for set in [
            &mut s.bounding,
            &mut s.effective,
            &mut s.permitted,
            &mut s.inheritable,
            &mut s.ambient,
        ] {
            add(set, c);
        }
    }
    Ok(s)
}

/// A seccomp or AppArmor choice after the deprecated string forms are folded in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Profile {
    Unconfined,
    RuntimeDefault,
    Localhost(String),
}

/// The typed profile if set, else the deprecated string ("runtime/default",
/// "docker/default", "unconfined", "localhost/<ref>"). `empty` is what an unset string
/// means.
fn profile(
    who: &str,
    field: &str,
    typed: Option<&api::SecurityProfile>,
    deprecated: &str,
    empty: Option<Profile>,
) -> Result<Option<Profile>> {
    let invalid = |msg: String| CriError::InvalidArgument(format!("{who}: {field}: {msg}"));
    if let Some(p) = typed {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(Profile::RuntimeDefault)),
            Ok(ProfileType::Unconfined) => Ok(Some(Profile::Unconfined)),
            Ok(ProfileType::Localhost) => {
                let r = p
                    .localhost_ref
                    .strip_prefix("localhost/")
                    .unwrap_or(&p.localhost_ref);
                if r.is_empty() {
                    Err(invalid("a Localhost profile needs localhost_ref".into()))
                } else {
                    Ok(Some(Profile::Localhost(r.to_string())))
                }
            }
            Err(_) => Err(invalid(format!("unknown profile type {}", p.profile_type))),
        };
    }
    Ok(match deprecated {
        "" => empty,
        "runtime/default" | "docker/default" => Some(Profile::RuntimeDefault),
        "unconfined" => Some(Profile::Unconfined),
        other => match other.strip_prefix("localhost/") {
            Some(r) if !r.is_empty() => Some(Profile::Localhost(r.to_string())),
            _ => return Err(invalid(format!("invalid profile {other:?}"))),
        },
    })
}

/// The seccomp filter: none for privileged containers, Unconfined or an unset profile;
/// for RuntimeDefault the caller's profile or the built-in one (which depends on the
/// bounding set); for Localhost the JSON file at the given absolute path, in OCI
/// format (a Docker-style "name" is accepted for "names").
pub(super) fn seccomp(
    who: &str,
    sc: Option<&api::LinuxContainerSecurityContext>,
    bounding: &[Capability],
    runtime_default: Option<&LinuxSeccomp>,
    lookup: &dyn HostLookup,
) -> Result<Option<LinuxSeccomp>> {
    let Some(sc) = sc else { return Ok(None) };
    if sc.privileged {
        return Ok(None);
    }
    #[allow(deprecated)]
    let deprecated = sc.seccomp_profile_path.as_str();
    match profile(who, "seccomp", sc.seccomp.as_ref(), deprecated, None)? {
        None | Some(Profile::Unconfined) => Ok(None),
        Some(Profile::RuntimeDefault) => Ok(Some(match runtime_default {
            Some(p) => p.clone(),
            None => seccomp_default::profile(bounding)?,
        })),
        Some(Profile::Localhost(path)) => {
            let path = Path::new(&path);
            if !path.is_absolute() {
                return Err(CriError::InvalidArgument(format!(
                    "{who}: seccomp: the Localhost profile {} is not an absolute path",
                    path.display()
                )));
            }
            let text = lookup.seccomp_profile(path)?;
            parse_seccomp(&text).map(Some).map_err(|e| {
                CriError::InvalidArgument(format!(
                    "{who}: seccomp: the Localhost profile {}: {e}",
                    path.display()
                ))
            })
        }
    }
}

/// Parses an OCI seccomp profile; a rule with Docker's single "name" gets "names".
pub fn parse_seccomp(text: &str) -> std::result::Result<LinuxSeccomp, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_str(text)?;
    if let Some(rules) = v.get_mut("syscalls").and_then(|s| s.as_array_mut()) {
        for r in rules.iter_mut().filter_map(|r| r.as_object_mut()) {
            if !r.contains_key("names") {
                if let Some(name) = r.remove("name") {
                    r.insert("names".into(), serde_json::Value::Array(vec![name]));
                }
            }
        }
    }
    serde_json::from_value(v)
}

/// The AppArmor profile name to set. This host has no AppArmor, so the caller passes
/// the RuntimeDefault profile's name only where AppArmor is loaded; an explicit
/// Localhost profile is always set (with "localhost/" stripped) and left to the runtime
/// to apply or refuse. Privileged containers get no default profile.
pub(super) fn apparmor(
    who: &str,
    sc: Option<&api::LinuxContainerSecurityContext>,
    runtime_default: Option<&str>,
) -> Result<Option<String>> {
    let privileged = sc.is_some_and(|s| s.privileged);
    #[allow(deprecated)]
    let deprecated = sc.map(|s| s.apparmor_profile.as_str()).unwrap_or("");
    let chosen = profile(
        who,
        "apparmor",
        sc.and_then(|s| s.apparmor.as_ref()),
        deprecated,
        // As containerd (kubernetes#51746): no profile means the runtime default.
        Some(Profile::RuntimeDefault),
    )?;
    Ok(match chosen {
        Some(Profile::Localhost(name)) => Some(name),
        Some(Profile::RuntimeDefault) if !privileged => runtime_default.map(str::to_string),
        _ => None,
    })
}
