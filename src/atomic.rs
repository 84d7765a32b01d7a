//! Atomic output: nothing half-written is ever left where the app will read it.
//!
//! Output goes to a temporary file beside the destination (same directory, so the same
//! filesystem), is flushed to disk, given its mode and owner, and only then renamed over the
//! destination. A failure, timeout or signal at any point removes the temporary and leaves the old
//! destination as it was.
//!
//! A SIGKILL (an OOM kill) removes nothing, so the temporary is an unnamed `O_TMPFILE` where
//! possible, named only for the final rename. Elsewhere (no `/proc` to link it through) it is
//! `.NAME.initbox-R.tmp`, R 16 random hex digits: a restart, always PID 1 in a container, or another
//! pod on a shared volume never meets its name. Such files carry the `user.initbox.temporary`
//! xattr, and the next run for the same destination removes those older than itself; a file
//! that only looks like one is left alone. git-shallow's workspaces follow the same scheme.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::supervisor::TempGuard;
use crate::sys;

/// A numeric owner, as scratch images have no /etc/passwd: `UID`, `UID:GID` or `:GID`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Owner {
    pub fn parse(text: &str) -> Result<Owner, String> {
        let invalid = || format!("invalid owner '{text}' (use UID, UID:GID or :GID, as numbers)");
        let number = |part: &str| -> Result<Option<u32>, String> {
            if part.is_empty() {
                Ok(None)
            } else {
                // u32::MAX is chown's -1, "unchanged": it would silently change nothing.
                match part.parse::<u32>() {
                    Ok(id) if id != u32::MAX => Ok(Some(id)),
                    _ => Err(invalid()),
                }
            }
        };
        let (uid, gid) = text.split_once(':').unwrap_or((text, ""));
        let owner = Owner {
            uid: number(uid)?,
            gid: number(gid)?,
        };
        if owner == Owner::default() {
            return Err(invalid());
        }
        Ok(owner)
    }
}

/// Parses an octal file mode such as `0644` or `755`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o7777 && !text.is_empty() => Ok(mode),
        _ => Err(format!("invalid mode '{text}' (use octal, e.g. 0644)")),
    }
}

/// Extended attribute set on every named temporary file while it exists: the proof a later run
/// needs before it removes a stale one (a file that merely has a similar name lacks it).
const TEMP_XATTR: &CStr = c"user.initbox.temporary";
/// Hex digits of randomness in a temporary's name.
const RANDOM_HEX: usize = 16;
/// The most of DEST's name a temporary's name repeats: NAME_MAX (255) less the rest of ours.
const NAME_PART_MAX: usize = 200;
/// Attempts at a fresh random name before giving up (a collision is all but impossible).
const NAME_ATTEMPTS: usize = 8;

/// The start of every temporary's name for a destination named `dest_name`: `.NAME.initbox-`,
/// with NAME cut to `NAME_PART_MAX` bytes, or `.initbox-` for an empty name.
fn temp_prefix(dest_name: &[u8]) -> Vec<u8> {
    let mut prefix = vec![b'.'];
    if !dest_name.is_empty() {
        prefix.extend_from_slice(&dest_name[..dest_name.len().min(NAME_PART_MAX)]);
        prefix.push(b'.');
    }
    prefix.extend_from_slice(b"initbox-");
    prefix
}

/// A fresh temporary name for `dest_name`: `.NAME.initbox-R.KIND`, R being `RANDOM_HEX` random
/// hex digits, so neither a restart (always PID 1 in a container) nor another pod on a shared
/// volume picks the same name.
pub fn temp_name(dest_name: &[u8], kind: &str) -> io::Result<CString> {
    let mut random = [0u8; RANDOM_HEX / 2];
    sys::random_bytes(&mut random)?;
    let mut name = temp_prefix(dest_name);
    name.extend_from_slice(crate::hex::encode(&random).as_bytes());
    name.push(b'.');
    name.extend_from_slice(kind.as_bytes());
    Ok(CString::new(name).expect("names with NUL are not paths"))
}

/// Whether `name` is exactly a temporary name `temp_name(dest_name, kind)` could have made.
pub fn is_temp_name(name: &[u8], dest_name: &[u8], kind: &str) -> bool {
    let Some(rest) = name.strip_prefix(temp_prefix(dest_name).as_slice()) else {
        return false;
    };
    let Some((random, suffix)) = rest.split_at_checked(RANDOM_HEX) else {
        return false;
    };
    random
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && suffix.strip_prefix(b".") == Some(kind.as_bytes())
}

/// Whether a file last modified at (`secs`, `nanos`) predates this run.
pub fn older_than_this_run(secs: i64, nanos: i64) -> bool {
    let Ok(started) = crate::supervisor::run_started().duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    let started = (
        i64::try_from(started.as_secs()).unwrap_or(i64::MAX),
        i64::from(started.subsec_nanos()),
    );
    (secs, nanos) < started
}

/// Whether `name` has the shape of some temporary of `kind`: `.*initbox-R.KIND`, R being
/// `RANDOM_HEX` hex digits. Only a first filter: [`is_temp_name`] decides per destination.
fn looks_like_temp_name(name: &[u8], kind: &str) -> bool {
    let Some(rest) = name
        .strip_suffix(kind.as_bytes())
        .and_then(|rest| rest.strip_suffix(b"."))
    else {
        return false;
    };
    let Some((head, random)) = rest.split_at_checked(rest.len().saturating_sub(RANDOM_HEX)) else {
        return false;
    };
    name.starts_with(b".")
        && head.ends_with(b"initbox-")
        && random.len() == RANDOM_HEX
        && random.iter().all(u8::is_ascii_hexdigit)
}

/// Per directory (device, inode): the names that looked like temporaries when this run first
/// listed it. One listing per directory and run, however many outputs it receives (a
/// render-template of 1,500 files into one directory would otherwise list it 1,500 times);
/// temporaries made after that listing are this run's own.
type Listings = std::collections::HashMap<(u64, u64), Vec<CString>>;
static LISTINGS: std::sync::Mutex<Option<Listings>> = std::sync::Mutex::new(None);

/// Removes the temporaries for `dest_name` in `dir` that a killed run left: exactly our name
/// pattern, a regular file, older than this run, and carrying our extended attribute.
fn sweep_stale(dir: &OwnedFd, dest_name: &[u8]) {
    let Ok(stat) = dir.try_clone().map(File::from).and_then(|d| d.metadata()) else {
        return;
    };
    let mut listings = LISTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let candidates = listings
        .get_or_insert_with(Listings::new)
        .entry((stat.dev(), stat.ino()))
        .or_insert_with(|| list_temp_names(dir));
    candidates.retain(|name| {
        if !is_temp_name(name.to_bytes(), dest_name, "tmp") {
            return true;
        }
        if let Ok(file) = sys::open_file_at(dir, name) {
            let stale = file.metadata().is_ok_and(|m| {
                m.file_type().is_file() && older_than_this_run(m.mtime(), m.mtime_nsec())
            });
            if stale && sys::get_xattr(&file, TEMP_XATTR, 8).is_ok() {
                let _ = sys::unlink_at(dir, name, false);
            }
        }
        false
    });
}

fn list_temp_names(dir: &OwnedFd) -> Vec<CString> {
    let Ok(mut entries) = dir.try_clone().and_then(sys::Dir::new) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    while let Some(Ok(name)) = entries.next_name() {
        if looks_like_temp_name(name.to_bytes(), "tmp") {
            names.push(name);
        }
    }
    names
}

pub struct AtomicFile {
    file: File,
    dir: OwnedFd,
    directory: PathBuf,
    dest_name: Vec<u8>,
    /// The named temporary; `None` while the file is an unnamed `O_TMPFILE` one.
    guard: Option<TempGuard>,
    destination: PathBuf,
}

impl AtomicFile {
    /// Opens a fresh temporary beside `destination`, readable by its owner only until committed:
    /// an unnamed `O_TMPFILE` where the filesystem and `/proc` allow, so a killed run leaves
    /// nothing; else a file with a random name. Stale temporaries of killed runs are swept first.
    pub fn create(destination: &Path) -> Result<AtomicFile, Error> {
        let directory = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let path = CString::new(directory.as_os_str().as_bytes())
            .map_err(|_| Error::usage("path contains NUL"))?;
        let dir = sys::open_dir(&path).map_err(|e| {
            Error::io(
                format!("cannot open the directory {}", directory.display()),
                &e,
            )
        })?;
        AtomicFile::create_in(dir, destination)
    }

    /// As [`AtomicFile::create`], in `dir`, the already opened directory of `destination`
    /// (which names it in messages and for the clean-up).
    pub fn create_in(dir: OwnedFd, destination: &Path) -> Result<AtomicFile, Error> {
        let dest_name = destination
            .file_name()
            .ok_or_else(|| Error::usage(format!("'{}' is not a file path", destination.display())))?
            .as_bytes()
            .to_vec();
        let directory = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sweep_stale(&dir, &dest_name);
        let unnamed = if sys::can_link_tmpfiles() {
            sys::open_tmpfile(&dir, 0o600).ok()
        } else {
            None
        };
        let (file, guard) = match unnamed {
            Some(file) => (file, None),
            None => {
                let (guard, file) = create_named(directory, &dest_name, "tmp", false, |name| {
                    sys::create_file_at(&dir, name, 0o600)
                })
                .map_err(|e| {
                    Error::io(
                        format!("cannot create a file in {}", directory.display()),
                        &e,
                    )
                })?;
                (file, Some(guard))
            }
        };
        // Best effort: without user xattrs (older tmpfs) a leftover is only never swept.
        let _ = sys::set_xattr(&file, TEMP_XATTR, b"");
        Ok(AtomicFile {
            file,
            dir,
            directory: directory.to_path_buf(),
            dest_name,
            guard,
            destination: destination.to_path_buf(),
        })
    }

    /// Flushes, applies `mode` and `owner`, syncs, and renames over the destination.
    pub fn commit(self, mode: u32, owner: Option<Owner>) -> Result<(), Error> {
        self.seal(mode, owner)?.commit()
    }

    /// Does all of the commit that can fail but the rename (mode, owner, sync) and closes the
    /// file, so that many outputs can wait for their renames without holding a descriptor each.
    pub fn seal(self, mode: u32, owner: Option<Owner>) -> Result<Sealed, Error> {
        let fail = |what: &str, e: &io::Error| {
            Error::io(format!("{}: {what}", self.destination.display()), e)
        };
        self.file
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| fail("cannot set mode", &e))?;
        if let Some(owner) = owner {
            std::os::unix::fs::fchown(&self.file, owner.uid, owner.gid)
                .map_err(|e| fail("cannot set owner", &e))?;
        }
        self.file.sync_all().map_err(|e| fail("cannot sync", &e))?;
        let guard = match self.guard {
            Some(guard) => guard,
            None => {
                create_named(&self.directory, &self.dest_name, "tmp", false, |name| {
                    sys::link_tmpfile(&self.file, &self.dir, name)
                })
                .map_err(|e| fail("cannot name the temporary", &e))?
                .0
            }
        };
        // Complete now: from here a leftover is the finished file, not a stale temporary.
        let _ = sys::remove_xattr(&self.file, TEMP_XATTR);
        Ok(Sealed {
            guard,
            directory: self.directory,
            destination: self.destination,
        })
    }
}

/// A complete, synced and closed temporary, waiting to be renamed over its destination; dropped,
/// it is removed.
pub struct Sealed {
    guard: TempGuard,
    directory: PathBuf,
    destination: PathBuf,
}

impl Sealed {
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// Renames the temporary over the destination and makes the rename durable.
    pub fn commit(self) -> Result<(), Error> {
        sync_directory(&self.rename()?);
        Ok(())
    }

    /// Renames the temporary over the destination, returning the directory whose entry changed:
    /// the caller syncs it ([`sync_directory`]) once for all the outputs that went there.
    pub fn rename(self) -> Result<PathBuf, Error> {
        let destination = self.destination;
        self.guard
            .commit(|temp| fs::rename(temp, &destination))
            .map_err(|e| {
                Error::io(
                    format!("{}: cannot rename into place", destination.display()),
                    &e,
                )
            })?;
        Ok(self.directory)
    }
}

/// Makes renames in `directory` durable; best effort, as some filesystems refuse fsync on
/// directories.
pub fn sync_directory(directory: &Path) {
    if let Ok(directory) = File::open(directory) {
        let _ = directory.sync_all();
    }
}

/// Runs `create` for fresh random temporary names of `kind` for `dest_name` until one is new
/// (`create` fails with `AlreadyExists` otherwise), and registers it for clean-up.
pub fn create_named<T>(
    directory: &Path,
    dest_name: &[u8],
    kind: &str,
    is_dir: bool,
    create: impl Fn(&CStr) -> io::Result<T>,
) -> io::Result<(TempGuard, T)> {
    let mut attempt = 0;
    loop {
        let name = temp_name(dest_name, kind)?;
        let path = directory.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        match TempGuard::create(path, is_dir, |_| create(&name)) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < NAME_ATTEMPTS => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_numeric() {
        assert_eq!(
            Owner::parse("65532"),
            Ok(Owner {
                uid: Some(65532),
                gid: None
            })
        );
        assert_eq!(
            Owner::parse("1:2"),
            Ok(Owner {
                uid: Some(1),
                gid: Some(2)
            })
        );
        assert_eq!(
            Owner::parse(":2"),
            Ok(Owner {
                uid: None,
                gid: Some(2)
            })
        );
        // Issue 9 #20: 4294967295 (-1 to chown) is refused.
        for bad in ["", ":", "nobody", "1:x", "-1", "4294967295", "1:4294967295"] {
            assert!(Owner::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert!(parse_mode("").is_err());
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn temporary_names_are_random_short_and_recognised_exactly() {
        let a = temp_name(b"out", "tmp").unwrap();
        let b = temp_name(b"out", "tmp").unwrap();
        assert_ne!(a, b);
        assert!(is_temp_name(a.to_bytes(), b"out", "tmp"));
        assert!(looks_like_temp_name(a.to_bytes(), "tmp"));
        assert!(!looks_like_temp_name(b".out.initbox-1-0.tmp", "tmp"));
        assert!(!looks_like_temp_name(
            b"out.initbox-0123456789abcdef.tmp",
            "tmp"
        ));
        assert!(!is_temp_name(a.to_bytes(), b"other", "tmp"));
        assert!(!is_temp_name(a.to_bytes(), b"out", "git"));
        for lookalike in [
            &b".out.initbox-1-0.tmp"[..],
            b".out.initbox-0123456789ABCDEF.tmp",
            b".out.initbox-0123456789abcde.tmp",
            b".out.initbox-0123456789abcdef.tmp.x",
        ] {
            assert!(!is_temp_name(lookalike, b"out", "tmp"), "{lookalike:?}");
        }
        // Issue 9 #19: the name of a temporary for a 255-byte name must itself fit in 255.
        let long = vec![b'x'; 255];
        let name = temp_name(&long, "tmp").unwrap();
        assert!(name.to_bytes().len() <= 255);
        assert!(is_temp_name(name.to_bytes(), &long, "tmp"));
        assert!(is_temp_name(
            temp_name(b"", "git").unwrap().to_bytes(),
            b"",
            "git"
        ));
    }

    #[test]
    fn commit_replaces_and_drop_discards() {
        let dir = std::env::temp_dir().join(format!("initbox-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let destination = dir.join("config");
        fs::write(&destination, "old").unwrap();

        let mut discarded = AtomicFile::create(&destination).unwrap();
        discarded.write_all(b"half").unwrap();
        drop(discarded);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert_eq!(fs::read_to_string(&destination).unwrap(), "old");

        let mut output = AtomicFile::create(&destination).unwrap();
        output.write_all(b"new").unwrap();
        output.commit(0o640, None).unwrap();
        assert_eq!(fs::read_to_string(&destination).unwrap(), "new");
        let mode = fs::metadata(&destination).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
