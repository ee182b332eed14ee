//! Running one CNI plugin binary: environment and stdin in, result or CNI error out,
//! killed (with everything it started) when it overruns its time.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use wait_timeout::ChildExt;

/// Why one plugin run failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    #[error("start {path}: {source}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("wait for {path}: {source}")]
    Wait { path: PathBuf, source: io::Error },
    #[error("no answer within {after:?}, killed")]
    Timeout { after: Duration },
    /// The CNI error document the plugin printed (spec: "Error" result type).
    #[error("{}", cni_error_text(*.code, .msg, .details))]
    Error {
        code: Option<u64>,
        msg: String,
        details: String,
    },
    #[error("{status} with no CNI error on stdout; stderr: {stderr:?}, stdout: {stdout:?}")]
    Exit {
        status: ExitStatus,
        stderr: String,
        stdout: String,
    },
    #[error("invalid result ({reason}): {output:?}")]
    BadResult { reason: String, output: String },
}

fn cni_error_text(code: Option<u64>, msg: &str, details: &str) -> String {
    let mut out = match code {
        Some(c) => format!("error code {c}: {msg}"),
        None => msg.to_string(),
    };
    if !details.is_empty() {
        out.push_str(&format!(" ({details})"));
    }
    out
}

/// How much of a plugin's output an error message quotes.
const QUOTE_LIMIT: usize = 4096;

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// Runs `path` with `env` added to the agent's own environment (plugins need PATH to find
/// iptables and the like, as with libcni) and `stdin`; returns stdout when it exits 0.
pub(crate) fn run(
    path: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, PluginFailure> {
    let mut child = spawn(path, env)?;
    // Its own process group, so a timeout kills the plugin's children too (iptables, ipam).
    let group = Pid::from_raw(child.id() as i32);

    // Pipes are drained by threads so that neither side can block the other on a full
    // pipe buffer.
    let input = stdin.to_vec();
    let writer = child.stdin.take().map(|mut s| {
        thread::spawn(move || {
            // A plugin may exit without reading stdin; its exit status tells the story.
            let _ = s.write_all(&input);
        })
    });
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);

    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        other => {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            // The drain threads are left to finish on their own: a grandchild that left
            // the group may still hold the pipes.
            return Err(match other {
                Err(source) => PluginFailure::Wait {
                    path: path.to_path_buf(),
                    source,
                },
                Ok(_) => PluginFailure::Timeout { after: timeout },
            });
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out.map(join_drain).unwrap_or_default();
    let stderr = err.map(join_drain).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(failure(status, &stdout, &stderr))
    }
}

fn spawn(path: &Path, env: &[(&str, String)]) -> Result<std::process::Child, PluginFailure> {
    let mut attempt = 0;
    loop {
        let spawned = Command::new(path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        match spawned {
            // ETXTBSY: another thread of this process forked while the binary was open for
            // writing (a plugin just installed). libcni retries the same way.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                thread::sleep(Duration::from_millis(50 * attempt));
            }
            Err(source) => {
                return Err(PluginFailure::Spawn {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Ok(child) => return Ok(child),
        }
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_drain(h: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    h.join().unwrap_or_default()
}

/// A failed plugin's CNI error from stdout (`{"code":..,"msg":..,"details":..}`), or
/// its exit status and output when it printed none, as libcni's invoke package does.
fn failure(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> PluginFailure {
    if let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(stdout) {
        if doc.contains_key("code") || doc.contains_key("msg") {
            return PluginFailure::Error {
                code: doc.get("code").and_then(Value::as_u64),
                msg: doc
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                details: doc
                    .get("details")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            };
        }
    }
    PluginFailure::Exit {
        status,
        stderr: quote(stderr),
        stdout: quote(stdout),
    }
}

/// The JSON document an ADD printed; every ADD must print one (spec 1.0: "Result").
pub(crate) fn parse_result(stdout: &[u8]) -> Result<Value, PluginFailure> {
    match serde_json::from_slice::<Value>(stdout) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(PluginFailure::BadResult {
            reason: "not a JSON object".into(),
            output: quote(stdout),
        }),
        Err(e) => Err(PluginFailure::BadResult {
            reason: e.to_string(),
            output: quote(stdout),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exit1() -> ExitStatus {
        ExitStatus::from_raw(1 << 8)
    }

    #[test]
    fn cni_error_json_is_parsed() {
        let f = failure(
            exit1(),
            br#"{"cniVersion":"1.0.0","code":7,"msg":"no IP addresses available","details":"range 10.0.0.0/30 full"}"#,
            b"",
        );
        assert!(matches!(f, PluginFailure::Error { code: Some(7), .. }));
        assert_eq!(
            f.to_string(),
            "error code 7: no IP addresses available (range 10.0.0.0/30 full)"
        );
    }

    #[test]
    fn without_cni_error_the_exit_and_stderr_are_reported() {
        let f = failure(exit1(), b"", b"panic: boom\n");
        let text = f.to_string();
        assert!(text.contains("exit status: 1"), "{text}");
        assert!(text.contains("panic: boom"), "{text}");
        let f = failure(exit1(), b"not json", b"");
        assert!(f.to_string().contains("not json"), "{f}");
    }

    #[test]
    fn long_output_is_cut_in_messages() {
        let long = vec![b'x'; QUOTE_LIMIT * 2];
        assert!(quote(&long).len() < QUOTE_LIMIT + 10);
    }

    #[test]
    fn results_must_be_json_objects() {
        assert!(parse_result(br#"{"cniVersion":"1.0.0"}"#).is_ok());
        for bad in [&b""[..], b"[]", b"{"] {
            assert!(matches!(
                parse_result(bad),
                Err(PluginFailure::BadResult { .. })
            ));
        }
    }

    #[test]
    fn a_plugin_that_overruns_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("slow");
        let pidfile = dir.path().join("child.pid");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nsleep 30 &\necho $! > {}\nwait\n",
                pidfile.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let start = std::time::Instant::now();
        let err = run(&script, &[], b"{}", Duration::from_millis(500)).expect_err("timeout");
        assert!(matches!(err, PluginFailure::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pidfile).expect("pid");
        let alive = Path::new("/proc").join(pid.trim()).join("stat");
        // The killed sleep is reaped by init shortly after; zombie state counts as dead.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(&alive).unwrap_or_default();
            if state.is_empty() || state.contains(") Z") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child still alive: {state}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}
