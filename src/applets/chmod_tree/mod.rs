//! `chmod-tree`: the "mkdir -p, chmod -R, chown -R" and fsGroup fix-ups of a volume in one pass
//! that never follows a symlink.
//!
//! The walk holds one open directory stream per level (memory grows with depth, never with the
//! number of entries) and does everything relative to directory file descriptors: entries are
//! examined with `fstatat(AT_SYMLINK_NOFOLLOW)`, directories are entered with
//! `openat(O_DIRECTORY | O_NOFOLLOW)` and changed through that descriptor, other entries are
//! changed with `fchownat(AT_SYMLINK_NOFOLLOW)` and `fchmodat2(AT_SYMLINK_NOFOLLOW)`. A directory
//! swapped for a symlink during the walk makes the `openat` fail instead of leading outside the
//! tree. Only what differs is changed, and a failure on one entry does not stop the walk: every
//! failure is reported, the exit code is that of the first.

mod mode;

use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
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

    /// Changes a directory through its own descriptor.
    fn change_dir(&mut self, fd: RawFd, stat: &libc::stat, path: &Path) {
        let change = self.needs(stat);
        if change == Change::default() {
            return;
        }
        self.counts.changed += 1;
        if self.plan.dry_run {
            self.dry_run_line(path, stat, &change);
            return;
        }
        if change.owner {
            if let Err(e) = sys::chown_fd(fd, self.plan.owner.uid, self.plan.owner.gid) {
                self.fail(path, "change owner", &e);
            }
        }
        if let Some(mode) = change.mode {
            if let Err(e) = sys::chmod_fd(fd, mode) {
                self.fail(path, "change mode", &e);
            }
        }
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
            libc::S_IFDIR => self.tree(path, &name),
            _ => {
                self.counts.files += 1;
                self.change_entry(libc::AT_FDCWD, &name, &stat, &|| path.to_path_buf());
                Ok(())
            }
        }
    }

    /// A top directory and everything under it, one open directory stream per level.
    fn tree(&mut self, top: &Path, name: &CStr) -> Result<(), Error> {
        let fd = match sys::open_dir_at(libc::AT_FDCWD, name) {
            Ok(fd) => fd,
            Err(e) => {
                self.fail(top, "open it", &e);
                return Ok(());
            }
        };
        let stat = match sys::fstat(fd.as_raw_fd()) {
            Ok(stat) => stat,
            Err(e) => {
                self.fail(top, "examine it", &e);
                return Ok(());
            }
        };
        self.counts.dirs += 1;
        if self.plan.if_root_mismatch && self.needs(&stat) == Change::default() {
            log::info(
                &format!(
                    "{}: already has the wanted mode and owner, walk skipped (--if-root-mismatch)",
                    top.display()
                ),
                &[("path", json!(top.display().to_string()))],
            );
            return Ok(());
        }
        let root_device = stat.st_dev;
        self.change_dir(fd.as_raw_fd(), &stat, top);
        let mut path = top.to_path_buf();
        let mut stack = match Dir::new(fd) {
            Ok(dir) => vec![dir],
            Err(e) => {
                self.fail(top, "read it", &e);
                return Ok(());
            }
        };
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
                    stack.pop();
                    if !stack.is_empty() {
                        path.pop();
                    }
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
                libc::S_IFDIR => {
                    if self.plan.one_file_system && stat.st_dev != root_device {
                        self.counts.other_filesystem += 1;
                        continue;
                    }
                    let child = match sys::open_dir_at(dir, &name) {
                        Ok(child) => child,
                        Err(e) => {
                            self.counts.dirs += 1;
                            self.fail(&entry_path(), "enter it", &e);
                            continue;
                        }
                    };
                    // What was opened is what counts, if the entry changed since fstatat.
                    let stat = match sys::fstat(child.as_raw_fd()) {
                        Ok(stat) => stat,
                        Err(e) => {
                            self.fail(&entry_path(), "examine it", &e);
                            continue;
                        }
                    };
                    if self.plan.one_file_system && stat.st_dev != root_device {
                        self.counts.other_filesystem += 1;
                        continue;
                    }
                    self.counts.dirs += 1;
                    let child_path = entry_path();
                    self.change_dir(child.as_raw_fd(), &stat, &child_path);
                    match Dir::new(child) {
                        Ok(child) => {
                            path = child_path;
                            stack.push(child);
                        }
                        Err(e) => self.fail(&child_path, "read it", &e),
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
