//! The file-system calls that must never follow a symlink (chmod-tree's walk, git-shallow's
//! checkout), each behind a safe function: everything is relative to a directory file
//! descriptor.

use std::ffi::{CStr, CString};
use std::fs::File;
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

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Fills `buf` from the kernel's random pool (`getrandom(2)`), for names no one can predict.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: rest is writable memory of the length passed.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) => filled += n,
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

/// Opens a directory by path, following symlinks (a destination's directory may be one, as a
/// ConfigMap mount's `..data` is).
pub fn open_dir(path: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: path is NUL-terminated; the result is checked and then owned.
    owned(unsafe { libc::open(path.as_ptr(), flags) })
}

/// An unnamed file in `dir` (`O_TMPFILE`): nothing is left behind if the process dies.
pub fn open_tmpfile(dir: &OwnedFd, mode: u32) -> io::Result<File> {
    let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: "." is NUL-terminated; the result is checked and then owned.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags, mode) }).map(File::from)
}

/// Gives the `O_TMPFILE` `file` the name `name` in `dir`, through `/proc/self/fd` (linking the
/// descriptor itself, `AT_EMPTY_PATH`, needs CAP_DAC_READ_SEARCH, which containers lack).
pub fn link_tmpfile(file: &File, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    let source = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    // SAFETY: both names are NUL-terminated; dir is an open directory.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            source.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

/// Whether `O_TMPFILE` files can be given a name here: `/proc` is mounted (not in every scratch
/// image).
pub fn can_link_tmpfiles() -> bool {
    // SAFETY: the path is NUL-terminated.
    unsafe { libc::access(c"/proc/self/fd".as_ptr(), libc::X_OK) == 0 }
}

/// Creates the new file `name` in `dir` with `O_EXCL | O_NOFOLLOW`: never an existing file, never
/// through a symlink. `mode` is applied as given, whatever the umask.
pub fn create_file_at(dir: &OwnedFd, name: &CStr, mode: u32) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: name is NUL-terminated; the result is checked and then owned.
    let fd = owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) })?;
    chmod_fd(fd.as_raw_fd(), mode)?;
    Ok(File::from(fd))
}

pub fn mkdir_at(dir: &OwnedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; dir is an open directory.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// A FIFO: a kind of file no git tree can contain, so it can mark what initbox made.
pub fn mkfifo_at(dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; dir is an open directory.
    check(unsafe { libc::mkfifoat(dir.as_raw_fd(), name.as_ptr(), 0o600) })
}

pub fn symlink_at(target: &CStr, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated; dir is an open directory.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// Removes the entry `name` of `dir`: an empty directory (`is_dir`) or anything else.
pub fn unlink_at(dir: &OwnedFd, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: name is NUL-terminated; dir is an open directory.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// `renameat2(RENAME_EXCHANGE)`: swaps two entries atomically.
pub fn exchange_at(dir_a: &OwnedFd, a: &CStr, dir_b: &OwnedFd, b: &CStr) -> io::Result<()> {
    // SAFETY: the renameat2 syscall with NUL-terminated names relative to open directories.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dir_a.as_raw_fd(),
            a.as_ptr(),
            dir_b.as_raw_fd(),
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fgetxattr`: the value of attribute `name`, if it fits in `max` bytes.
pub fn get_xattr(fd: &impl AsRawFd, name: &CStr, max: usize) -> io::Result<Vec<u8>> {
    let mut value = vec![0u8; max];
    // SAFETY: name is NUL-terminated; value is writable memory of the length passed.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    value.truncate(n);
    Ok(value)
}

/// `fsetxattr`: sets attribute `name` of the open file or directory.
pub fn set_xattr(fd: &impl AsRawFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; value is readable memory of the length passed.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Removes `name` in `dir` and everything under it without following symlinks, holding at most
/// three descriptors however deep the tree is (a tree deeper than the descriptor limit must not
/// fail half-way, as a recursion holding one per level does): it climbs back through `..`,
/// checking each parent is the directory it came from.
pub fn remove_tree(dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    let stat = lstat_at(dir.as_raw_fd(), name)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return unlink_at(dir, name, false);
    }
    let top = fstat(dir.as_raw_fd())?;
    // The path from `dir` down to `current`: each step's name and its parent's identity.
    let mut path: Vec<(CString, (u64, u64))> = vec![(name.to_owned(), (top.st_dev, top.st_ino))];
    let mut current = open_dir_at(dir.as_raw_fd(), name)?;
    loop {
        if let Some(child) = first_subdirectory_emptying_files(&current)? {
            let here = fstat(current.as_raw_fd())?;
            current = open_dir_at(current.as_raw_fd(), &child)?;
            path.push((child, (here.st_dev, here.st_ino)));
            continue;
        }
        let (done, parent_id) = path.pop().expect("the path holds at least the top");
        let parent = open_dir_at(current.as_raw_fd(), c"..")?;
        let stat = fstat(parent.as_raw_fd())?;
        if (stat.st_dev, stat.st_ino) != parent_id {
            return Err(io::Error::other("moved while being removed; left alone"));
        }
        unlink_at(&parent, &done, true)?;
        if path.is_empty() {
            return Ok(());
        }
        current = parent;
    }
}

/// Removes every non-directory in `dir` up to its first subdirectory, and returns that one.
fn first_subdirectory_emptying_files(dir: &OwnedFd) -> io::Result<Option<CString>> {
    let mut entries = Dir::new(dir.try_clone()?)?;
    while let Some(name) = entries.next_name() {
        let name = name?;
        let stat = lstat_at(dir.as_raw_fd(), &name)?;
        if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Ok(Some(name));
        }
        unlink_at(dir, &name, false)?;
    }
    Ok(None)
}

/// Opens the non-directory `name` in `dir` for reading without following a symlink or blocking
/// on a FIFO.
pub fn open_file_at(dir: &OwnedFd, name: &CStr) -> io::Result<File> {
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: name is NUL-terminated; the result is checked and then owned.
    owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(File::from)
}

/// `fremovexattr`: removes attribute `name` of the open file.
pub fn remove_xattr(fd: &impl AsRawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: name is NUL-terminated.
    check(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) })
}

/// `renameat`: renames `from` in `from_dir` to `to` in `to_dir`, replacing `to`.
pub fn rename_at(from_dir: &OwnedFd, from: &CStr, to_dir: &OwnedFd, to: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; both directories are open.
    check(unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
        )
    })
}

/// [`remove_tree`] by path: the last component is removed, never followed.
pub fn remove_tree_at_path(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dir = open_dir(&CString::new(parent.as_os_str().as_bytes())?)?;
    remove_tree(&dir, &CString::new(name.as_bytes())?)
}

/// A set of signal numbers (`sigset_t`), for masks and `sigtimedwait`.
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    pub fn of(signals: impl IntoIterator<Item = i32>) -> SignalSet {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: set points to writable memory of the right size; sigemptyset initialises it.
        unsafe { libc::sigemptyset(set.as_mut_ptr()) };
        // SAFETY: sigemptyset initialised the set.
        let mut set = unsafe { set.assume_init() };
        for signal in signals {
            // SAFETY: set is initialised; an invalid number only makes sigaddset fail.
            unsafe { libc::sigaddset(&mut set, signal) };
        }
        SignalSet(set)
    }
}

/// Blocks `set` in this thread (and in the threads and children it starts) and returns the mask
/// it had, for [`restore_signal_mask`].
pub fn block_signals(set: &SignalSet) -> io::Result<SignalSet> {
    let mut old = SignalSet::of([]);
    // SAFETY: both pointers are to initialised sigset_t values.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set.0, &mut old.0) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(old)
}

pub fn restore_signal_mask(mask: &SignalSet) {
    // SAFETY: mask is an initialised sigset_t; a null old-mask pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut()) };
}

/// Takes the next pending signal of the blocked `set`, sleeping until one comes or `timeout`
/// passes (`None`: no limit). `None` when the time passed first.
pub fn wait_for_signal(set: &SignalSet, timeout: Option<std::time::Duration>) -> Option<i32> {
    let limit = timeout.map(|t| libc::timespec {
        // Durations are capped at ten years (cli::parse_duration): they fit any time_t.
        tv_sec: t.as_secs().min(i32::MAX as u64) as _,
        tv_nsec: t.subsec_nanos().into(),
    });
    let limit_ptr = limit
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: set is initialised; a null siginfo pointer is allowed; limit_ptr is null or points
    // to a timespec that outlives the call.
    let signal = unsafe { libc::sigtimedwait(&set.0, std::ptr::null_mut(), limit_ptr) };
    (signal > 0).then_some(signal)
}

/// How a reaped process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Reaps one ended child, any of them, without waiting: `None` when none has ended (or there is
/// no child left).
pub fn reap_any() -> Option<(i32, Exit)> {
    let mut status = 0;
    // SAFETY: status points to a writable int.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let exit = if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    };
    Some((pid, exit))
}

/// `kill(2)`: a negative `pid` names a process group.
pub fn send_signal(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: no pointers; the kernel checks pid and signal.
    check(unsafe { libc::kill(pid, signal) })
}

/// `PR_SET_CHILD_SUBREAPER`: orphans of our descendants are re-parented to us, not to PID 1.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: no pointers; the option takes one integer argument.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
}

/// Starts `command` as a child with every signal at its default disposition (an ignored signal
/// would otherwise stay ignored across exec) and an empty signal mask, in a
/// process group of its own when `new_group` (the terminal's foreground group, when stdin is
/// one). Our descriptors are all close-on-exec.
///
/// A plain fork and `execvp`, not `std::process::Command`: init is a long-lived PID 1 and every
/// page of code it touches stays resident, and Command brings far more code (environment
/// capture, posix_spawn, its own error pipe) than this needs. An exec failure comes back through a
/// close-on-exec pipe as the child's errno, so a missing or unrunnable program is our error.
pub fn spawn_child(command: &[std::ffi::OsString], new_group: bool) -> io::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let words = command
        .iter()
        .map(|word| CString::new(word.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    if words.is_empty() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut argv: Vec<*const libc::c_char> = words.iter().map(|word| word.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut pipe = [0; 2];
    // SAFETY: pipe points to two writable ints.
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let [read_end, write_end] = pipe.map(|fd| {
        // SAFETY: pipe2 just created both descriptors and nothing else owns them.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    // SAFETY: init runs on one thread, so the child is a full copy; it calls only
    // async-signal-safe functions on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(read_end);
        // SAFETY: argv is a NULL-terminated array of NUL-terminated strings that outlive the call.
        unsafe { exec_as_child(argv.as_ptr(), new_group, write_end.as_raw_fd()) };
    }
    drop(write_end);
    let mut errno = [0u8; 4];
    // SAFETY: errno is writable memory of the length passed.
    let n = unsafe { libc::read(read_end.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
    if n != 4 {
        return Ok(pid);
    }
    let mut status = 0;
    // SAFETY: status points to a writable int; pid is our child, which has exited.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

/// The child's side of [`spawn_child`]: resets dispositions and mask, then execs; on failure
/// writes errno to `report` and exits.
///
/// # Safety
/// Call only in a freshly forked child; `argv` must be a NULL-terminated array of NUL-terminated
/// strings, its first the program.
unsafe fn exec_as_child(argv: *const *const libc::c_char, new_group: bool, report: RawFd) -> ! {
    // The raw call, as libc's refuses the signals it keeps for itself (32, 33), which a parent
    // may still have left ignored. All zeros: SIG_DFL, no flags, empty mask.
    let default = [0u64; 4];
    for signal in 1..=64 {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            default.as_ptr(),
            std::ptr::null_mut::<u64>(),
            8,
        );
    }
    if new_group {
        libc::setpgid(0, 0);
        // In a terminal the new group takes the foreground, as tini -g does, or an interactive
        // command would be stopped (SIGTTIN) at its first read. The inherited mask still blocks
        // SIGTTOU, which a background group's tcsetpgrp would get. Without a terminal on stdin
        // this fails (ENOTTY) and changes nothing.
        libc::tcsetpgrp(0, libc::getpid());
    }
    let empty = SignalSet::of([]);
    libc::sigprocmask(libc::SIG_SETMASK, &empty.0, std::ptr::null_mut());
    libc::execvp(*argv, argv);
    let errno = *libc::__errno_location();
    libc::write(report, (&raw const errno).cast(), 4);
    libc::_exit(127)
}
