//! What the agents cost the host, from /proc: resident memory (VmRSS), proportional
//! set size (smaps_rollup's Pss, which splits shared pages among their users) and CPU
//! time (utime + stime) of a process or a set of processes.

use std::fs;

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Memory {
    pub rss_bytes: u64,
    pub pss_bytes: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, o: Memory) -> Memory {
        Memory {
            rss_bytes: self.rss_bytes + o.rss_bytes,
            pss_bytes: self.pss_bytes + o.pss_bytes,
        }
    }
}

/// VmRSS and Pss of `pid` (zero for what cannot be read: the process is gone).
pub fn memory(pid: i32) -> Memory {
    let kb = |file: &str, key: &str| -> u64 {
        fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()
            .and_then(|t| field_kb(&t, key))
            .unwrap_or(0)
            * 1024
    };
    Memory {
        rss_bytes: kb("status", "VmRSS:"),
        pss_bytes: kb("smaps_rollup", "Pss:"),
    }
}

fn field_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime of `pid` in seconds (its threads included; exited children not).
pub fn cpu_seconds(pid: i32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    cpu_of_stat(&stat) / clock_ticks()
}

fn cpu_of_stat(stat: &str) -> f64 {
    let Some(i) = stat.rfind(')') else { return 0.0 };
    let f: Vec<&str> = stat[i + 2..].split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let n = |k: usize| {
        f.get(k - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    n(14) + n(15)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The containerd shims (containerd-shim-runc-v2) of containerd namespace `namespace`
/// under the containerd listening at `address`.
pub fn shims(address: &str, namespace: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if is_shim_of(&args, address, namespace) {
            found.push(pid);
        }
    }
    found
}

fn is_shim_of(args: &[String], address: &str, namespace: &str) -> bool {
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    args.first()
        .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
        && after("-namespace").map(String::as_str) == Some(namespace)
        && after("-address").map(String::as_str) == Some(address)
}

pub fn total_memory(pids: &[i32]) -> Memory {
    pids.iter()
        .map(|p| memory(*p))
        .fold(Memory::default(), |a, b| a + b)
}

pub fn total_cpu(pids: &[i32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 0";
        assert_eq!(cpu_of_stat(stat), 300.0);
        assert_eq!(
            field_kb("VmHWM:\t  10 kB\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048)
        );
    }

    #[test]
    fn shims_are_matched_by_namespace_and_address() {
        let args: Vec<String> = [
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "k8s.io",
            "-id",
            "x",
            "-address",
            "/b/containerd.sock",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(is_shim_of(&args, "/b/containerd.sock", "k8s.io"));
        assert!(!is_shim_of(&args, "/b/containerd.sock", "gantry-x"));
        assert!(!is_shim_of(&args, "/c/containerd.sock", "k8s.io"));
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        let me = std::process::id() as i32;
        assert!(memory(me).rss_bytes > 0);
        assert!(cpu_seconds(me) >= 0.0);
    }
}
