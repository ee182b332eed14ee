//! Daemons of the test bed: started in their own process group with their output in a
//! log file, recorded (pid and start time) in the bed's state before anything waits on
//! them, and stopped by pid only while the start time still matches, so a recycled pid
//! is never signalled.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// A process the bed started.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recorded {
    pub name: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: identifies this process among all that had the pid.
    pub start_time: u64,
    pub log: PathBuf,
}

impl Recorded {
    pub fn is_alive(&self) -> bool {
        start_time_of(self.pid) == Some(self.start_time) && !is_zombie(self.pid)
    }

    /// Fails, ending any [`crate::wait::until`] at once, if the process has exited; the
    /// error carries the end of its log.
    pub fn ensure_alive(&self) -> anyhow::Result<()> {
        if self.is_alive() {
            return Ok(());
        }
        Err(crate::wait::fatal(format!(
            "{} exited: {}",
            self.name,
            self.log_tail(30)
        )))
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
    pub fn stop(&self, grace: Duration) {
        if !self.is_alive() {
            return;
        }
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.is_alive() && Instant::now() < deadline {
            reap(self.pid);
            sleep(Duration::from_millis(50));
        }
        if self.is_alive() {
            signal(self.pid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.is_alive() && Instant::now() < deadline {
                reap(self.pid);
                sleep(Duration::from_millis(20));
            }
        }
        reap(self.pid);
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts `cmd` as a daemon of the bed: own process group (a Ctrl-C in the terminal
/// does not reach it; teardown does), stdin closed, stdout and stderr to `log`.
pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Recorded> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let out = File::create(log).with_context(|| format!("create log {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
    let pid = child.id() as i32;
    // The child is supervised through its pid from here on (possibly by another
    // process, such as `testbed down`), so the handle is not kept.
    drop(child);
    let start_time = start_time_of(pid)
        .with_context(|| format!("{name} exited at once: {}", log_tail(log, 20)))?;
    Ok(Recorded {
        name: name.to_string(),
        pid,
        start_time,
        log: log.to_path_buf(),
    })
}

pub fn start_time_of(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Collects the exit status of a dead child of ours so it does not linger as a zombie.
/// A multi-threaded leader shows as a zombie before its other threads are gone and
/// cannot be reaped until then, so this retries for a moment. Not our child: no-op.
fn reap(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on a pid that may not be our child just fails.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r != 0 || !is_zombie(pid) || Instant::now() >= deadline {
            return;
        }
        sleep(Duration::from_millis(10));
    }
}

/// Every process whose command line mentions `needle` (a bed directory): daemons the
/// bed started, and the containerd shims and kubelets whose flags point into it.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// SIGKILLs `pids` (taking each one's start time first) and waits until they are gone.
pub fn kill_all(pids: &[i32]) {
    let targets: Vec<(i32, u64)> = pids
        .iter()
        .filter_map(|&p| start_time_of(p).map(|t| (p, t)))
        .collect();
    for (pid, _) in &targets {
        signal(*pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (pid, start) in targets {
        while start_time_of(pid) == Some(start) && !is_zombie(pid) && Instant::now() < deadline {
            reap(pid);
            sleep(Duration::from_millis(20));
        }
        reap(pid);
    }
}
