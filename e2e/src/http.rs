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
    use std::io::{Read, Write};
    let sock: SocketAddr = addr.parse()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    let code = text.split_whitespace().nth(1).unwrap_or("").parse()?;
    Ok(code)
}
