//! The process part that comes from the image and the container config: args, env and
//! working directory, with the precedence rules of containerd's CRI plugin (which took
//! them from Docker).

use crate::api;
use crate::error::{CriError, Result};

/// The process defaults an image config carries (its `config` object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageProcessDefaults {
    /// `Env`, "KEY=value" entries.
    pub env: Vec<String>,
    /// `Entrypoint`; `[""]` is Docker's way to reset an inherited entrypoint.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User`: "uid", "uid:gid", "name", "name:group" (or empty).
    pub user: String,
    /// `StopSignal` (the caller records it; it is not part of the OCI spec).
    pub stop_signal: String,
}

/// Reads the process defaults from an image config blob
/// (application/vnd.oci.image.config.v1+json or Docker's equivalent). Missing or
/// mistyped fields read as empty; a value that is the inner `config` object itself is
/// accepted too.
pub fn image_defaults_from_config(cfg: &serde_json::Value) -> ImageProcessDefaults {
    let c = cfg.get("config").filter(|c| c.is_object()).unwrap_or(cfg);
    let strings = |key: &str| -> Vec<String> {
        c.get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let string = |key: &str| {
        c.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    ImageProcessDefaults {
        env: strings("Env"),
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        working_dir: string("WorkingDir"),
        user: string("User"),
        stop_signal: string("StopSignal"),
    }
}

/// The process args, as containerd's WithProcessArgs (from Docker): a command replaces
/// the image's entrypoint *and* its cmd; args replace only the cmd.
///
/// | command | args | result                 |
/// |---------|------|------------------------|
/// | -       | -    | entrypoint + cmd       |
/// | -       | A    | entrypoint + A         |
/// | C       | -    | C                      |
/// | C       | A    | C + A                  |
pub(super) fn args(
    who: &str,
    c: &api::ContainerConfig,
    image: &ImageProcessDefaults,
) -> Result<Vec<String>> {
    let mut command = c.command.clone();
    let mut args = c.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(CriError::InvalidArgument(format!(
            "{who}: no command specified: the config has no command or args and the image no entrypoint or cmd"
        )));
    }
    Ok(command)
}

/// Sets or removes entries of an environment: "KEY=value" replaces KEY in place or
/// appends it, a bare "KEY" removes it (containerd's replaceOrAppendEnvValues).
pub(super) fn overlay_env(env: &mut Vec<String>, overrides: impl IntoIterator<Item = String>) {
    fn key(e: &str) -> &str {
        e.split_once('=').map(|(k, _)| k).unwrap_or(e)
    }
    for o in overrides {
        let pos = env.iter().position(|e| !e.is_empty() && key(e) == key(&o));
        match (o.contains('='), pos) {
            (true, Some(i)) => env[i] = o,
            (true, None) => env.push(o),
            // Blanked now and dropped at the end, as upstream.
            (false, Some(i)) => env[i] = String::new(),
            (false, None) => {}
        }
    }
    env.retain(|e| !e.is_empty());
}

/// The environment, in containerd's order: the default PATH, TERM for a tty, HOSTNAME,
/// then the image's env, then the config's envs; later entries replace earlier ones
/// with the same key.
pub(super) fn env(
    c: &api::ContainerConfig,
    image: &ImageProcessDefaults,
    hostname: &str,
) -> Vec<String> {
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    if c.tty {
        env.push("TERM=xterm".to_string());
    }
    overlay_env(&mut env, [format!("HOSTNAME={hostname}")]);
    overlay_env(&mut env, image.env.iter().cloned());
    overlay_env(
        &mut env,
        c.envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value))),
    );
    env
}

/// The working directory: the config's, else the image's, else "/".
pub(super) fn cwd(c: &api::ContainerConfig, image: &ImageProcessDefaults) -> String {
    [c.working_dir.as_str(), image.working_dir.as_str()]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string()
}
