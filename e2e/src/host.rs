//! Small host operations the harness needs: running commands, mounts, cgroups,
//! iptables and sysctls. Each cleanup function is safe to call twice.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs a command to completion; fails with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    stdout_of(&format!("{program} {}", args.join(" ")), out)
}

/// Runs a command inside the network namespace pinned at `netns` (through nsenter, which
/// unlike `ip netns exec` leaves the mount namespace alone).
pub fn run_in_netns(netns: &Path, program: &str, args: &[&str]) -> Result<String> {
    let net = format!("--net={}", netns.display());
    let mut full = vec![net.as_str(), "--", program];
    full.extend_from_slice(args);
    run("nsenter", &full)
}

/// The stdout of a finished command, or an error naming `what` with its exit status
/// and stderr.
pub fn stdout_of(what: &str, out: std::process::Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(PathBuf::from)
        .collect();
    // Deepest (and, for stacked mounts, latest) first.
    found.reverse();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

fn unescape_mountinfo(field: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo octal.
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount at or below `dir` (lazily, so a busy mount cannot block
/// teardown); returns the mount points that could not be detached.
pub fn unmount_below(dir: &Path) -> Vec<PathBuf> {
    for _ in 0..5 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return Vec::new();
        }
        for m in &mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2 with a valid NUL-terminated path.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    mounts_below(dir)
}

/// Hierarchies of the cgroup filesystem: every v1 controller mount and the v2 mount.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mount_point = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| PathBuf::from(unescape_mountinfo(mount_point)))
        })
        .collect()
}

/// Creates cgroup `name` directly below the root of every hierarchy, ready to take
/// processes (cpuset needs its cpus and mems copied from the parent).
pub fn create_cgroup_root(name: &str) -> Result<()> {
    for mount in cgroup_mounts() {
        let dir = mount.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = fs::read_to_string(mount.join(file)) {
                let current = fs::read_to_string(dir.join(file)).unwrap_or_default();
                if current.trim().is_empty() {
                    fs::write(dir.join(file), v.trim())
                        .with_context(|| format!("set {}/{file}", dir.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// Kills every process in cgroup `name` of every hierarchy and removes the cgroups,
/// deepest first. Returns the cgroups that could not be removed.
pub fn destroy_cgroup_root(name: &str) -> Vec<PathBuf> {
    let roots: Vec<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|m| m.join(name))
        .filter(|d| d.is_dir())
        .collect();
    for _ in 0..50 {
        let mut pids = Vec::new();
        for root in &roots {
            for dir in walk_dirs(root) {
                for file in ["cgroup.procs", "tasks"] {
                    if let Ok(text) = fs::read_to_string(dir.join(file)) {
                        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                    }
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        // A frozen cgroup would keep SIGKILLed tasks alive: thaw first.
        for root in &roots {
            for dir in walk_dirs(root) {
                let _ = fs::write(dir.join("freezer.state"), "THAWED");
            }
        }
        crate::process::kill_all(&pids);
    }
    let mut left = Vec::new();
    for root in &roots {
        let mut dirs = walk_dirs(root);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            if fs::remove_dir(&dir).is_err() && dir.exists() {
                left.push(dir);
            }
        }
    }
    left
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        out.push(dir);
    }
    out
}

pub const IPTABLES_TABLES: [&str; 4] = ["filter", "nat", "mangle", "raw"];

/// Deletes, in every table of iptables and ip6tables, the rules whose text contains
/// `needle` (a comment tag or a chain name), then the chains `chain_matches` accepts once
/// nothing refers to them.
pub fn iptables_remove(needle: Option<&str>, chain_matches: &dyn Fn(&str) -> bool) {
    for bin in ["iptables", "ip6tables"] {
        for table in IPTABLES_TABLES {
            let Ok(dump) = run(bin, &["-w", "-t", table, "-S"]) else {
                continue;
            };
            let chains: Vec<String> = dump
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .map(str::to_string)
                .filter(|c| chain_matches(c))
                .collect();
            let mut chains = chains;
            for rule in dump.lines().filter(|l| l.starts_with("-A ")) {
                let doomed_target = chains.iter().any(|c| {
                    rule.contains(&format!(" -j {c}")) || rule.contains(&format!(" -g {c}"))
                });
                let tagged = needle.map(|n| rule.contains(n)).unwrap_or(false);
                if doomed_target || tagged {
                    delete_rule(bin, table, rule);
                }
                // A tagged rule's private chain (the portmap plugin's CNI-DN-<hash>) goes
                // with it.
                if tagged {
                    let target = rule.rsplit(" -j ").next().map(str::trim);
                    if let Some(t) = target.filter(|t| t.starts_with("CNI-DN-")) {
                        chains.push(t.to_string());
                    }
                }
            }
            for chain in &chains {
                let _ = run(bin, &["-w", "-t", table, "-F", chain]);
            }
            for chain in &chains {
                let _ = run(bin, &["-w", "-t", table, "-X", chain]);
            }
        }
    }
}

fn delete_rule(bin: &str, table: &str, rule: &str) {
    // `-S` prints rules as arguments to -A; quoted comments must be split like a shell.
    let Some(args) = shell_words(&rule[3..]) else {
        return;
    };
    let mut full: Vec<&str> = vec!["-w", "-t", table, "-D"];
    full.extend(args.iter().map(String::as_str));
    let _ = run(bin, &full);
}

/// Splits `-S` output into words, honouring double quotes and backslash escapes.
fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(chars.next()?);
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

pub fn read_sysctl(key: &str) -> Option<String> {
    fs::read_to_string(sysctl_path(key))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    fs::write(sysctl_path(key), value).with_context(|| format!("set sysctl {key}={value}"))
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Whether network interface `name` exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes interface `name` and every veth attached to it as a bridge port.
pub fn delete_bridge(name: &str) {
    let brif = Path::new("/sys/class/net").join(name).join("brif");
    if let Ok(ports) = fs::read_dir(brif) {
        for port in ports.flatten() {
            let _ = run(
                "ip",
                &["link", "delete", &port.file_name().to_string_lossy()],
            );
        }
    }
    if link_exists(name) {
        let _ = run("ip", &["link", "delete", name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_keeps_quoted_comment_with_escaped_quotes() {
        let rule = r#"CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"gantry-e2e-x\" id: \"abc\"" -j CNI-DN-1"#;
        let words = shell_words(rule).expect("balanced quotes");
        assert_eq!(words[6], r#"dnat name: "gantry-e2e-x" id: "abc""#);
        assert_eq!(words.last().map(String::as_str), Some("CNI-DN-1"));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/var/lib/a\040b"), "/var/lib/a b");
        assert_eq!(unescape_mountinfo("/plain/path"), "/plain/path");
    }
}
