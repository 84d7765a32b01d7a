//! `render-template`: render `${VAR}` templates (envsubst syntax, POSIX semantics) from the
//! environment and JSON values files into config files, atomically.
//!
//! The language lives in `parse.rs`, a pure streaming function the fuzz targets can call. This
//! file turns the command line into (template, destination) pairs, walks directory sources,
//! collects the variables, and writes each output through `AtomicFile`: every template is rendered
//! into its temporary first (written, synced and closed), and only when no template had an error
//! and no destination is in the way are they all renamed into place. A strict error therefore
//! leaves every destination as it was.

pub mod parse;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::atomic::{parse_mode, sync_directory, AtomicFile, Owner, Sealed};
use crate::cli::Args;
use crate::error::Error;
use crate::log;
use crate::supervisor::{Deadline, Job};
use parse::{Options, Values};

pub const USAGE: &str = "\
Usage: initbox render-template [OPTIONS] SRC DEST
       initbox render-template [OPTIONS] SRC:DEST...

Replace ${VAR} references in SRC with values from the environment (and
--values files), writing DEST atomically. A directory SRC renders every file
under it into DEST, keeping relative paths (names starting with '..', the
kubelet's ConfigMap internals, are skipped; symlinks to files are followed).

SYNTAX (POSIX shell semantics; ':' forms treat an empty value as unset)
    $VAR ${VAR}        the value; unset is an error unless --allow-unset
    ${VAR:-word}       word if VAR is unset or empty   (${VAR-word}: if unset)
    ${VAR:=word}       same, and assign word to VAR    (${VAR=word})
    ${VAR:?message}    error with message if unset or empty (${VAR?message})
    ${VAR:+word}       word if VAR is set and not empty (${VAR+word}: if set)
    $$                 a literal $
word may contain references and runs to the matching '}'. Anything else
after '$' ($1, '$ ', a '$' at the end) is copied as is; '${' without a name
(${}, ${1}, ${#VAR}) is an error, also with --allow-unset (write $${ for a
literal '${'; with --only or --prefix it is copied). Values are never
scanned again: a password containing '$' arrives intact.

OPTIONS
    --allow-unset         substitute unset variables with nothing (default:
                          an error naming file:line:column)
    --only VAR[,VAR...]   substitute only these names (repeatable; default:
                          all), e.g. to keep nginx's $host
    --prefix PREFIX       substitute only names starting with PREFIX
                          (repeatable; combines with --only)
    --values FILE.json    variables from a JSON object; nested keys as
                          ${a.b.c}, array items as ${a.0}. The file wins over
                          the environment, a later file over an earlier one.
    --mode MODE           octal mode of DEST files (default 0644)
    --owner UID[:GID]     numeric owner of DEST files (default: unchanged)

Every error in every template is counted (the first 100 of each are listed;
exit 65) and then nothing is written. Parent directories of DEST are created (mode 0755).

EXAMPLES
    initbox render-template /templates/app.conf /config/app.conf
    initbox render-template --only PORT,SERVER_NAME nginx.conf.tmpl:/etc/nginx/nginx.conf
    initbox render-template --values /values/values.json --mode 0600 /templates /config";

const ALLOW_UNSET: &str = "--allow-unset";
const ONLY: &str = "--only";
const PREFIX: &str = "--prefix";
const VALUES: &str = "--values";
const MODE: &str = "--mode";
const OWNER: &str = "--owner";
const DEFAULT_MODE: u32 = 0o644;

struct Settings {
    options: Options,
    value_files: Vec<PathBuf>,
    mode: u32,
    owner: Option<Owner>,
    pairs: Vec<(PathBuf, PathBuf)>,
}

pub fn parse(mut args: Args) -> Result<Job, Error> {
    let allow_unset = args.flag(ALLOW_UNSET);
    let mut only = Vec::new();
    for list in args.values(ONLY)? {
        for name in list.split(',').filter(|n| !n.is_empty()) {
            if !valid_name(name) {
                return Err(Error::usage(format!(
                    "--only: '{name}' is not a variable name (letters, digits, '_', '.')"
                )));
            }
            only.push(name.to_string());
        }
    }
    let prefixes = args.values(PREFIX)?;
    let value_files = args
        .values(VALUES)?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let mode = args.value(MODE, parse_mode)?.unwrap_or(DEFAULT_MODE);
    let owner = args.value(OWNER, Owner::parse)?;
    let positionals = args.positionals()?;
    let pairs = pairs(&positionals)?;
    let settings = Settings {
        options: Options {
            allow_unset,
            only,
            prefixes,
        },
        value_files,
        mode,
        owner,
        pairs,
    };
    Ok(Box::new(move |deadline| run(settings, deadline)))
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// `SRC DEST` (two words, the first without ':'), or any number of `SRC:DEST`.
fn pairs(words: &[String]) -> Result<Vec<(PathBuf, PathBuf)>, Error> {
    match words {
        [] => Err(Error::usage("no SRC DEST or SRC:DEST given")),
        [src, dest] if !src.contains(':') => Ok(vec![(src.into(), dest.into())]),
        _ => words
            .iter()
            .map(|word| match word.split_once(':') {
                Some((src, dest)) if !src.is_empty() && !dest.is_empty() => {
                    Ok((src.into(), dest.into()))
                }
                _ => Err(Error::usage(format!(
                    "'{word}' is not SRC:DEST (give one SRC DEST pair, or SRC:DEST words)"
                ))),
            })
            .collect(),
    }
}

fn run(settings: Settings, deadline: &Deadline) -> Result<(), Error> {
    let mut values = environment();
    for file in &settings.value_files {
        load_values(file, &mut values)?;
    }
    let mut jobs = Vec::new();
    for (src, dest) in &settings.pairs {
        expand_sources(src, dest, &mut jobs)?;
    }
    let sealed = render_all(&jobs, &settings, &mut values, deadline)?;
    check_destinations(&sealed)?;
    commit_all(sealed)
}

/// Renders every template into a sealed temporary beside its destination: written, given its
/// mode and owner, synced and closed, so that open descriptors stay bounded however many files
/// there are (issue 9 #10). Every template is rendered even after an error, to report them all;
/// then, on any error, the temporaries are dropped, which removes them.
fn render_all(
    jobs: &[(PathBuf, PathBuf)],
    settings: &Settings,
    values: &mut Values,
    deadline: &Deadline,
) -> Result<Vec<Sealed>, Error> {
    let mut sealed = Vec::new();
    let mut error_count = 0;
    let mut failed_templates = 0;
    for (src, dest) in jobs {
        deadline.check("render-template")?;
        let (output, errors) = render_one(src, dest, values, &settings.options)?;
        if errors.is_empty() {
            if error_count == 0 {
                sealed.push(output.seal(settings.mode, settings.owner)?);
            }
            continue;
        }
        failed_templates += 1;
        error_count += errors.total;
        report_errors(src, &errors);
    }
    if error_count > 0 {
        return Err(Error::Data(format!(
            "{error_count} error(s) in {failed_templates} template(s); nothing was written"
        )));
    }
    Ok(sealed)
}

fn report_errors(src: &Path, errors: &parse::Errors) {
    let file = json!(src.display().to_string());
    for error in &errors.listed {
        log::error(
            &format!(
                "{}:{}:{}: {}",
                src.display(),
                error.position.line,
                error.position.column,
                error.message
            ),
            &[
                ("file", file.clone()),
                ("line", json!(error.position.line)),
                ("column", json!(error.position.column)),
            ],
        );
    }
    let unlisted = errors.total - errors.listed.len();
    if unlisted > 0 {
        log::error(
            &format!("{}: {unlisted} more error(s) not listed", src.display()),
            &[("file", file)],
        );
    }
}

/// What could still make a rename fail, checked before the first one (issue 9 #17): a directory
/// where a file is to go. Across several directories the renames cannot be one atomic step, so
/// every failure that can be foreseen is found before anything is replaced.
fn check_destinations(sealed: &[Sealed]) -> Result<(), Error> {
    for output in sealed {
        let dest = output.destination();
        if fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
            return Err(Error::Io(format!(
                "{}: is a directory, which a rendered file cannot replace; nothing was written",
                dest.display()
            )));
        }
    }
    Ok(())
}

/// Renames every output into place. A rename failing now (the directory changed meanwhile, or a
/// signal) is reported with what was and was not replaced.
fn commit_all(sealed: Vec<Sealed>) -> Result<(), Error> {
    let count = sealed.len();
    // Each directory is synced once, after all its renames, not once per file.
    let mut directories: Vec<std::path::PathBuf> = Vec::new();
    for (done, output) in sealed.into_iter().enumerate() {
        let dest = output.destination().to_path_buf();
        match output.rename() {
            Ok(directory) if !directories.contains(&directory) => directories.push(directory),
            Ok(_) => {}
            Err(err) => {
                directories.iter().for_each(|d| sync_directory(d));
                log::error(
                    &format!(
                        "{done} of {count} file(s) were replaced before this failure, {} were not",
                        count - done
                    ),
                    &[("replaced", json!(done)), ("files", json!(count))],
                );
                return Err(err);
            }
        }
        log::info(
            &format!("rendered {}", dest.display()),
            &[("file", json!(dest.display().to_string()))],
        );
    }
    directories.iter().for_each(|d| sync_directory(d));
    log::info(
        &format!("rendered {count} file(s)"),
        &[("files", json!(count))],
    );
    Ok(())
}

/// The environment as variables; names that are not valid template names are left out.
fn environment() -> Values {
    let mut values = Values::default();
    for (name, value) in std::env::vars_os() {
        if let Some(name) = name.to_str().filter(|n| valid_name(n)) {
            values.set(name, value.as_bytes());
        }
    }
    values
}

fn load_values(file: &Path, values: &mut Values) -> Result<(), Error> {
    let text = fs::read(file).map_err(|e| Error::io(file.display(), &e))?;
    let json: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        Error::Data(format!(
            "{}:{}:{}: not valid JSON: {e}",
            file.display(),
            e.line(),
            e.column()
        ))
    })?;
    values
        .merge_json(&json)
        .map_err(|why| Error::Data(format!("{}: {why}", file.display())))
}

/// Adds the (template, destination) pairs for `src`: itself, or every file under it.
fn expand_sources(
    src: &Path,
    dest: &Path,
    jobs: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(), Error> {
    let metadata = fs::metadata(src).map_err(|e| Error::io(src.display(), &e))?;
    if !metadata.is_dir() {
        jobs.push((src.to_path_buf(), dest.to_path_buf()));
        return Ok(());
    }
    // Sorted, so the order of work and messages does not depend on the filesystem.
    let mut entries = BTreeMap::<OsString, PathBuf>::new();
    let listing = fs::read_dir(src).map_err(|e| Error::io(src.display(), &e))?;
    for entry in listing {
        let entry = entry.map_err(|e| Error::io(src.display(), &e))?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(b"..") {
            continue;
        }
        entries.insert(name, entry.path());
    }
    for (name, path) in entries {
        let link = fs::symlink_metadata(&path).map_err(|e| Error::io(path.display(), &e))?;
        let target = fs::metadata(&path).map_err(|e| Error::io(path.display(), &e))?;
        if target.is_dir() {
            if link.file_type().is_symlink() {
                log::warn(
                    &format!("{}: skipped, a symlink to a directory", path.display()),
                    &[],
                );
                continue;
            }
            expand_sources(&path, &dest.join(&name), jobs)?;
        } else if target.is_file() || target.file_type().is_fifo() {
            jobs.push((path, dest.join(&name)));
        }
    }
    Ok(())
}

/// Renders one template into a temporary beside `dest`; the caller commits or drops it.
fn render_one(
    src: &Path,
    dest: &Path,
    values: &mut Values,
    options: &Options,
) -> Result<(AtomicFile, parse::Errors), Error> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent.display(), &e))?;
    }
    let input = File::open(src).map_err(|e| Error::io(src.display(), &e))?;
    let mut output = AtomicFile::create(dest)?;
    // `render` assembles the output in large pieces itself: no BufWriter (a second copy).
    let errors = parse::render(input, &mut output, values, options)
        .map_err(|e| Error::io(format!("{} -> {}", src.display(), dest.display()), &e))?;
    Ok((output, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_forms() {
        let one = pairs(&["a.tmpl".into(), "out/a".into()]).unwrap();
        assert_eq!(one, [("a.tmpl".into(), "out/a".into())]);
        let many = pairs(&["a:b".into(), "c:d".into(), "e:f".into()]).unwrap();
        assert_eq!(many.len(), 3);
        assert_eq!(many[2], ("e".into(), "f".into()));
        assert!(pairs(&["a:b".into(), "c".into()]).is_err());
        assert!(pairs(&[":b".into()]).is_err());
        assert!(pairs(&[]).is_err());
    }

    #[test]
    fn names_for_only() {
        assert!(valid_name("APP_PORT") && valid_name("db.host") && valid_name("_x"));
        assert!(!valid_name("1X") && !valid_name("") && !valid_name("A-B"));
    }
}
