//! Polling with a deadline and a message that says what was awaited and what was seen.

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// An observation that ends the wait at once (a daemon exited): wrap it with [`fatal`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

pub fn fatal(message: String) -> anyhow::Error {
    Fatal(message).into()
}

/// Calls `probe` until it returns `Ok(Some(v))`, or fails after `timeout` with the last
/// observation (the `Err` or the `Ok(None)` explanation) in the message. A [`Fatal`]
/// error ends the wait immediately.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no observation yet");
    loop {
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) if e.is::<Fatal>() => bail!("while waiting for {what}: {e:#}"),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        sleep(Duration::from_millis(200));
    }
}
