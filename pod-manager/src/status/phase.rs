//! The pod phase, as upstream's getPhase.

use super::*;

pub(super) fn phase(
    pod: &Pod,
    statuses: &[ContainerStatus],
    pod_is_terminal: bool,
    initialized: bool,
) -> String {
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let find = |name: &str| statuses.iter().find(|s| s.name == name);
    let state = |s: &ContainerStatus| s.state.clone().unwrap_or_default();
    let last_exit = |s: &ContainerStatus| {
        s.last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .map(|t| t.exit_code)
    };

    let mut pending_init = 0;
    let mut pending_sidecars = 0;
    let mut failed_init_for_good = 0;
    let (mut unknown, mut running, mut waiting, mut stopped, mut stopped_for_good, mut succeeded) =
        (0, 0, 0, 0, 0, 0);

    for c in spec.init_containers.iter().flatten() {
        let Some(s) = find(&c.name) else {
            if is_sidecar(c) {
                unknown += 1;
            } else {
                pending_init += 1;
            }
            continue;
        };
        let st = state(s);
        if is_sidecar(c) {
            if st.running.is_some() {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running += 1;
            } else if st.terminated.is_some() || (st.waiting.is_some() && last_exit(s).is_some()) {
                // A stopped sidecar does not count for the phase.
            } else if st.waiting.is_some() {
                pending_sidecars += 1;
                waiting += 1;
            } else {
                pending_sidecars += 1;
                unknown += 1;
            }
            continue;
        }
        let exit = st
            .terminated
            .as_ref()
            .map(|t| t.exit_code)
            .or_else(|| st.waiting.as_ref().and(last_exit(s)));
        match exit {
            _ if st.running.is_some() => pending_init += 1,
            // A failure that will not be retried fails the pod; one that will is not
            // pending (the app containers still wait for it).
            Some(code) if code != 0 && !container_should_restart(c, spec, code) => {
                failed_init_for_good += 1
            }
            Some(_) => {}
            None => pending_init += 1,
        }
    }

    for c in &spec.containers {
        let Some(s) = find(&c.name) else {
            unknown += 1;
            continue;
        };
        let st = state(s);
        let exit = st
            .terminated
            .as_ref()
            .map(|t| t.exit_code)
            .or_else(|| st.waiting.as_ref().and(last_exit(s)));
        if st.running.is_some() {
            running += 1;
        } else if let Some(code) = exit {
            stopped += 1;
            if !container_should_restart(c, spec, code) {
                stopped_for_good += 1;
            }
            if st.terminated.is_some() && code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() {
            waiting += 1;
        } else {
            unknown += 1;
        }
    }

    if failed_init_for_good > 0 {
        return "Failed".into();
    }
    if pending_init > 0 || (pending_sidecars > 0 && !initialized) || waiting > 0 {
        return "Pending".into();
    }
    if running > 0 && unknown == 0 {
        return "Running".into();
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        let is_static = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/config.source"))
            .is_some_and(|s| s != "api");
        if pod_is_terminal && !is_static {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            }
            .into();
        }
        if stopped != stopped_for_good {
            // Some container will run again.
            return "Running".into();
        }
        return if stopped == succeeded {
            "Succeeded"
        } else {
            "Failed"
        }
        .into();
    }
    "Pending".into()
}
