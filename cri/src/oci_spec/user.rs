//! The container's user: uid, gid and additional gids from the CRI security context or
//! the image's USER, resolved against the image's /etc/passwd and /etc/group as
//! containerd's CRI plugin does (oci.WithUser, WithAdditionalGIDs, WithSupplementalGroups).

use crate::api::{self, SupplementalGroupsPolicy};
use crate::error::{CriError, Result};

/// The user the container's first process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, without duplicates, always holding `gid` (as containerd: `id -G` lists the
    /// primary group first because it is the smallest or because runc puts it first).
    pub additional_gids: Vec<u32>,
}

/// One line of /etc/passwd.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

/// One line of /etc/group.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Lines of a colon-separated database; comments, blank lines and lines whose numeric
/// fields do not parse are skipped, as moby/sys/user does.
fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
        })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(GroupEntry {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// runc requires ids up to i32::MAX; containerd rejects larger ones the same way.
fn parse_id(s: &str) -> Option<std::result::Result<u32, ()>> {
    let v: i64 = s.parse().ok()?;
    Some(if (0..=i32::MAX as i64).contains(&v) {
        Ok(v as u32)
    } else {
        Err(())
    })
}

/// Resolves the user as containerd does:
/// - the user string is run_as_username, else run_as_user, with ":run_as_group"
///   appended; without either, the image's USER; without that, root;
/// - "uid" takes its gid from the passwd entry of that uid (0 when none), "name" must
///   exist in passwd, "user:group" takes the group part as given (a name must exist in
///   /etc/group);
/// - additional gids are the primary gid, the supplemental groups, and (policy Merge)
///   every /etc/group entry listing the user by name.
pub(super) fn resolve(
    who: &str,
    sc: Option<&api::LinuxContainerSecurityContext>,
    image_user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser> {
    let invalid = |msg: String| CriError::InvalidArgument(format!("{who}: {msg}"));
    let username = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");
    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);
    for (field, v) in [("run_as_user", run_as_user), ("run_as_group", run_as_group)] {
        if let Some(v) = v {
            if !(0..=i32::MAX as i64).contains(&v) {
                return Err(invalid(format!("{field} {v} is out of range")));
            }
        }
    }

    // The string WithUser parses, and where it came from (for error messages).
    let (userstr, source) = if !username.is_empty() || run_as_user.is_some() {
        let user = if username.is_empty() {
            run_as_user.unwrap_or_default().to_string()
        } else {
            username.to_string()
        };
        match run_as_group {
            Some(g) => (format!("{user}:{g}"), "the security context"),
            None => (user, "the security context"),
        }
    } else if let Some(g) = run_as_group {
        return Err(invalid(format!(
            "run_as_group {g} is set without run_as_user or run_as_username"
        )));
    } else if !image_user.is_empty() {
        (image_user.to_string(), "the image's USER")
    } else {
        ("0".to_string(), "the default")
    };

    let lookup_name = |name: &str| -> Result<(u32, u32)> {
        passwd
            .and_then(|p| passwd_entries(p).find(|e| e.name == name))
            .map(|e| (e.uid, e.gid))
            .ok_or_else(|| {
                invalid(format!(
                    "user {name:?} (from {source}) is not in the image's /etc/passwd{}",
                    if passwd.is_none() {
                        " (the image has none)"
                    } else {
                        ""
                    }
                ))
            })
    };
    let parts: Vec<&str> = userstr.split(':').collect();
    let (uid, gid) = match parts.as_slice() {
        [user] => match parse_id(user) {
            Some(Ok(uid)) => {
                let gid = passwd
                    .and_then(|p| passwd_entries(p).find(|e| e.uid == uid))
                    .map(|e| e.gid)
                    .unwrap_or(0);
                (uid, gid)
            }
            Some(Err(())) => {
                return Err(invalid(format!(
                    "user {userstr:?} (from {source}): uid out of range"
                )))
            }
            None => lookup_name(user)?,
        },
        [user, grp] => {
            let uid = match parse_id(user) {
                Some(Ok(uid)) => uid,
                Some(Err(())) => {
                    return Err(invalid(format!(
                        "user {userstr:?} (from {source}): uid out of range"
                    )))
                }
                None => lookup_name(user)?.0,
            };
            let gid = match parse_id(grp) {
                Some(Ok(gid)) => gid,
                Some(Err(())) => {
                    return Err(invalid(format!(
                        "user {userstr:?} (from {source}): gid out of range"
                    )))
                }
                None => group
                    .and_then(|g| group_entries(g).find(|e| e.name == *grp))
                    .map(|e| e.gid)
                    .ok_or_else(|| {
                        invalid(format!(
                            "group {grp:?} (from {source}) is not in the image's /etc/group"
                        ))
                    })?,
            };
            (uid, gid)
        }
        _ => return Err(invalid(format!("invalid user {userstr:?} (from {source})"))),
    };

    // The name whose /etc/group memberships count: containerd passes the user part of
    // the string ("0" when nothing was set) and maps a uid to its passwd name.
    let policy = sc.map(|s| s.supplemental_groups_policy).unwrap_or_default();
    let mut gids = vec![gid];
    match SupplementalGroupsPolicy::try_from(policy) {
        Ok(SupplementalGroupsPolicy::Merge) => {
            let user_part = parts[0];
            let member = match parse_id(user_part) {
                Some(Ok(uid)) => passwd
                    .and_then(|p| passwd_entries(p).find(|e| e.uid == uid))
                    .map(|e| e.name),
                _ => Some(user_part),
            };
            if let (Some(member), Some(group)) = (member, group) {
                gids.extend(
                    group_entries(group)
                        .filter(|g| g.name != member && g.members.contains(&member))
                        .map(|g| g.gid),
                );
            }
        }
        Ok(SupplementalGroupsPolicy::Strict) => {}
        Err(_) => {
            return Err(invalid(format!(
                "supplemental_groups_policy {policy} is not Merge or Strict"
            )))
        }
    }
    for g in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        match u32::try_from(*g) {
            Ok(g) if g <= i32::MAX as u32 => gids.push(g),
            _ => return Err(invalid(format!("supplemental group {g} is out of range"))),
        }
    }
    gids.sort_unstable();
    gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: gids,
    })
}
