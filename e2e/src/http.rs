//! Plain HTTP/1.0 checks against loopback daemons (etcd, the registry, test pods).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Result;

use crate::process::Recorded;
use crate::wait;

/// Waits until `GET path` on plain-HTTP `addr` answers 200, failing early (with the
/// daemon's log) if the daemon exits.
pub fn wait_http_ok(p: &Recorded, addr: &str, path: &str, timeout: Duration) -> Result<()> {
    wait::until(
        &format!("{} to answer GET {path} on {addr}", p.name),
        timeout,
        || {
            p.ensure_alive()?;
            Ok((http_status(addr, path)? == 200).then_some(()))
        },
    )
}

/// The status code of a plain HTTP/1.0 GET to a loopback address.
pub fn http_status(addr: &str, path: &str) -> Result<u16> {
    Ok(http_get(addr, path)?.0)
}

/// The status code and body of a plain HTTP/1.0 GET to a loopback address.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let sock: SocketAddr = addr.parse()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let code = text.split_whitespace().nth(1).unwrap_or("").parse()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_string()))
}
