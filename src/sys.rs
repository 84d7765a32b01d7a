//! The file-system calls that must never follow a symlink (chmod-tree's walk, git-shallow's
//! checkout), each behind a safe function: everything is relative to a directory file
//! descriptor.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// `fchmodat2(2)` (Linux 6.6): the only chmod that takes `AT_SYMLINK_NOFOLLOW`. The number is
/// the same on every architecture (the generic syscall table).
const SYS_FCHMODAT2: libc::c_long = 452;

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, a symlink as a symlink.
pub fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: name is NUL-terminated; stat points to writable memory of the right size.
    check(unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled the struct.
    Ok(unsafe { stat.assume_init() })
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: stat points to writable memory of the right size.
    check(unsafe { libc::fstat(fd, stat.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled the struct.
    Ok(unsafe { stat.assume_init() })
}

/// Opens the directory `name` in `dir`, failing (ELOOP, ENOTDIR) if it is a symlink or was
/// swapped for anything but a directory.
pub fn open_dir_at(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags =
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: name is NUL-terminated; the returned descriptor is checked and then owned.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: no pointers; fd is an open descriptor of the caller.
    check(unsafe { libc::fchmod(fd, mode) })
}

pub fn chown_fd(fd: RawFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    // SAFETY: no pointers; -1 (u32::MAX) leaves an ID unchanged.
    check(unsafe { libc::fchown(fd, uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)) })
}

/// `fchownat(dir, name, AT_SYMLINK_NOFOLLOW)`: changes the entry itself, never a link's target.
pub fn chown_at(dir: RawFd, name: &CStr, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; -1 (u32::MAX) leaves an ID unchanged.
    check(unsafe {
        libc::fchownat(
            dir,
            name.as_ptr(),
            uid.unwrap_or(u32::MAX),
            gid.unwrap_or(u32::MAX),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Set once `fchmodat2` answered ENOSYS (kernels before 6.6, Docker 20.10's default seccomp
/// profile), so that later calls go straight to the fallback.
static NO_FCHMODAT2: AtomicBool = AtomicBool::new(false);

/// Changes the mode of the entry `name` in `dir` without following a symlink, even one swapped
/// in since it was examined, and without opening the entry (that would block on a FIFO, fail on
/// a socket or a mode-000 file, and run a device driver's open): `fchmodat2` with
/// `AT_SYMLINK_NOFOLLOW`, or else an `O_PATH` descriptor, checked to be the entry that was
/// examined (`expected`: device and inode), changed through `/proc/self/fd`.
pub fn chmod_at(dir: RawFd, name: &CStr, mode: u32, expected: (u64, u64)) -> io::Result<()> {
    if !NO_FCHMODAT2.load(Ordering::Relaxed) {
        // SAFETY: name is NUL-terminated; the syscall takes (int, const char *, mode_t, int).
        let result = unsafe {
            libc::syscall(
                SYS_FCHMODAT2,
                dir,
                name.as_ptr(),
                mode,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if result == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSYS) => NO_FCHMODAT2.store(true, Ordering::Relaxed),
            // Some seccomp profiles answer EPERM for syscalls they do not know; a real EPERM
            // comes back from the fallback too.
            Some(libc::EPERM) => {}
            _ => return Err(err),
        }
    }
    chmod_through_proc(dir, name, mode, expected)
}

fn chmod_through_proc(dir: RawFd, name: &CStr, mode: u32, expected: (u64, u64)) -> io::Result<()> {
    // O_PATH opens neither for reading nor writing (no driver open, no permission needed on the
    // entry); with O_NOFOLLOW a symlink is opened as itself, and then fails the check below.
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: name is NUL-terminated; the returned descriptor is checked and then owned.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let entry = unsafe { OwnedFd::from_raw_fd(fd) };
    let stat = fstat(entry.as_raw_fd())?;
    if (stat.st_dev, stat.st_ino) != expected {
        return Err(io::Error::other("replaced while being changed; left alone"));
    }
    // The magic link names this inode, not a path: a rename or symlink swap cannot redirect it.
    let link =
        CString::new(format!("/proc/self/fd/{}", entry.as_raw_fd())).map_err(io::Error::other)?;
    // SAFETY: link is NUL-terminated.
    match check(unsafe { libc::chmod(link.as_ptr(), mode) }) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no safe way to change it: the kernel refuses fchmodat2 (Linux 6.6) and /proc is \
             not mounted; changing it by name could follow a symlink swapped in",
        )),
        other => other,
    }
}

/// A directory stream read entry by entry, so memory does not grow with the directory's size.
pub struct Dir {
    stream: std::ptr::NonNull<libc::DIR>,
}

impl Dir {
    /// Takes ownership of `fd` (closed with the stream).
    pub fn new(fd: OwnedFd) -> io::Result<Dir> {
        use std::os::fd::IntoRawFd;
        let raw = fd.into_raw_fd();
        // SAFETY: raw is an open directory descriptor; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(raw) };
        match std::ptr::NonNull::new(stream) {
            Some(stream) => Ok(Dir { stream }),
            None => {
                let err = io::Error::last_os_error();
                // SAFETY: fdopendir failed, so raw is still ours to close.
                unsafe { libc::close(raw) };
                Err(err)
            }
        }
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: the stream is open for the lifetime of self.
        unsafe { libc::dirfd(self.stream.as_ptr()) }
    }

    /// The next entry's name, skipping `.` and `..`; `None` at the end.
    pub fn next_name(&mut self) -> Option<io::Result<CString>> {
        loop {
            // readdir signals errors only through errno, so clear it first.
            // SAFETY: __errno_location returns this thread's errno slot.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: the stream is open; the entry stays valid until the next readdir.
            let entry = unsafe { libc::readdir(self.stream.as_ptr()) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(0) | None => None,
                    Some(_) => Some(Err(err)),
                };
            }
            // SAFETY: d_name is a NUL-terminated name inside the entry readdir returned.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            match name.to_bytes() {
                b"." | b".." => continue,
                _ => return Some(Ok(name.to_owned())),
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: the stream is open and closed only here.
        unsafe { libc::closedir(self.stream.as_ptr()) };
    }
}
