//! Volume plugins: emptyDir, hostPath, configMap, secret, downwardAPI, projected and
//! PVC-backed local paths, with atomic writes and subPath resolution that cannot be
//! escaped through symlinks. It prepares host paths for a pod and tears them down.
//!
//! It must not know about containers. Not written yet (issue: volumes and networking, part 4).
