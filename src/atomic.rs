//! Atomic output: nothing half-written is ever left where the app will read it.
//!
//! Output goes to a temporary file beside the destination (same directory, so the same
//! filesystem), is flushed to disk, given its mode and owner, and only then renamed over the
//! destination. A failure, timeout or signal at any point removes the temporary and leaves the old
//! destination as it was.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::Error;
use crate::supervisor::TempGuard;

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
                part.parse().map(Some).map_err(|_| invalid())
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

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

pub struct AtomicFile {
    file: File,
    guard: TempGuard,
    destination: PathBuf,
}

impl AtomicFile {
    /// Opens a fresh temporary beside `destination`, readable by its owner only until committed.
    pub fn create(destination: &Path) -> Result<AtomicFile, Error> {
        let name = destination.file_name().ok_or_else(|| {
            Error::usage(format!("'{}' is not a file path", destination.display()))
        })?;
        let directory = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let temp_name = format!(
            ".{}.initbox-{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let (guard, file) = TempGuard::create(directory.join(temp_name), false, |path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
        })
        .map_err(|e| {
            Error::io(
                format!("cannot create a file in {}", directory.display()),
                &e,
            )
        })?;
        Ok(AtomicFile {
            file,
            guard,
            destination: destination.to_path_buf(),
        })
    }

    pub fn temp_path(&self) -> &Path {
        self.guard.path()
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
        Ok(Sealed {
            guard: self.guard,
            destination: self.destination,
        })
    }
}

/// A complete, synced and closed temporary, waiting to be renamed over its destination; dropped,
/// it is removed.
pub struct Sealed {
    guard: TempGuard,
    destination: PathBuf,
}

impl Sealed {
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// Renames the temporary over the destination.
    pub fn commit(self) -> Result<(), Error> {
        let destination = self.destination;
        self.guard
            .commit(|temp| fs::rename(temp, &destination))
            .map_err(|e| {
                Error::io(
                    format!("{}: cannot rename into place", destination.display()),
                    &e,
                )
            })?;
        // The rename is durable only once the directory entry is; best effort, as some
        // filesystems refuse fsync on directories.
        if let Some(parent) = destination.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(directory) = File::open(parent) {
                let _ = directory.sync_all();
            }
        }
        Ok(())
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
        for bad in ["", ":", "nobody", "1:x", "-1"] {
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
    fn commit_replaces_and_drop_discards() {
        let dir = std::env::temp_dir().join(format!("initbox-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let destination = dir.join("config");
        fs::write(&destination, "old").unwrap();

        let mut discarded = AtomicFile::create(&destination).unwrap();
        discarded.write_all(b"half").unwrap();
        let temp = discarded.temp_path().to_path_buf();
        drop(discarded);
        assert!(!temp.exists());
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
