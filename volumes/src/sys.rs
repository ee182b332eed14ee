//! The few raw syscalls the crate needs, each a small safe function: `*at()` calls on
//! directory fds that never follow symlinks, and mount/umount. All `unsafe` lives here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens `path` (absolute, trusted) as a directory, refusing a symlink as its last element.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: c is NUL-terminated; the returned fd is owned by the OwnedFd.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
        )
    })?;
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`: `name` is one path element.
pub fn open_at(dir: &OwnedFd, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid dir fd and NUL-terminated name; the fd is owned by the OwnedFd.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn stat_at(dir: RawFd, name: &[u8]) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: st is written by the kernel on success only; zeroed is a valid stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the duration of the call.
    check(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdir_at(dir: &OwnedFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid fd and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// `unlinkat(dir, name, AT_REMOVEDIR or 0)`: removes the entry itself, never a link target.
pub fn unlink_at(dir: &OwnedFd, name: &[u8], is_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
}

/// `readlinkat(dir, name)`: the target of a symlink, as bytes.
pub fn read_link_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is writable for buf.len() bytes; readlinkat does not NUL-terminate.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast::<libc::c_char>(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The names in an open directory (not `.`/`..`), read through `/proc/self/fd` so the
/// listing is of the directory the fd holds, whatever happened to its path since.
pub fn list_dir(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let proc_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(proc_path)? {
        names.push(entry?.file_name().as_bytes().to_vec());
    }
    Ok(names)
}

/// `mount(source, target, fstype, flags, data)`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = cstr(source.as_bytes())?;
    let tgt = cstr(target.as_os_str().as_bytes())?;
    let fs = fstype.map(|f| cstr(f.as_bytes())).transpose()?;
    let dat = data.map(|d| cstr(d.as_bytes())).transpose()?;
    // SAFETY: all pointers are NUL-terminated strings alive for the call, or null.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            dat.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>()),
        )
    })?;
    Ok(())
}

/// `umount2(target, UMOUNT_NOFOLLOW)`: Ok(false) when `target` is not a mount point (or is
/// gone), so calling it twice is harmless.
pub fn unmount(target: &Path) -> io::Result<bool> {
    let tgt = cstr(target.as_os_str().as_bytes())?;
    // SAFETY: NUL-terminated path.
    match check(unsafe { libc::umount2(tgt.as_ptr(), libc::UMOUNT_NOFOLLOW) }) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// `/proc/self/fd/N` of an fd: a path the kernel resolves to the very file the fd holds.
pub fn proc_fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
