//! TCP forwarding from 127.0.0.1 inside a network namespace to 127.0.0.1 of the host,
//! so a node that is a host of its own (crate::multinode) reaches the bed's apiserver
//! and image mirror at the addresses its kubeconfig and registry config already name
//! (and the apiserver's certificate already covers).
//!
//! A socket keeps the network namespace it was created in: a short-lived thread enters
//! the namespace, binds the listener and exits; the accept loop and the connections to
//! the host run in threads of the host's namespace. The forwarder is threads of the test
//! process, so it ends with it; dropping it closes the listener and every connection,
//! which a bed's teardown needs, since an open socket keeps its namespace alive.

use std::fs::File;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};

pub struct Forwarder {
    netns: PathBuf,
    port: u16,
    stop: Arc<AtomicBool>,
    listener_fd: i32,
    /// Every open connection, to shut it down on drop.
    streams: Arc<Mutex<Vec<Conn>>>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listens on 127.0.0.1:`port` inside the namespace pinned at `netns` and forwards
    /// each connection to 127.0.0.1:`port` of the host.
    pub fn start(netns: &Path, port: u16) -> Result<Forwarder> {
        let listener = listen_in(netns, port)?;
        let listener_fd = listener.as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, streams) = (stop.clone(), streams.clone());
            std::thread::Builder::new()
                .name(format!("forward-{port}"))
                .spawn(move || accept_loop(listener, port, &stop, &streams))?
        };
        Ok(Forwarder {
            netns: netns.to_path_buf(),
            port,
            stop,
            listener_fd,
            streams,
            accept: Some(accept),
        })
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Forwarder(127.0.0.1:{} in {})",
            self.port,
            self.netns.display()
        )
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept (it fails with EINVAL); the loop then sees `stop`.
        // SAFETY: shutdown on a descriptor the accept thread still owns (it is closed
        // only after that thread returns, which is awaited below).
        unsafe {
            libc::shutdown(self.listener_fd, libc::SHUT_RDWR);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in lock(&self.streams).drain(..) {
            for s in c.ends {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Both ends of a forwarded connection, and how many of its two directions still flow.
struct Conn {
    ends: [TcpStream; 2],
    flowing: Arc<AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn listen_in(netns: &Path, port: u16) -> Result<TcpListener> {
    let ns =
        File::open(netns).with_context(|| format!("open network namespace {}", netns.display()))?;
    let thread = std::thread::spawn(move || -> Result<TcpListener> {
        // SAFETY: setns on a descriptor we own; it changes only this thread, which exits
        // right after binding.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", io::Error::last_os_error());
        }
        Ok(TcpListener::bind(("127.0.0.1", port))?)
    });
    thread
        .join()
        .map_err(|_| anyhow!("the thread binding 127.0.0.1:{port} panicked"))?
        .with_context(|| format!("listen on 127.0.0.1:{port} in {}", netns.display()))
}

fn accept_loop(
    listener: TcpListener,
    port: u16,
    stop: &AtomicBool,
    streams: &Arc<Mutex<Vec<Conn>>>,
) {
    loop {
        let inner = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((inner, _)) = inner else {
            continue;
        };
        let Ok(outer) = TcpStream::connect(("127.0.0.1", port)) else {
            let _ = inner.shutdown(Shutdown::Both);
            continue;
        };
        let (Ok(inner2), Ok(outer2)) = (inner.try_clone(), outer.try_clone()) else {
            continue;
        };
        let flowing = Arc::new(AtomicUsize::new(2));
        {
            let mut all = lock(streams);
            all.retain(|c| c.flowing.load(Ordering::SeqCst) > 0);
            if let (Ok(a), Ok(b)) = (inner.try_clone(), outer.try_clone()) {
                all.push(Conn {
                    ends: [a, b],
                    flowing: flowing.clone(),
                });
            }
        }
        let flowing2 = flowing.clone();
        std::thread::spawn(move || pipe(inner, outer, &flowing));
        std::thread::spawn(move || pipe(outer2, inner2, &flowing2));
    }
}

/// Copies `from` to `to` until `from` ends, then passes the end on.
fn pipe(mut from: TcpStream, mut to: TcpStream, flowing: &AtomicUsize) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
    flowing.fetch_sub(1, Ordering::SeqCst);
}
