//! kubectl, run as users run it, against the bed's apiserver.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

#[derive(Clone, Debug)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Result<Self> {
        Ok(Kubectl {
            bin: crate::paths::tool("kubectl")?,
            kubeconfig: kubeconfig.to_path_buf(),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd
    }

    /// Runs `kubectl ARGS`; fails with kubectl's own stderr when it exits non-zero.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with_stdin(args, None)
    }

    /// Runs `kubectl ARGS` with `stdin` as its input (e.g. `apply -f -`).
    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = self.command(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("run kubectl {}", args.join(" ")))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        crate::host::stdout_of(
            &format!("kubectl {}", args.join(" ")),
            child.wait_with_output()?,
        )
    }

    pub fn apply_yaml(&self, yaml: &str) -> Result<String> {
        self.run_with_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        let out = self.run(&full)?;
        serde_json::from_str(&out)
            .with_context(|| format!("parse kubectl {} output", full.join(" ")))
    }

    /// The status of condition `kind` of node `name` ("True", "False", "Unknown"), with
    /// its reason and message, if the node exists.
    pub fn node_condition(&self, name: &str, kind: &str) -> Result<Option<(String, String)>> {
        let node = match self.get_json(&["node", name]) {
            Ok(n) => n,
            Err(e) if format!("{e:#}").contains("NotFound") => return Ok(None),
            Err(e) => return Err(e),
        };
        let conditions = node["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(conditions.iter().find(|c| c["type"] == kind).map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                format!(
                    "{}: {}",
                    c["reason"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                ),
            )
        }))
    }
}
