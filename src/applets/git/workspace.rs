//! The temporary area of a clone and what DEST holds: a workspace beside DEST (or inside it, when
//! DEST is a mount point) that the checkout is written into and then swapped into place, the
//! commit recorded on DEST for idempotent re-runs, and the sweep of workspaces killed runs left.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::error::Error;
use crate::log;
use crate::supervisor::TempGuard;
use crate::sys;

/// Extended attribute on DEST naming the commit checked out there, for idempotent re-runs:
/// the commit id, then, after a space, the options that shaped the checkout (`--submodules`).
pub const COMMIT_XATTR: &CStr = c"user.initbox.git-commit";
/// Longest value of [`COMMIT_XATTR`] read back.
const MAX_RECORDED: usize = 4096;

/// What a checkout recorded on DEST: its commit and the options that shaped it.
#[derive(Debug, PartialEq, Eq)]
pub struct Recorded {
    pub commit: String,
    /// `None` when only `--revision-file` told the commit (no user xattrs on DEST).
    spec: Option<String>,
}

impl Recorded {
    pub fn new(commit: &str, spec: &str) -> Recorded {
        Recorded {
            commit: commit.to_string(),
            spec: Some(spec.to_string()),
        }
    }

    fn parse(text: &str) -> Option<Recorded> {
        let (commit, spec) = text.split_once(' ').unwrap_or((text, ""));
        (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Recorded::new(commit, spec))
    }

    /// Whether DEST holds what `wanted` describes; a revision file tells only the commit.
    pub fn is(&self, wanted: &Recorded) -> bool {
        self.commit == wanted.commit
            && (self.spec.is_none() || wanted.spec.is_none() || self.spec == wanted.spec)
    }

    fn value(&self) -> String {
        match self.spec.as_deref() {
            None | Some("") => self.commit.clone(),
            Some(spec) => format!("{} {spec}", self.commit),
        }
    }
}

/// What DEST holds before the checkout.
#[derive(Debug, PartialEq, Eq)]
pub enum DestState {
    Missing,
    Empty,
    /// Files, and the commit they were checked out from when known.
    Holds(Option<Recorded>),
}

pub fn dest_state(dest: &Path, revision_file: Option<&Path>) -> Result<DestState, Error> {
    // Workspaces a killed run (SIGKILL, node crash) left beside or inside DEST go first.
    sweep_workspaces(&parent_of(dest), dest_name(dest));
    sweep_workspaces(dest, b"");
    let mut entries = match fs::read_dir(dest) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DestState::Missing),
        Err(e) => return Err(Error::io(format!("cannot read {}", dest.display()), &e)),
    };
    if entries.next().is_none() {
        return Ok(DestState::Empty);
    }
    let recorded = read_commit_xattr(dest).or_else(|| {
        let text = fs::read_to_string(revision_file?).ok()?;
        let mut recorded = Recorded::parse(text.trim())?;
        recorded.spec = None;
        Some(recorded)
    });
    Ok(DestState::Holds(recorded))
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn dest_name(dest: &Path) -> &[u8] {
    dest.file_name().map_or(&[], |name| name.as_bytes())
}

fn open_path(path: &Path) -> io::Result<OwnedFd> {
    sys::open_dir(&CString::new(path.as_os_str().as_bytes())?)
}

fn read_commit_xattr(path: &Path) -> Option<Recorded> {
    let value = sys::get_xattr(&open_path(path).ok()?, COMMIT_XATTR, MAX_RECORDED).ok()?;
    Recorded::parse(&String::from_utf8(value).ok()?)
}

/// Records the commit on DEST; filesystems without user xattrs (older tmpfs) just skip it.
fn write_commit_xattr(dir: &OwnedFd, recorded: &Recorded) {
    let _ = sys::set_xattr(dir, COMMIT_XATTR, recorded.value().as_bytes());
}

/// Inside every workspace, made first: a FIFO, a kind of file no git tree can hold, so a later
/// run can tell a workspace a killed run left from checked-out content named like one.
const WORKSPACE_MARKER: &CStr = c".initbox-workspace";
/// Workspaces are named `.DEST.initbox-R.git` beside DEST and `.initbox-R.git` inside it, R
/// being random hex digits (see `atomic::temp_name`).
const WORKSPACE_KIND: &str = "git";

/// Removes the workspaces for `dest_name` in `dir` that killed runs left: our exact name
/// pattern, older than this run, holding the marker.
fn sweep_workspaces(dir: &Path, dest_name: &[u8]) {
    let Ok(dir) = open_path(dir) else {
        return;
    };
    let Ok(mut entries) = dir.try_clone().and_then(sys::Dir::new) else {
        return;
    };
    while let Some(Ok(name)) = entries.next_name() {
        if atomic::is_temp_name(name.to_bytes(), dest_name, WORKSPACE_KIND)
            && is_stale_workspace(&dir, &name)
        {
            let _ = sys::remove_tree(&dir, &name);
        }
    }
}

fn is_stale_workspace(dir: &OwnedFd, name: &CStr) -> bool {
    let Ok(workspace) = sys::open_dir_at(dir.as_raw_fd(), name) else {
        return false;
    };
    let old = sys::fstat(workspace.as_raw_fd())
        .is_ok_and(|stat| atomic::older_than_this_run(stat.st_mtime, stat.st_mtime_nsec));
    old && sys::lstat_at(workspace.as_raw_fd(), WORKSPACE_MARKER)
        .is_ok_and(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

/// The temporary area of one run: `pack` (the unlinked pack file) and `tree` (the checkout).
pub struct Workspace {
    guard: TempGuard,
    /// The workspace directory itself.
    dir: OwnedFd,
    /// The workspace is inside DEST (DEST is a mount point or its parent is read-only).
    inside_dest: bool,
}

impl Workspace {
    /// Beside DEST when DEST can be renamed there; otherwise inside DEST.
    pub fn create(dest: &Path, state: &DestState) -> Result<Workspace, Error> {
        let parent = parent_of(dest);
        if *state == DestState::Missing {
            // As `git clone` does, leading directories are created.
            fs::create_dir_all(&parent)
                .map_err(|e| Error::io(format!("cannot create {}", parent.display()), &e))?;
        }
        let mount_point = *state != DestState::Missing && is_mount_point(dest, &parent);
        if !mount_point {
            match Workspace::make(&parent, dest_name(dest), false) {
                Err(_) if *state != DestState::Missing => {}
                made => return made,
            }
        }
        Workspace::make(dest, b"", true)
    }

    fn make(directory: &Path, dest_name: &[u8], inside_dest: bool) -> Result<Workspace, Error> {
        let fail = |e: io::Error| {
            Error::io(
                format!(
                    "cannot create a temporary directory in {}",
                    directory.display()
                ),
                &e,
            )
        };
        let parent = open_path(directory).map_err(fail)?;
        let (guard, dir) =
            atomic::create_named(directory, dest_name, WORKSPACE_KIND, true, |name| {
                sys::mkdir_at(&parent, name, 0o700)?;
                sys::open_dir_at(parent.as_raw_fd(), name)
            })
            .map_err(fail)?;
        sys::mkfifo_at(&dir, WORKSPACE_MARKER).map_err(fail)?;
        sys::mkdir_at(&dir, c"tree", 0o777).map_err(fail)?;
        Ok(Workspace {
            guard,
            dir,
            inside_dest,
        })
    }

    pub fn tree(&self) -> PathBuf {
        self.guard.path().join("tree")
    }

    /// A new temporary file for a pack, already unlinked so nothing can be left behind; `name`
    /// tells apart the packs of submodules fetched side by side.
    pub fn pack_file(&self, name: &str) -> Result<File, Error> {
        let path = self.guard.path().join(name);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("cannot create the temporary pack file", &e))?;
        let _ = fs::remove_file(&path);
        Ok(file)
    }

    /// Moves the checkout into DEST, replacing what DEST holds.
    pub fn install(self, dest: &Path, state: &DestState, recorded: &Recorded) -> Result<(), Error> {
        let fail = |e: io::Error| {
            Error::io(
                format!("cannot move the checkout into {}", dest.display()),
                &e,
            )
        };
        let own = CString::new(self.guard.path().file_name().unwrap_or_default().as_bytes())
            .map_err(|e| fail(e.into()))?;
        let tree = sys::open_dir_at(self.dir.as_raw_fd(), c"tree").map_err(fail)?;
        let shown = self.guard.path().display().to_string();
        let holder = if self.inside_dest {
            let dest_dir = open_path(dest).map_err(fail)?;
            // Under the clean-up lock, so a signal cannot remove half the tree mid-move.
            self.guard
                .commit(|_| move_entries(&dest_dir, &own, &tree))
                .map_err(fail)?;
            write_commit_xattr(&dest_dir, recorded);
            dest_dir
        } else {
            write_commit_xattr(&tree, recorded);
            let parent = open_path(&parent_of(dest)).map_err(fail)?;
            let name = CString::new(dest_name(dest)).map_err(|e| fail(e.into()))?;
            let swap = |_: &Path| match state {
                DestState::Holds(_) => sys::exchange_at(&self.dir, c"tree", &parent, &name)
                    .or_else(|_| {
                        // Filesystems without RENAME_EXCHANGE: two renames, a moment apart.
                        sys::rename_at(&parent, &name, &self.dir, c"old")?;
                        sys::rename_at(&self.dir, c"tree", &parent, &name)
                    }),
                _ => sys::rename_at(&self.dir, c"tree", &parent, &name),
            };
            self.guard.commit(swap).map_err(fail)?;
            parent
        };
        // What is left is the old checkout (after an exchange) or an empty workspace; the
        // checkout is in place, so failing to remove it is only worth a warning.
        if let Err(e) = sys::remove_tree(&holder, &own) {
            log::warn(&format!("cannot remove the temporary {shown}: {e}"), &[]);
        }
        Ok(())
    }
}

/// Replaces everything in `dest` but the workspace `own` with the entries of `tree`.
fn move_entries(dest: &OwnedFd, own: &CStr, tree: &OwnedFd) -> io::Result<()> {
    let mut old = sys::Dir::new(dest.try_clone()?)?;
    while let Some(name) = old.next_name() {
        let name = name?;
        if name.as_c_str() != own {
            sys::remove_tree(dest, &name)?;
        }
    }
    let mut new = sys::Dir::new(tree.try_clone()?)?;
    while let Some(name) = new.next_name() {
        let name = name?;
        sys::rename_at(tree, &name, dest, &name)?;
    }
    Ok(())
}

/// Opens the directory of `path` when it lies in DEST, as the checkout does: below DEST no
/// symlink is followed, since the repository chose them. `None` for a path elsewhere.
pub fn open_parent_within(dest: &Path, path: &Path) -> Result<Option<OwnedFd>, Error> {
    let Some(inside) = path
        .parent()
        .and_then(|parent| parent.strip_prefix(dest).ok())
    else {
        return Ok(None);
    };
    let mut dir = open_path(dest).map_err(|e| Error::io(dest.display(), &e))?;
    for component in inside.components() {
        let name = CString::new(component.as_os_str().as_bytes())
            .map_err(|_| Error::usage("path contains NUL"))?;
        dir = sys::open_dir_at(dir.as_raw_fd(), &name).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => Error::Io(format!(
                "{}: goes through a symlink or file of the checkout in {}; refused",
                path.display(),
                dest.display()
            )),
            _ => Error::io(path.display(), &e),
        })?;
    }
    Ok(Some(dir))
}

fn is_mount_point(dest: &Path, parent: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(dest), fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev() || d.ino() == p.ino(),
        _ => false,
    }
}
