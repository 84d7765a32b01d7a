//! Writing a tree into a directory, refusing hostile trees, and swapping the result into place.
//!
//! Trees come from the network, so every entry name is checked the way git's own `verify_path`
//! does (no `.`, `..`, `.git` in any case or in the spellings NTFS and HFS+ treat as `.git`, no `/`
//! or NUL). Files are created relative to directory descriptors with `O_NOFOLLOW | O_EXCL`, and
//! directories are opened with `O_NOFOLLOW`, so nothing is ever written through a symlink, even one
//! this checkout created (the class of CVE-2018-11235 and CVE-2024-32002). A duplicate entry is
//! refused rather than merged.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::pack::{hex, Kind, Oid, Pack, MAX_OBJECTS};
use super::pktline::trim_text;
use super::progress::Progress;
use super::sparse::{Scope, Sparse};
use crate::error::Error;
use crate::supervisor::Deadline;
use crate::sys;

/// Deeper trees than this are refused (git itself limits paths to 4096 bytes).
const MAX_DEPTH: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    File,
    Executable,
    Symlink,
    Tree,
    Gitlink,
}

#[derive(Debug)]
pub struct TreeEntry<'a> {
    mode: Mode,
    pub name: &'a [u8],
    pub id: Oid,
}

fn hostile(why: String) -> Error {
    Error::Remote(format!(
        "refusing the repository: {why} (a hostile or corrupt tree; nothing was written)"
    ))
}

/// Parses a raw tree object: entries of "MODE NAME\0" and a 20-byte id.
pub fn parse_tree(data: &[u8]) -> Result<Vec<TreeEntry<'_>>, Error> {
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| hostile("malformed tree entry".into()))?;
        let mode = match &rest[..space] {
            b"100644" | b"100664" | b"100640" | b"100600" => Mode::File,
            b"100755" => Mode::Executable,
            b"120000" => Mode::Symlink,
            b"40000" | b"040000" => Mode::Tree,
            b"160000" => Mode::Gitlink,
            other => {
                return Err(hostile(format!(
                    "unknown tree entry mode {}",
                    trim_text(other)
                )))
            }
        };
        rest = &rest[space + 1..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| hostile("malformed tree entry".into()))?;
        let name = &rest[..nul];
        let id: Oid = rest
            .get(nul + 1..nul + 21)
            .ok_or_else(|| hostile("truncated tree entry".into()))?
            .try_into()
            .expect("20 bytes");
        rest = &rest[nul + 21..];
        check_name(name)?;
        entries.push(TreeEntry { mode, name, id });
    }
    Ok(entries)
}

/// Characters HFS+ ignores in file names, so ".g\u{200c}it" is ".git" there (git's `is_hfs_dotgit`).
fn hfs_ignorable(c: char) -> bool {
    matches!(c, '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}')
}

/// Whether a name is `.git` to git, Linux, NTFS (trailing dots and spaces, 8.3 `git~1`) or HFS+.
pub fn is_dot_git(name: &[u8]) -> bool {
    let text = String::from_utf8_lossy(name);
    let folded: String = text
        .chars()
        .filter(|&c| !hfs_ignorable(c))
        .collect::<String>()
        .to_lowercase();
    let trimmed = folded.trim_end_matches([' ', '.']);
    trimmed == ".git" || trimmed == "git~1" || folded.starts_with(".git:")
}

fn check_name(name: &[u8]) -> Result<(), Error> {
    let shown = trim_text(name);
    if name.is_empty() {
        return Err(hostile("a tree entry has an empty name".into()));
    }
    if name == b"." || name == b".." {
        return Err(hostile(format!("a tree entry is named '{shown}'")));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(hostile(format!(
            "tree entry name '{shown}' contains '/' or NUL"
        )));
    }
    if is_dot_git(name) {
        return Err(hostile(format!(
            "a tree entry is named '{shown}', which git refuses"
        )));
    }
    Ok(())
}

/// A submodule entry of a tree: the commit recorded at `path`, which is left an empty directory.
#[derive(Debug)]
pub struct Gitlink {
    /// The raw path from the repository's root, as `.gitmodules` names it.
    pub path: Vec<u8>,
    /// The path escaped for messages.
    pub shown: String,
    pub id: Oid,
}

#[derive(Default, Debug)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub gitlinks: Vec<Gitlink>,
}

pub struct Checkout<'a> {
    pub pack: &'a mut Pack,
    pub fail_on_submodules: bool,
    pub deadline: &'a Deadline,
    pub stats: Stats,
    pub progress: &'a mut Progress,
    /// `--sparse`: what is written, when not everything.
    pub sparse: Option<Sparse>,
    /// The raw path of the directory being written, from the root, with a trailing `/`.
    path: Vec<u8>,
}

fn cstring(name: &[u8]) -> CString {
    CString::new(name).expect("names with NUL were refused")
}

fn os_error(what: &str, path: &str, err: &io::Error) -> Error {
    if err.raw_os_error() == Some(libc::EEXIST) || err.raw_os_error() == Some(libc::ELOOP) {
        return hostile(format!("'{path}' appears twice or goes through a symlink"));
    }
    Error::io(format!("cannot {what} {path}"), err)
}

fn open_dir_at(parent: &OwnedFd, name: &CStr, shown: &str) -> Result<OwnedFd, Error> {
    sys::open_dir_at(parent.as_raw_fd(), name).map_err(|e| os_error("open directory", shown, &e))
}

/// Opens an existing directory by path (the checkout root).
pub fn open_dir(path: &Path) -> Result<OwnedFd, Error> {
    let name =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::usage("path contains NUL"))?;
    sys::open_dir_at(libc::AT_FDCWD, &name)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), &e))
}

impl<'a> Checkout<'a> {
    pub fn new(
        pack: &'a mut Pack,
        deadline: &'a Deadline,
        progress: &'a mut Progress,
        fail_on_submodules: bool,
    ) -> Checkout<'a> {
        Checkout {
            pack,
            fail_on_submodules,
            deadline,
            stats: Stats::default(),
            progress,
            sparse: None,
            path: Vec::new(),
        }
    }

    /// Writes tree `id` into the directory `dir` (which `prefix` names in messages). `dir` is
    /// swapped for each subdirectory while it is written and reopened through `..` after, so the
    /// descriptors in use do not grow with the depth (a tree deeper than the descriptor limit).
    pub fn write_tree(
        &mut self,
        id: &Oid,
        dir: &mut OwnedFd,
        prefix: &str,
        depth: usize,
    ) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(hostile(format!("trees nested deeper than {MAX_DEPTH}")));
        }
        self.deadline.check("checking out")?;
        let data = self.object(id, Kind::Tree, prefix)?;
        for entry in parse_tree(&data)? {
            // Names are server text: escaped once here for every message and log line.
            let shown = format!("{prefix}{}", trim_text(entry.name));
            let name = cstring(entry.name);
            let scope = match &mut self.sparse {
                None => Scope::All,
                Some(sparse) => sparse.scope(&[&self.path[..], entry.name].concat()),
            };
            let container = matches!(entry.mode, Mode::Tree | Mode::Gitlink);
            if scope == Scope::Outside || (scope == Scope::Part && !container) {
                continue;
            }
            match entry.mode {
                Mode::Tree | Mode::Gitlink => {
                    if entry.mode == Mode::Gitlink {
                        if self.fail_on_submodules {
                            return Err(Error::Remote(format!(
                                "'{shown}' is a submodule (commit {}), refused by --fail-on-submodules",
                                hex(&entry.id)
                            )));
                        }
                        self.stats.gitlinks.push(Gitlink {
                            path: [&self.path[..], entry.name].concat(),
                            shown: shown.clone(),
                            id: entry.id,
                        });
                    }
                    sys::mkdir_at(dir, &name, 0o755)
                        .map_err(|e| os_error("create directory", &shown, &e))?;
                    if entry.mode == Mode::Tree {
                        self.write_subtree(&entry.id, dir, &name, &shown, depth)?;
                    }
                }
                Mode::Symlink => {
                    let target = self.object(&entry.id, Kind::Blob, &shown)?;
                    if target.is_empty() || target.contains(&0) {
                        return Err(hostile(format!("symlink '{shown}' has an invalid target")));
                    }
                    sys::symlink_at(&cstring(&target), dir, &name)
                        .map_err(|e| os_error("create symlink", &shown, &e))?;
                    self.stats.files += 1;
                }
                Mode::File | Mode::Executable => {
                    let mode = if entry.mode == Mode::Executable {
                        0o755
                    } else {
                        0o644
                    };
                    // The mode is set exactly: the umask must not change what git checks out.
                    let mut file = sys::create_file_at(dir, &name, mode)
                        .map_err(|e| os_error("create", &shown, &e))?;
                    let size = self
                        .pack
                        .write_blob(&entry.id, &mut file)
                        .map_err(|e| match e {
                            Error::Io(m) => Error::Io(format!("{shown}: {m}")),
                            other => other,
                        })?
                        .ok_or_else(|| missing(&entry.id, &shown))?;
                    self.stats.files += 1;
                    self.stats.bytes += size;
                }
            }
            self.progress.checking_out(self.stats.files);
        }
        Ok(())
    }

    /// Writes the tree `id` into `name`, a new subdirectory of `dir`, then reopens `dir`.
    fn write_subtree(
        &mut self,
        id: &Oid,
        dir: &mut OwnedFd,
        name: &CStr,
        shown: &str,
        depth: usize,
    ) -> Result<(), Error> {
        let identity = |fd: &OwnedFd| {
            sys::fstat(fd.as_raw_fd())
                .map(|stat| (stat.st_dev, stat.st_ino))
                .map_err(|e| os_error("examine", shown, &e))
        };
        let here = identity(dir)?;
        let child = open_dir_at(dir, name, shown)?;
        drop(std::mem::replace(dir, child));
        let parent_path = self.path.len();
        self.path.extend_from_slice(name.to_bytes());
        self.path.push(b'/');
        let written = self.write_tree(id, dir, &format!("{shown}/"), depth + 1);
        self.path.truncate(parent_path);
        written?;
        let parent = open_dir_at(dir, c"..", shown)?;
        if identity(&parent)? != here {
            return Err(Error::Io(format!(
                "{shown}: the checkout was moved while being written"
            )));
        }
        *dir = parent;
        Ok(())
    }

    fn object(&mut self, id: &Oid, kind: Kind, shown: &str) -> Result<std::rc::Rc<Vec<u8>>, Error> {
        match self.pack.get(id)? {
            Some((found, data)) if found == kind => Ok(data),
            Some((found, _)) => Err(Error::Remote(format!(
                "{shown}: object {} is a {}, expected a {}",
                hex(id),
                found.name(),
                kind.name()
            ))),
            None => Err(missing(id, shown)),
        }
    }
}

/// An object the tree names but the pack lacks: with a verified pack, that means some object's
/// content does not hash to the id it is referred to by.
pub fn missing(id: &Oid, shown: &str) -> Error {
    Error::Integrity(format!(
        "object {} ({}) is not in the pack: an object's content does not match its id, or the \
         server sent an incomplete pack",
        hex(id),
        if shown.is_empty() { "root tree" } else { shown }
    ))
}

/// What `path` (raw, `/`-separated, from the root tree `root`) names in the tree: `None` when
/// nothing does, else the kind of entry (`file`, `symlink`, `directory`, `submodule`).
pub fn entry_kind(pack: &mut Pack, root: &Oid, path: &[u8]) -> Result<Option<&'static str>, Error> {
    let mut tree = *root;
    let mut components = path.split(|&b| b == b'/').peekable();
    while let Some(component) = components.next() {
        let Some((Kind::Tree, data)) = pack.get(&tree)? else {
            return Ok(None);
        };
        let entries = parse_tree(&data)?;
        let Some(entry) = entries.iter().find(|e| e.name == component) else {
            return Ok(None);
        };
        match (entry.mode, components.peek()) {
            (Mode::Tree, Some(_)) => tree = entry.id,
            (_, Some(_)) => return Ok(None),
            (Mode::Tree, None) => return Ok(Some("directory")),
            (Mode::Gitlink, None) => return Ok(Some("submodule")),
            (Mode::Symlink, None) => return Ok(Some("symlink")),
            (Mode::File | Mode::Executable, None) => return Ok(Some("file")),
        }
    }
    Ok(None)
}

/// The blobs the checkout of `root` restricted to `sparse` writes (files and symlink targets),
/// for the fetch that follows a filtered one.
pub fn blobs_in_scope(pack: &mut Pack, root: &Oid, sparse: &Sparse) -> Result<Vec<Oid>, Error> {
    // A copy: what the walk finds must not count as found for the checkout.
    let mut sparse = sparse.clone();
    let mut blobs = Vec::new();
    let mut trees = vec![(*root, Vec::new(), 0)];
    while let Some((id, prefix, depth)) = trees.pop() {
        if depth > MAX_DEPTH {
            return Err(hostile(format!("trees nested deeper than {MAX_DEPTH}")));
        }
        let Some((Kind::Tree, data)) = pack.get(&id)? else {
            return Err(missing(&id, &String::from_utf8_lossy(&prefix)));
        };
        for entry in parse_tree(&data)? {
            let path = [&prefix[..], entry.name].concat();
            match (sparse.scope(&path), entry.mode) {
                (Scope::Outside, _) | (_, Mode::Gitlink) => {}
                (_, Mode::Tree) => trees.push((entry.id, [&path[..], b"/"].concat(), depth + 1)),
                (Scope::All, _) if blobs.len() == MAX_OBJECTS as usize => {
                    // No pack may bring more; the list and its request stay bounded.
                    return Err(hostile(format!(
                        "the --sparse paths name more than {MAX_OBJECTS} files"
                    )));
                }
                (Scope::All, _) => blobs.push(entry.id),
                (Scope::Part, _) => {}
            }
        }
    }
    blobs.sort_unstable();
    blobs.dedup();
    Ok(blobs)
}

/// The blob id of a regular file at the root of tree `root`, if there is one named `name`;
/// any other kind of entry by that name is refused (git's fsck refuses a `.gitmodules` symlink).
pub fn root_file(pack: &mut Pack, root: &Oid, name: &[u8]) -> Result<Option<Oid>, Error> {
    let Some((Kind::Tree, data)) = pack.get(root)? else {
        return Err(missing(root, ""));
    };
    let entries = parse_tree(&data)?;
    match entries.iter().find(|e| e.name == name) {
        None => Ok(None),
        Some(TreeEntry {
            mode: Mode::File | Mode::Executable,
            id,
            ..
        }) => Ok(Some(*id)),
        Some(_) => Err(hostile(format!(
            "'{}' is not a regular file",
            trim_text(name)
        ))),
    }
}

/// Opens the directory `path` (raw, `/`-separated) below `root` without following a symlink.
pub fn open_below(root: &Path, path: &[u8], shown: &str) -> Result<OwnedFd, Error> {
    let mut dir = open_dir(root)?;
    for component in path.split(|&b| b == b'/') {
        dir = open_dir_at(&dir, &cstring(component), shown)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::path::PathBuf;

    use super::*;

    fn tree(entries: &[(&str, &[u8], Oid)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, name, id) in entries {
            out.extend_from_slice(mode.as_bytes());
            out.push(b' ');
            out.extend_from_slice(name);
            out.push(0);
            out.extend_from_slice(id);
        }
        out
    }

    #[test]
    fn dot_git_in_every_spelling() {
        for name in [
            ".git",
            ".GIT",
            ".Git",
            ".git.",
            ".git ",
            ".git. .",
            "git~1",
            "GIT~1",
            ".g\u{200c}it",
            "\u{feff}.git",
            ".git::$INDEX_ALLOCATION",
        ] {
            assert!(is_dot_git(name.as_bytes()), "{name:?}");
        }
        for name in [
            ".gitignore",
            ".github",
            "git",
            ".gi",
            "git~2",
            ".gitmodules",
        ] {
            assert!(!is_dot_git(name.as_bytes()), "{name:?}");
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [&b"."[..], b"..", b".git", b".GIT", b"a/b", b"", b"/etc"] {
            let data = tree(&[("100644", name, [1; 20])]);
            let err = parse_tree(&data).unwrap_err();
            assert_eq!(err.exit_code(), 76, "{name:?}");
        }
    }

    #[test]
    fn modes_and_names_parse() {
        let data = tree(&[
            ("100644", b"a.txt", [1; 20]),
            ("100755", b"run.sh", [2; 20]),
            ("120000", b"link", [3; 20]),
            ("40000", b"dir", [4; 20]),
            ("160000", b"sub", [5; 20]),
            ("100644", "ünï".as_bytes(), [6; 20]),
        ]);
        let entries = parse_tree(&data).unwrap();
        let modes: Vec<Mode> = entries.iter().map(|e| e.mode).collect();
        assert_eq!(
            modes,
            [
                Mode::File,
                Mode::Executable,
                Mode::Symlink,
                Mode::Tree,
                Mode::Gitlink,
                Mode::File
            ]
        );
        assert_eq!(entries[5].name, "ünï".as_bytes());
        assert_eq!(entries[4].id, [5; 20]);
    }

    #[test]
    fn truncated_and_unknown_modes_are_refused() {
        assert!(parse_tree(b"100644 a\0short").is_err());
        assert!(parse_tree(b"100644 a").is_err());
        let data = tree(&[("123456", b"a", [1; 20])]);
        assert!(parse_tree(&data).is_err());
    }

    fn check_out(
        objects: &[crate::applets::git::pack::tests::Obj],
        root: Oid,
    ) -> (PathBuf, Result<(), Error>) {
        use crate::applets::git::pack;
        let bytes = pack::tests::build(objects);
        let dir = std::env::temp_dir().join(format!(
            "initbox-checkout-{}-{:x}",
            std::process::id(),
            root[0]
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("out")).unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("pack"))
            .unwrap();
        let deadline = Deadline::after(None);
        let mut progress = Progress::default();
        let mut pack = pack::receive(&bytes[..], file, &deadline, &mut progress, &|e| {
            Error::io("read", &e)
        })
        .unwrap();
        let mut checkout = Checkout::new(&mut pack, &deadline, &mut progress, false);
        let mut fd = open_dir(&dir.join("out")).unwrap();
        let result = checkout.write_tree(&root, &mut fd, "", 0);
        (dir, result)
    }

    #[test]
    fn writes_files_modes_symlinks_and_dirs() {
        use crate::applets::git::pack::{object_id, tests::Obj};
        let blob = b"#!/bin/sh\n";
        let blob_id = object_id(Kind::Blob, blob);
        let target_id = object_id(Kind::Blob, b"run.sh");
        let sub = tree(&[("100644", b"inner", blob_id)]);
        let sub_id = object_id(Kind::Tree, &sub);
        let root = tree(&[
            ("40000", b"d", sub_id),
            ("120000", b"link", target_id),
            ("100755", b"run.sh", blob_id),
        ]);
        let root_id = object_id(Kind::Tree, &root);
        let (dir, result) = check_out(
            &[
                Obj::Whole(Kind::Blob, blob),
                Obj::Whole(Kind::Blob, b"run.sh"),
                Obj::Whole(Kind::Tree, &sub),
                Obj::Whole(Kind::Tree, &root),
            ],
            root_id,
        );
        result.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let out = dir.join("out");
        assert_eq!(fs::read(out.join("d/inner")).unwrap(), blob);
        assert_eq!(
            fs::metadata(out.join("run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            fs::metadata(out.join("d/inner"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        assert_eq!(
            fs::read_link(out.join("link")).unwrap(),
            Path::new("run.sh")
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn never_writes_through_a_symlink_it_created() {
        use crate::applets::git::pack::{object_id, tests::Obj};
        let outside = std::env::temp_dir().join(format!("initbox-outside-{}", std::process::id()));
        let _ = fs::remove_dir_all(&outside);
        fs::create_dir_all(&outside).unwrap();
        let target = outside.to_str().unwrap().as_bytes().to_vec();
        let target_id = object_id(Kind::Blob, &target);
        let blob_id = object_id(Kind::Blob, b"pwned");
        let sub = tree(&[("100644", b"file", blob_id)]);
        let sub_id = object_id(Kind::Tree, &sub);
        let root = tree(&[("120000", b"a", target_id), ("40000", b"a", sub_id)]);
        let root_id = object_id(Kind::Tree, &root);
        let (dir, result) = check_out(
            &[
                Obj::Whole(Kind::Blob, &target),
                Obj::Whole(Kind::Blob, b"pwned"),
                Obj::Whole(Kind::Tree, &sub),
                Obj::Whole(Kind::Tree, &root),
            ],
            root_id,
        );
        assert_eq!(result.unwrap_err().exit_code(), 76);
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        fs::remove_dir_all(dir).unwrap();
        fs::remove_dir_all(outside).unwrap();
    }

    /// Issue 9 #8: tree entry names are server text; quoted in an error they must not carry
    /// escape sequences or line breaks to the terminal or the log.
    #[test]
    fn issue_9_8_tree_entry_names_in_errors_are_escaped() {
        use crate::applets::git::pack::{object_id, tests::Obj};
        let refused = tree(&[("100644", b"\x1b[2Ja/b\nfake: line", [1; 20])]);
        let bad_mode = tree(&[("10\x1b[2J", b"a", [1; 20])]);
        let mut messages = vec![
            parse_tree(&refused).unwrap_err().to_string(),
            parse_tree(&bad_mode).unwrap_err().to_string(),
        ];
        let root = tree(&[("100644", b"\x1b]0;title\x07f\ninjected", [9; 20])]);
        let root_id = object_id(Kind::Tree, &root);
        let (dir, result) = check_out(&[Obj::Whole(Kind::Tree, &root)], root_id);
        messages.push(result.unwrap_err().to_string());
        fs::remove_dir_all(dir).unwrap();
        for message in messages {
            assert!(
                !message.contains(['\x1b', '\n', '\x07']),
                "unescaped: {message:?}"
            );
        }
    }

    #[test]
    fn missing_object_is_an_integrity_error() {
        use crate::applets::git::pack::{object_id, tests::Obj};
        let root = tree(&[("100644", b"f", [9; 20])]);
        let root_id = object_id(Kind::Tree, &root);
        let (dir, result) = check_out(&[Obj::Whole(Kind::Tree, &root)], root_id);
        assert_eq!(result.unwrap_err().exit_code(), 79);
        fs::remove_dir_all(dir).unwrap();
    }
}
