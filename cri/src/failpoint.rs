//! Crash points for tests of crash safety: when GANTRY_CRI_FAILPOINT names a point,
//! the process aborts there, as a power cut or SIGKILL would stop it. Unset (always in
//! production), `hit` does nothing.

use std::sync::OnceLock;

/// Aborts the process if `GANTRY_CRI_FAILPOINT` equals `name`.
pub fn hit(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("GANTRY_CRI_FAILPOINT").ok());
    if point.as_deref() == Some(name) {
        eprintln!("gantry: failpoint {name}: aborting");
        std::process::abort();
    }
}
