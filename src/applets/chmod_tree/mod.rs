//! `chmod-tree`: the "mkdir -p, chmod -R, chown -R" and fsGroup fix-ups of a volume in one pass
//! that never follows a symlink.
//!
//! The walk does everything relative to directory file descriptors: entries are examined with
//! `fstatat(AT_SYMLINK_NOFOLLOW)`, directories are entered with `openat(O_DIRECTORY | O_NOFOLLOW)`
//! and changed through that descriptor, other entries are changed with
//! `fchownat(AT_SYMLINK_NOFOLLOW)` and `sys::chmod_at` (which never opens them). A directory
//! swapped for a symlink during the walk makes the `openat` fail instead of leading outside the
//! tree. A directory gets the mode bits it gains before its entries are read (a mode-000
//! directory of the caller's is repaired first) and loses bits and changes owner after them, so
//! the walk never locks itself out, as root without CAP_DAC_OVERRIDE would. At most
//! `MAX_OPEN_DIRS` levels stay open: deeper, ancestors are read ahead and closed, and reopened
//! through `..` (checked by device and inode) on the way back. Only what differs is changed,
//! and a failure on one entry does not stop the walk: every failure is reported, the exit code
//! is that of the first.

mod mode;

use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::{format_duration, Args};
use crate::error::Error;
use crate::log;
use crate::supervisor::{Deadline, Job};
use crate::sys::{self, Dir};
use mode::{parse_group, parse_owner, ModeSpec, Ownership};

pub const USAGE: &str = "\
Usage: initbox chmod-tree [OPTIONS] PATH...

Set mode and owner of every PATH and everything under it, changing only what
differs. Symlinks are never followed, changed or descended into, even if one
is swapped in during the walk.

OPTIONS
    --mode MODE          mode of directories and files: octal (0750) or
                         symbolic as chmod (u=rwX,g=rX,o=; X = execute for
                         directories and already-executable files)
    --dir-mode MODE      mode of directories (overrides --mode for them)
    --file-mode MODE     mode of everything else (overrides --mode for them)
    --owner UID[:GID]    owner; names only where /etc/passwd, /etc/group exist
    --group GID          group (same as --owner :GID)
    --mkdir              create missing PATHs (and parents) first
    --one-file-system    do not enter directories on other filesystems
    --if-root-mismatch   skip a PATH whose top directory already has the wanted
                         mode and owner (fsGroupChangePolicy: OnRootMismatch)
    --dry-run            print what would change, change nothing
(defaults: nothing is changed that no option names)

An octal mode of up to 4 digits keeps a directory's set-group-ID bit, as GNU
chmod does (fsGroup sets it); write 5 digits (00770) to clear it.
One summary line: entries seen, changed, errors, time. Every failure is
reported and the walk goes on; a missing PATH exits 66, EPERM/EACCES 77.

EXAMPLES
    initbox chmod-tree --mkdir --mode 0700 --owner 65532:65532 /app/data
    initbox chmod-tree --dir-mode 2770 --file-mode g+rw --group 2000 /data
    initbox chmod-tree --if-root-mismatch --owner 1000:1000 --mode u+rwX /var/lib/app";

const MODE: &str = "--mode";
const DIR_MODE: &str = "--dir-mode";
const FILE_MODE: &str = "--file-mode";
const OWNER: &str = "--owner";
const GROUP: &str = "--group";
const MKDIR: &str = "--mkdir";
const ONE_FILE_SYSTEM: &str = "--one-file-system";
const IF_ROOT_MISMATCH: &str = "--if-root-mismatch";
const DRY_RUN: &str = "--dry-run";
/// How many entries between two checks of the deadline and the stop flag.
const CHECK_EVERY: u64 = 1024;

#[derive(Clone, Debug)]
struct Plan {
    dir_mode: Option<ModeSpec>,
    file_mode: Option<ModeSpec>,
    owner: Ownership,
    mkdir: bool,
    one_file_system: bool,
    if_root_mismatch: bool,
    dry_run: bool,
}

pub fn parse(mut args: Args) -> Result<Job, Error> {
    let mode = args.value(MODE, ModeSpec::parse)?;
    let dir_mode = args
        .value(DIR_MODE, ModeSpec::parse)?
        .or_else(|| mode.clone());
    let file_mode = args.value(FILE_MODE, ModeSpec::parse)?.or(mode);
    let mut owner = args.value(OWNER, parse_owner)?.unwrap_or_default();
    if let Some(gid) = args.value(GROUP, parse_group)? {
        owner.gid = Some(gid);
    }
    let plan = Plan {
        dir_mode,
        file_mode,
        owner,
        mkdir: args.flag(MKDIR),
        one_file_system: args.flag(ONE_FILE_SYSTEM),
        if_root_mismatch: args.flag(IF_ROOT_MISMATCH),
        dry_run: args.flag(DRY_RUN),
    };
    let paths: Vec<PathBuf> = args.positionals()?.into_iter().map(PathBuf::from).collect();
    if paths.is_empty() {
        return Err(Error::usage("no PATH given"));
    }
    if plan.dir_mode.is_none() && plan.file_mode.is_none() && plan.owner == Ownership::default() {
        return Err(Error::usage(
            "nothing to change: give --mode, --dir-mode, --file-mode, --owner or --group",
        ));
    }
    Ok(Box::new(move |deadline| {
        let mut walk = Walk {
            plan: &plan,
            deadline,
            counts: Counts::default(),
            first_error: None,
            root_device: 0,
        };
        for path in &paths {
            walk.top(path)?;
        }
        walk.finish(&paths)
    }))
}

#[derive(Debug, Default)]
struct Counts {
    dirs: u64,
    files: u64,
    symlinks: u64,
    changed: u64,
    other_filesystem: u64,
    errors: u64,
}

/// What an entry needs: a new mode, a new owner, both or neither.
#[derive(Debug, Default, PartialEq, Eq)]
struct Change {
    mode: Option<u32>,
    owner: bool,
}

struct Walk<'a> {
    plan: &'a Plan,
    deadline: &'a Deadline,
    counts: Counts,
    first_error: Option<Error>,
    /// The device of the top directory being walked, for `--one-file-system`.
    root_device: u64,
}

/// At most this many directories of the path being walked are held open; deeper ones park
/// their ancestors (as fts bounds its descriptors).
const MAX_OPEN_DIRS: usize = 32;

/// A directory being walked.
struct Level {
    entries: Entries,
    /// Device and inode: a parked directory reopened through `..` must be this one.
    id: (u64, u64),
    /// What waits until the entries are done: bits taken away and the owner, which could lock
    /// the walk out of the directory (issue 9 #2).
    after: Change,
}

enum Entries {
    /// Read from the open directory as the walk goes.
    Stream(Dir),
    /// Read ahead (in reverse order) when the level was parked; `fd` is the directory reopened
    /// when the walk comes back to it.
    Listed {
        names: Vec<CString>,
        fd: Option<OwnedFd>,
    },
}

impl Level {
    /// The directory's descriptor; -1 (EBADF to any call) while parked, when the walk, deeper
    /// down, does not use it.
    fn fd(&self) -> RawFd {
        match &self.entries {
            Entries::Stream(dir) => dir.fd(),
            Entries::Listed { fd, .. } => fd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        }
    }

    fn next_name(&mut self) -> Option<io::Result<CString>> {
        match &mut self.entries {
            Entries::Stream(dir) => dir.next_name(),
            Entries::Listed { names, .. } => names.pop().map(Ok),
        }
    }
}

fn is_dir(stat: &libc::stat) -> bool {
    stat.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn cstring(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::usage(format!("{}: path contains a NUL byte", path.display())))
}

impl Walk<'_> {
    fn needs(&self, stat: &libc::stat) -> Change {
        let dir = is_dir(stat);
        let spec = if dir {
            &self.plan.dir_mode
        } else {
            &self.plan.file_mode
        };
        let current = stat.st_mode & 0o7777;
        let owner = self.plan.owner;
        Change {
            mode: spec
                .as_ref()
                .map(|spec| spec.apply(current, dir))
                .filter(|&wanted| wanted != current),
            owner: owner.uid.is_some_and(|uid| uid != stat.st_uid)
                || owner.gid.is_some_and(|gid| gid != stat.st_gid),
        }
    }

    /// Records a failure on `path` and goes on. The first decides the exit code.
    fn fail(&mut self, path: &Path, doing: &str, err: &io::Error) {
        self.counts.errors += 1;
        let error = Error::io(format!("{}: cannot {doing}", path.display()), err);
        log::error(
            &error.to_string(),
            &[("path", json!(path.display().to_string()))],
        );
        self.first_error.get_or_insert(error);
    }

    fn dry_run_line(&self, path: &Path, stat: &libc::stat, change: &Change) {
        let mut line = String::new();
        if let Some(mode) = change.mode {
            line.push_str(&format!(
                "mode {:04o} -> {mode:04o} ",
                stat.st_mode & 0o7777
            ));
        }
        if change.owner {
            let owner = self.plan.owner;
            line.push_str(&format!(
                "owner {}:{} -> {}:{} ",
                stat.st_uid,
                stat.st_gid,
                owner.uid.unwrap_or(stat.st_uid),
                owner.gid.unwrap_or(stat.st_gid)
            ));
        }
        let _ = writeln!(io::stdout().lock(), "{line}{}", path.display());
    }

    /// Changes a non-directory entry `name` of the directory `dir`.
    fn change_entry(
        &mut self,
        dir: RawFd,
        name: &CStr,
        stat: &libc::stat,
        path: &dyn Fn() -> PathBuf,
    ) {
        let change = self.needs(stat);
        if change == Change::default() {
            return;
        }
        self.counts.changed += 1;
        if self.plan.dry_run {
            self.dry_run_line(&path(), stat, &change);
            return;
        }
        let mut wanted_mode = change.mode;
        if change.owner {
            if let Err(e) = sys::chown_at(dir, name, self.plan.owner.uid, self.plan.owner.gid) {
                self.fail(&path(), "change owner", &e);
            } else if self.plan.file_mode.is_some() && stat.st_mode & 0o6000 != 0 {
                // chown clears set-user-ID and set-group-ID on files: look again.
                if let Ok(after) = sys::lstat_at(dir, name) {
                    wanted_mode = self.needs(&after).mode;
                }
            }
        }
        if let Some(mode) = wanted_mode {
            if let Err(e) = sys::chmod_at(dir, name, mode, (stat.st_dev, stat.st_ino)) {
                self.fail(&path(), "change mode", &e);
            }
        }
    }

    /// One PATH from the command line.
    fn top(&mut self, path: &Path) -> Result<(), Error> {
        // A trailing `/` or `/.` makes the kernel resolve a symlink in the last component
        // (`link/` is its target): without them the last component is the entry itself.
        let path = &path.components().collect::<PathBuf>();
        if self.plan.mkdir && fs::symlink_metadata(path).is_err() {
            if self.plan.dry_run {
                let _ = writeln!(io::stdout().lock(), "create {}", path.display());
                return Ok(());
            }
            if let Err(e) = fs::create_dir_all(path) {
                self.fail(path, "create it (--mkdir)", &e);
                return Ok(());
            }
        }
        let name = cstring(path)?;
        let stat = match sys::lstat_at(libc::AT_FDCWD, &name) {
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.counts.errors += 1;
                let error = Error::InputMissing(format!(
                    "{}: does not exist (--mkdir creates it)",
                    path.display()
                ));
                log::error(&error.to_string(), &[]);
                self.first_error.get_or_insert(error);
                return Ok(());
            }
            Err(e) => {
                self.fail(path, "examine it", &e);
                return Ok(());
            }
        };
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                self.counts.errors += 1;
                let error = Error::Data(format!(
                    "{}: is a symlink, which chmod-tree never follows; give the real path",
                    path.display()
                ));
                log::error(&error.to_string(), &[]);
                self.first_error.get_or_insert(error);
                Ok(())
            }
            libc::S_IFDIR => self.tree(path, &name, &stat),
            _ => {
                self.counts.files += 1;
                self.change_entry(libc::AT_FDCWD, &name, &stat, &|| path.to_path_buf());
                Ok(())
            }
        }
    }

    /// A top directory (examined as `stat`) and everything under it.
    fn tree(&mut self, top: &Path, name: &CStr, stat: &libc::stat) -> Result<(), Error> {
        self.counts.dirs += 1;
        // Decided before opening: the top may be right and closed to the caller, who needs
        // only its parent to look at it (issue 9 #2).
        if self.plan.if_root_mismatch && self.needs(stat) == Change::default() {
            log::info(
                &format!(
                    "{}: already has the wanted mode and owner, walk skipped (--if-root-mismatch)",
                    top.display()
                ),
                &[("path", json!(top.display().to_string()))],
            );
            return Ok(());
        }
        self.root_device = stat.st_dev;
        let Some(level) = self.enter(libc::AT_FDCWD, name, stat, top) else {
            return Ok(());
        };
        let mut path = top.to_path_buf();
        let mut stack = vec![level];
        // Levels below this index are parked: read ahead and closed.
        let mut open_from = 0;
        let mut seen = 0u64;
        while let Some(current) = stack.last_mut() {
            let next = current.next_name();
            let dir = current.fd();
            let name = match next {
                Some(Ok(name)) => name,
                end_or_error => {
                    if let Some(Err(e)) = end_or_error {
                        self.fail(&path, "read it", &e);
                    }
                    self.leave(&mut stack, &mut open_from, &mut path);
                    continue;
                }
            };
            seen += 1;
            if seen.is_multiple_of(CHECK_EVERY) {
                self.deadline.check("chmod-tree")?;
            }
            let entry_path = || path.join(OsStr::from_bytes(name.to_bytes()));
            let stat = match sys::lstat_at(dir, &name) {
                Ok(stat) => stat,
                // Removed since it was listed: nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.fail(&entry_path(), "examine it", &e);
                    continue;
                }
            };
            match stat.st_mode & libc::S_IFMT {
                libc::S_IFLNK => self.counts.symlinks += 1,
                libc::S_IFDIR if self.elsewhere(&stat) => {}
                libc::S_IFDIR => {
                    self.counts.dirs += 1;
                    let child_path = entry_path();
                    if let Some(child) = self.enter(dir, &name, &stat, &child_path) {
                        path = child_path;
                        stack.push(child);
                        if stack.len() - open_from > MAX_OPEN_DIRS {
                            let depth = stack.len() - 1 - open_from;
                            self.park(&mut stack[open_from], path.ancestors().nth(depth));
                            open_from += 1;
                        }
                    }
                }
                _ => {
                    self.counts.files += 1;
                    self.change_entry(dir, &name, &stat, &entry_path);
                }
            }
        }
        Ok(())
    }

    /// Whether `--one-file-system` keeps the walk out of this directory (counted).
    fn elsewhere(&mut self, stat: &libc::stat) -> bool {
        let elsewhere = self.plan.one_file_system && stat.st_dev != self.root_device;
        if elsewhere {
            self.counts.other_filesystem += 1;
        }
        elsewhere
    }

    /// Opens the directory `name` of `parent` (examined as `stat`) and makes the changes that
    /// must come before its entries are read: the mode bits that are added. Bits removed and the
    /// owner wait in `Level::after`, so the walk never locks itself out (issue 9 #2).
    fn enter(
        &mut self,
        parent: RawFd,
        name: &CStr,
        stat: &libc::stat,
        path: &Path,
    ) -> Option<Level> {
        let (fd, repaired) = match sys::open_dir_at(parent, name) {
            Ok(fd) => (fd, false),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !self.plan.dry_run => {
                match self.unlock(parent, name, stat, path)? {
                    true => match sys::open_dir_at(parent, name) {
                        Ok(fd) => (fd, true),
                        Err(e) => return self.fail_none(path, "enter it", &e),
                    },
                    false => return self.fail_none(path, "enter it", &e),
                }
            }
            Err(e) => return self.fail_none(path, "enter it", &e),
        };
        // What was opened is what counts, if the entry changed since it was examined.
        let stat = match sys::fstat(fd.as_raw_fd()) {
            Ok(stat) => stat,
            Err(e) => return self.fail_none(path, "examine it", &e),
        };
        if self.elsewhere(&stat) {
            return None;
        }
        let change = self.needs(&stat);
        if repaired || change != Change::default() {
            self.counts.changed += 1;
        }
        let mut after = Change::default();
        if self.plan.dry_run {
            if change != Change::default() {
                self.dry_run_line(path, &stat, &change);
            }
        } else {
            let current = stat.st_mode & 0o7777;
            if let Some(mode) = change.mode {
                let now = current | mode;
                if now != current {
                    if let Err(e) = sys::chmod_fd(fd.as_raw_fd(), now) {
                        self.fail(path, "change mode", &e);
                    }
                }
                after.mode = (mode != now).then_some(mode);
            }
            after.owner = change.owner;
        }
        match Dir::new(fd) {
            Ok(dir) => Some(Level {
                entries: Entries::Stream(dir),
                id: (stat.st_dev, stat.st_ino),
                after,
            }),
            Err(e) => self.fail_none(path, "read it", &e),
        }
    }

    /// A directory the caller may not enter: adds the bits its new mode adds, as
    /// `chmod -R u=rwX` repairs a mode-000 directory of the caller's (issue 9 #15). `None` after
    /// a failure (reported), `false` when there is nothing to add.
    fn unlock(
        &mut self,
        parent: RawFd,
        name: &CStr,
        stat: &libc::stat,
        path: &Path,
    ) -> Option<bool> {
        let current = stat.st_mode & 0o7777;
        let Some(mode) = self.needs(stat).mode.filter(|&mode| mode & !current != 0) else {
            return Some(false);
        };
        match sys::chmod_at(parent, name, current | mode, (stat.st_dev, stat.st_ino)) {
            Ok(()) => Some(true),
            Err(e) => self.fail_none(path, "change mode", &e),
        }
    }

    fn fail_none<T>(&mut self, path: &Path, doing: &str, err: &io::Error) -> Option<T> {
        self.fail(path, doing, err);
        None
    }

    /// Reads the rest of a level's entries and closes it, so that the open descriptors do not
    /// grow with depth (issue 9 #10); `path` is the level's, for messages.
    fn park(&mut self, level: &mut Level, path: Option<&Path>) {
        let dir = match &mut level.entries {
            Entries::Stream(dir) => dir,
            Entries::Listed { fd, .. } => {
                *fd = None;
                return;
            }
        };
        let mut names = Vec::new();
        for next in std::iter::from_fn(|| dir.next_name()) {
            match next {
                Ok(name) => names.push(name),
                Err(e) => {
                    self.fail(path.unwrap_or(Path::new("")), "read it", &e);
                    break;
                }
            }
        }
        names.reverse();
        level.entries = Entries::Listed { names, fd: None };
    }

    /// Done with the innermost directory: comes back to its parent (reopened through `..` if it
    /// was parked), then makes the changes that waited for the entries.
    fn leave(&mut self, stack: &mut Vec<Level>, open_from: &mut usize, path: &mut PathBuf) {
        let Some(done) = stack.pop() else {
            return;
        };
        // Before the changes: they may take away the search permission `..` needs.
        if stack.len() == *open_from && *open_from > 0 {
            *open_from -= 1;
            let parent = &mut stack[*open_from];
            match reopen_parent(done.fd(), parent.id) {
                Ok(reopened) => {
                    if let Entries::Listed { fd, .. } = &mut parent.entries {
                        *fd = Some(reopened);
                    }
                }
                Err(e) => {
                    self.fail(path.parent().unwrap_or(path), "come back to it", &e);
                    // Its other entries, and those of its parents, cannot be reached safely.
                    stack.clear();
                }
            }
        }
        if done.after.owner {
            let owner = self.plan.owner;
            if let Err(e) = sys::chown_fd(done.fd(), owner.uid, owner.gid) {
                self.fail(path, "change owner", &e);
            }
        }
        if let Some(mode) = done.after.mode {
            if let Err(e) = sys::chmod_fd(done.fd(), mode) {
                self.fail(path, "change mode", &e);
            }
        }
        if !stack.is_empty() {
            path.pop();
        }
    }

    fn finish(self, paths: &[PathBuf]) -> Result<(), Error> {
        let c = &self.counts;
        let verb = if self.plan.dry_run {
            "would change"
        } else {
            "changed"
        };
        let mut message = format!(
            "{} dirs, {} files, {} symlinks seen; {verb} {}; {} errors; {}",
            c.dirs,
            c.files,
            c.symlinks,
            c.changed,
            c.errors,
            format_duration(self.deadline.elapsed())
        );
        if c.other_filesystem > 0 {
            message.push_str(&format!(
                "; {} directories on other filesystems skipped",
                c.other_filesystem
            ));
        }
        log::info(
            &message,
            &[
                (
                    "paths",
                    json!(paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()),
                ),
                ("dirs", json!(c.dirs)),
                ("files", json!(c.files)),
                ("symlinks", json!(c.symlinks)),
                ("changed", json!(c.changed)),
                ("errors", json!(c.errors)),
                (
                    "elapsed_ms",
                    json!(self.deadline.elapsed().as_millis() as u64),
                ),
            ],
        );
        match self.first_error {
            None => Ok(()),
            Some(first) if c.errors == 1 => Err(first),
            Some(first) => Err(retitle(
                first,
                format!("{} errors (each reported above)", c.errors),
            )),
        }
    }
}

/// The parent of the open directory `child` through `..`, if it is still the directory `id`
/// (a directory moved during the walk has another parent now).
fn reopen_parent(child: RawFd, id: (u64, u64)) -> io::Result<OwnedFd> {
    let parent = sys::open_dir_at(child, c"..")?;
    let stat = sys::fstat(parent.as_raw_fd())?;
    if (stat.st_dev, stat.st_ino) != id {
        return Err(io::Error::other(
            "moved during the walk; its other entries left alone",
        ));
    }
    Ok(parent)
}

/// The same kind of error (so the same exit code) with a summary message, prefixed.
fn retitle(error: Error, summary: String) -> Error {
    let message = |m: String| format!("{summary}; the first: {m}");
    match error {
        Error::InputMissing(m) => Error::InputMissing(message(m)),
        Error::Permission(m) => Error::Permission(message(m)),
        Error::Data(m) => Error::Data(message(m)),
        Error::Io(m) => Error::Io(message(m)),
        other => other,
    }
}
