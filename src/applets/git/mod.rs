//! `git-shallow`: check out one commit of a remote repository, as `git clone --depth 1` would,
//! without git in the image.
//!
//! The steps: ask the server which protocol it speaks (`info/refs`, [`remote`]), resolve `--ref`
//! (v2 `ls-refs` or the v0 advertisement), then fetch a shallow pack ([`protocol`]), which
//! streams into an unlinked temporary file while it is parsed and hashed ([`pack`], [`delta`]),
//! and check the tree out ([`clone`], [`checkout`]) into a temporary directory ([`workspace`])
//! that then replaces DEST. With `--submodules`, each gitlink's repository is cloned the same way
//! into its directory there ([`submodules`], [`gitmodules`], [`credentials`]); `--sparse` limits
//! what is written ([`sparse`]). The HTTP side is the shared client in `src/http/`.

pub mod checkout;
mod clone;
pub mod credentials;
pub mod delta;
pub mod gitmodules;
pub mod pack;
pub mod pktline;
pub mod progress;
pub mod protocol;
mod remote;
pub mod sparse;
pub mod submodules;
pub mod workspace;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use self::clone::{clone_into, Cloned, Wants};
use self::credentials::{Credentials, Rule};
use self::pack::hex;
use self::progress::Progress;
use self::protocol::Wanted;
use self::remote::{resolve, Remote};
use self::sparse::Sparse;
use self::submodules::Mode;
use self::workspace::{DestState, Workspace};
use crate::atomic::AtomicFile;
use crate::cli::{format_duration, Args};
use crate::error::Error;
use crate::http::{self, Client, Header, Url};
use crate::log;
use crate::supervisor::{Deadline, Job};

pub const USAGE: &str = "\
Usage: initbox git-shallow [OPTIONS] URL DEST

Check out one commit of the git repository at URL (smart HTTP or HTTPS) into
DEST, as `git clone --depth 1` would, without git: DEST gets the files only
(no .git). Prints the commit id. Protocol v2, with fallback to v0/v1.

DEST is replaced atomically: the checkout is written to a temporary directory
beside DEST (or inside it, when DEST is a mount point such as an emptyDir under
a read-only root) and moved into place. If DEST already holds the same commit,
nothing is fetched.

OPTIONS
    --ref REF                 branch, tag (annotated tags are peeled) or full
                              commit id (default: the remote HEAD)
    --depth N                 commits of history to fetch (default 1)
    --replace                 replace a DEST that holds another checkout or
                              other files (default: refuse)
    --revision-file PATH      write the commit id there (atomically)
    --submodules MODE         recursive: check out every submodule at its
                              recorded commit, and theirs (as git clone
                              --recurse-submodules --shallow-submodules);
                              shallow: the first level only; off (default):
                              leave them empty directories, with a warning
    --fail-on-submodules      refuse a tree with submodules (with off)
    --sparse PATH             write only PATH (a file or directory, which may
                              lead into a submodule: lib/include) and the
                              directories above it; repeatable
    --username NAME           user for basic auth (default: from the URL)
    --password-file PATH      password or token for basic auth, from a file
    --password-env VAR        password or token for basic auth, from a variable
    --credential URL_PREFIX=VAR
                              basic auth for the repositories under
                              URL_PREFIX (a submodule's host, say): VAR holds
                              user:password (a GitHub token:
                              x-access-token:TOKEN); repeatable
    --credential-file URL_PREFIX=PATH
                              the same, from a file
    --timeout DURATION        overall deadline (default 10m; 0 waits forever)

Hostile trees (`..`, `.git` in any spelling, paths through symlinks) are refused
with 76 before anything reaches DEST; an object that does not match its id, 79.
Submodules: only http(s) URLs are fetched (relative ones resolve against the
repository's URL); other schemes, paths outside the tree and gitlinks that
.gitmodules does not name are refused with 76. The credentials of the command
line go only to URL's own host; --credential to the URLs under its prefix.
Missing or rejected credentials (HTTP 401/403) exit 77. A clone slower than 2 s
logs its progress every 5 s (-q: quiet).

EXAMPLES
    initbox git-shallow https://github.com/org/site.git /srv/www --ref v1.4.0
    initbox git-shallow https://git.example/cfg.git /config \\
        --username deploy --password-file /secrets/token --revision-file /config.rev
    initbox git-shallow https://github.com/org/app.git /src --submodules recursive \\
        --credential https://github.com/org=GITHUB_AUTH \\
        --credential-file https://vendor.example/=/secrets/vendor";

const DEFAULT_DEPTH: u32 = 1;

struct Options {
    url: Url,
    dest: PathBuf,
    wanted: Wanted,
    depth: u32,
    replace: bool,
    revision_file: Option<PathBuf>,
    submodules: Mode,
    fail_on_submodules: bool,
    sparse: Option<Sparse>,
    /// `--credential` and `--credential-file`.
    credential_rules: Vec<Rule>,
    /// `--username` with `--password-file` or `--password-env`; read when the job runs
    /// (`--check-args` reads nothing), as are the credential options of `http`.
    password: Option<(String, Secret)>,
    http: http::Options,
}

enum Secret {
    File(PathBuf),
    Env(String),
}

impl Options {
    /// What besides the commit decides the checkout, recorded with it on DEST.
    fn spec(&self) -> String {
        let mut spec = Vec::new();
        if self.submodules != Mode::Off {
            spec.push(format!("submodules={}", self.submodules.name()));
        }
        if let Some(sparse) = &self.sparse {
            spec.push(sparse.spec());
        }
        spec.join(" ")
    }

    /// The credential headers of `http`'s options, then the basic auth of `--password-*`.
    fn headers(&self) -> Result<Vec<Header>, Error> {
        let mut headers = self.http.credential_headers()?;
        if let Some((user, secret)) = &self.password {
            let password = match secret {
                Secret::File(path) => http::read_secret_file(path, "--password-file")?,
                Secret::Env(var) => http::env_value("--password-env", var)?,
            };
            headers.push(http::basic_auth(user, &password));
        }
        Ok(headers)
    }
}

/// The basic-auth user: `--username`, else the URL's, else "git" (what hosting services accept
/// with a token as the password).
fn user_for(username: Option<String>, url: &Url) -> String {
    username
        .or_else(|| url.credentials().map(|(user, _)| user.to_string()))
        .unwrap_or_else(|| "git".into())
}

fn parse_depth(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid depth '{text}': use a whole number of 1 or more"
        )),
    }
}

pub fn parse(mut args: Args) -> Result<Job, Error> {
    let wanted = args.value("--ref", |t| Ok(t.to_string()))?;
    let depth = args.value("--depth", parse_depth)?.unwrap_or(DEFAULT_DEPTH);
    let replace = args.flag("--replace");
    let revision_file = args.value("--revision-file", |t| Ok(PathBuf::from(t)))?;
    let submodules = args
        .value("--submodules", Mode::parse)?
        .unwrap_or(Mode::Off);
    let fail_on_submodules = args.flag("--fail-on-submodules");
    if fail_on_submodules && submodules != Mode::Off {
        return Err(Error::usage(
            "--fail-on-submodules goes with --submodules off, not with shallow or recursive",
        ));
    }
    let sparse_paths = args.values("--sparse")?;
    let sparse = match sparse_paths.is_empty() {
        true => None,
        false => Some(Sparse::new(
            sparse_paths
                .iter()
                .map(|p| Sparse::parse_path(p))
                .collect::<Result<_, _>>()
                .map_err(Error::Usage)?,
        )),
    };
    let mut credential_rules = Vec::new();
    for option in ["--credential", "--credential-file"] {
        for text in args.values(option)? {
            credential_rules.push(Rule::parse(option, &text).map_err(Error::Usage)?);
        }
    }
    let username = args.value("--username", |t| Ok(t.to_string()))?;
    let password_file = args.value("--password-file", |t| Ok(PathBuf::from(t)))?;
    let password_env = args.value("--password-env", |t| Ok(t.to_string()))?;
    let http = http::Options::parse(&mut args)?;
    let positionals = args.positionals()?;
    let [url, dest] = positionals.as_slice() else {
        return Err(Error::usage("expected URL and DEST"));
    };
    let url = Url::parse(url).map_err(Error::Usage)?;
    if dest.is_empty() {
        return Err(Error::usage("DEST is empty"));
    }
    let wanted = wanted.as_deref().map_or(Wanted::Head, Wanted::parse);
    if password_file.is_some() && password_env.is_some() {
        return Err(Error::usage(
            "give --password-file or --password-env, not both",
        ));
    }
    if http.sets_authorization() && (password_file.is_some() || password_env.is_some()) {
        return Err(Error::usage(
            "give --bearer-file, --basic-auth-from-env or a password, not two of them",
        ));
    }
    let password = match (password_file, password_env) {
        (Some(path), _) => Some((user_for(username, &url), Secret::File(path))),
        (None, Some(var)) => Some((user_for(username, &url), Secret::Env(var))),
        (None, None) => None,
    };
    let options = Options {
        url,
        dest: PathBuf::from(dest),
        wanted,
        depth,
        replace,
        revision_file,
        submodules,
        fail_on_submodules,
        sparse,
        credential_rules,
        password,
        http,
    };
    Ok(Box::new(move |deadline| run(&options, deadline)))
}

fn run(options: &Options, deadline: &Deadline) -> Result<(), Error> {
    let dest = &options.dest;
    let state = workspace::dest_state(dest, options.revision_file.as_deref())?;
    if state == DestState::Holds(None) && !options.replace {
        return Err(Error::Io(format!(
            "{}: not empty and not a checkout made by git-shallow: use --replace to replace it",
            dest.display()
        )));
    }
    let recorded = |commit: &str| workspace::Recorded::new(commit, &options.spec());
    if let (Wanted::Commit(id), DestState::Holds(Some(current))) = (&options.wanted, &state) {
        // A pinned commit that is already there needs no server at all.
        if current.is(&recorded(&hex(id))) {
            return already_checked_out(options, &current.commit);
        }
    }
    let credentials =
        Credentials::load(&options.credential_rules, &options.url, options.headers()?)?;
    let client = Client::new(&options.http, deadline)?;
    let auth = credentials.for_url(&options.url);
    let remote = Remote {
        client: &client,
        url: &options.url,
        auth: &auth,
    };
    let advertisement = remote.advertisement(&options.wanted)?;
    let (target, expected) = resolve(&remote, &advertisement, &options.wanted)?;
    if let DestState::Holds(Some(current)) = &state {
        if expected.is_some_and(|id| current.is(&recorded(&hex(&id)))) {
            return already_checked_out(options, &current.commit);
        }
        // The same commit checked out with other options is ours to redo.
        let same_commit = expected.is_some_and(|id| current.commit == hex(&id));
        if !options.replace && !same_commit {
            return Err(Error::Io(format!(
                "{}: holds commit {}, not the one asked for: use --replace to replace it",
                dest.display(),
                current.commit
            )));
        }
    }
    deadline.check("fetching")?;

    let mut progress = Progress::default();
    let workspace = Workspace::create(dest, &state)?;
    let wants = Wants {
        target: &target,
        depth: options.depth,
        sparse: options.sparse.as_ref(),
        gitmodules: options.submodules != Mode::Off,
        fail_on_submodules: options.fail_on_submodules,
        pack_name: "pack",
        prefix: "",
    };
    let mut root = checkout::open_dir(&workspace.tree())?;
    let Cloned {
        mut pack,
        commit,
        tree,
        mut stats,
        mut sparse,
    } = clone_into(
        &remote,
        &advertisement,
        &wants,
        &workspace,
        &mut root,
        deadline,
        &mut progress,
    )?;
    drop(root);
    let commit_hex = hex(&commit);
    if let (Wanted::Commit(_), DestState::Holds(Some(current))) = (&options.wanted, &state) {
        // A pinned tag object's id that peels to the commit DEST holds.
        if current.is(&recorded(&commit_hex)) {
            return already_checked_out(options, &current.commit);
        }
    }
    let (objects, deltas) = (pack.object_count(), pack.delta_count());
    let jobs = match options.submodules {
        Mode::Off => {
            submodules::warn_left_empty(&stats.gitlinks, None);
            Vec::new()
        }
        _ => submodules::plan(
            &mut pack,
            &tree,
            &stats.gitlinks,
            &options.url,
            None,
            sparse.as_mut(),
        )?,
    };
    // After the plan, which hands the paths into submodules to them.
    if let Some(sparse) = &sparse {
        sparse.check_found(&commit_hex, "")?;
    }
    // The superproject's pack is no longer needed: its memory and file go before the
    // submodules' arrive.
    drop(pack);
    let context = submodules::Context {
        mode: options.submodules,
        client: &client,
        credentials: &credentials,
        workspace: &workspace,
        deadline,
        packs: Default::default(),
    };
    let totals = submodules::check_out_all(jobs, &context)?;
    stats.files += totals.files;
    stats.bytes += totals.bytes;
    let submodules = totals.submodules;
    deadline.check("checking out")?;
    workspace.install(dest, &state, &recorded(&commit_hex))?;
    log::info(
        &format!(
            "checked out {commit_hex} into {} ({} files, {} bytes, {} objects, {} deltas, \
             {submodules} submodules, {})",
            dest.display(),
            stats.files,
            stats.bytes,
            objects,
            deltas,
            format_duration(deadline.elapsed())
        ),
        &[
            ("commit", json!(commit_hex)),
            ("url", json!(options.url.to_string())),
            ("dest", json!(dest.display().to_string())),
            ("files", json!(stats.files)),
            ("bytes", json!(stats.bytes)),
            ("objects", json!(objects)),
            ("deltas", json!(deltas)),
            ("submodules", json!(submodules)),
            ("elapsed_ms", json!(deadline.elapsed().as_millis() as u64)),
        ],
    );
    finish(options, &commit_hex)
}

/// DEST already holds `commit`: nothing to fetch or write but the revision file.
fn already_checked_out(options: &Options, commit: &str) -> Result<(), Error> {
    log::info(
        &format!("{} already holds {commit}", options.dest.display()),
        &[
            ("commit", json!(commit)),
            ("dest", json!(options.dest.display().to_string())),
        ],
    );
    finish(options, commit)
}

/// Writes `--revision-file` and prints the commit id.
fn finish(options: &Options, commit: &str) -> Result<(), Error> {
    if let Some(path) = &options.revision_file {
        write_revision_file(path, &options.dest, commit)?;
    }
    println!("{commit}");
    Ok(())
}

fn write_revision_file(path: &Path, dest: &Path, commit: &str) -> Result<(), Error> {
    use std::io::Write;
    let within = workspace::open_parent_within(dest, path)?;
    if std::fs::read_to_string(path).is_ok_and(|text| text.trim() == commit) {
        return Ok(());
    }
    let mut file = match within {
        Some(dir) => AtomicFile::create_in(dir, path)?,
        None => AtomicFile::create(path)?,
    };
    file.write_all(format!("{commit}\n").as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), &e))?;
    file.commit(0o644, None)
}

/// The default deadline: a large repository over a slow link takes minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_must_be_positive() {
        assert_eq!(parse_depth("3"), Ok(3));
        assert!(parse_depth("0").is_err());
        assert!(parse_depth("-1").is_err());
    }
}
