//! Container log rotation, as upstream's ContainerLogManager does it over the CRI:
//! every 10 s, a running container whose log file passed containerLogMaxSize has the
//! file renamed to `<log>.<timestamp>` and the runtime told to reopen it
//! (ReopenContainerLog); rotated files beyond containerLogMaxFiles (the live file
//! counts as one) are removed, oldest first. Rotated files are kept uncompressed
//! (upstream gzips all but the newest).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_cri::api;

use crate::labels;
use crate::Cri;

const CHECK_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct LogPolicy {
    /// containerLogMaxSize in bytes (upstream default 10Mi).
    pub max_size: u64,
    /// containerLogMaxFiles (upstream default 5, at least 2).
    pub max_files: usize,
}

/// Rotates the logs of the node's running containers until the task is dropped.
pub async fn run(cri: Cri, node: String, policy: LogPolicy) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = rotate_all(&cri, &node, &policy).await {
            tracing::debug!(error = %e.message(), "log rotation pass");
        }
    }
}

async fn rotate_all(cri: &Cri, node: &str, policy: &LogPolicy) -> Result<(), tonic::Status> {
    let mut rt = cri.runtime.clone();
    let running = rt
        .list_containers(api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                state: Some(api::ContainerStateValue {
                    state: api::ContainerState::ContainerRunning as i32,
                }),
                label_selector: HashMap::from([(labels::NODE.to_string(), node.to_string())]),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    for c in running {
        let status = match rt
            .container_status(api::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(s) => s.into_inner().status,
            Err(_) => continue,
        };
        let Some(path) = status.map(|s| PathBuf::from(s.log_path)) else {
            continue;
        };
        if !path.is_absolute() {
            continue;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > policy.max_size {
            rotate(cri, &c.id, &path).await;
        }
        remove_old(&path, policy.max_files);
    }
    Ok(())
}

/// Renames the live file and has the runtime reopen it; undoes the rename when the
/// runtime cannot reopen (the container keeps writing to the renamed file otherwise).
async fn rotate(cri: &Cri, id: &str, path: &Path) {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
    let rotated = PathBuf::from(format!("{}.{stamp}", path.display()));
    if let Err(e) = std::fs::rename(path, &rotated) {
        tracing::warn!(log = %path.display(), error = %e, "rotate container log");
        return;
    }
    let reopened = cri
        .runtime
        .clone()
        .reopen_container_log(api::ReopenContainerLogRequest {
            container_id: id.to_string(),
        })
        .await;
    if let Err(e) = reopened {
        tracing::warn!(container = %id, error = %e.message(), "reopen container log; rotation undone");
        let _ = std::fs::rename(&rotated, path);
    }
}

/// Removes rotated files of `path` beyond `max_files - 1`, oldest first.
fn remove_old(path: &Path, max_files: usize) {
    for old in excess_rotated(path, max_files) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(log = %old.display(), error = %e, "remove rotated log");
        }
    }
}

/// The rotated files of `path` to remove so that at most `max_files` files remain
/// with the live one.
fn excess_rotated(path: &Path, max_files: usize) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .collect();
    // Timestamps sort as text.
    rotated.sort();
    let keep = max_files.saturating_sub(1).max(1);
    let excess = rotated.len().saturating_sub(keep);
    rotated.into_iter().take(excess).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_rotated_files_go_first_and_the_live_one_counts() {
        let dir = std::env::temp_dir().join(format!("gantry-logrot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let live = dir.join("0.log");
        std::fs::write(&live, "x").unwrap();
        for stamp in ["20260101-000003", "20260101-000001", "20260101-000002"] {
            std::fs::write(dir.join(format!("0.log.{stamp}")), "x").unwrap();
        }
        std::fs::write(dir.join("1.log.20200101-000000"), "x").unwrap();
        let excess = excess_rotated(&live, 3);
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = excess
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["0.log.20260101-000001"]);
    }
}
