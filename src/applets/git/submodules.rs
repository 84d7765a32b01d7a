//! Submodules (issue 13): `--submodules shallow` checks out each gitlink of the tree at its
//! recorded commit, `recursive` does so for theirs too, what `git clone --depth 1
//! --recurse-submodules --shallow-submodules` produces. `off` (the default) leaves them empty
//! directories, as `git clone` does without `--recurse-submodules`: a submodule may live on a
//! host the pod has no credential for.
//!
//! Each gitlink must have its `.gitmodules` entry (read from the tree, not from disk), whose URL
//! resolves against the URL of the repository holding it; only `http(s)` URLs are fetched
//! ([`gitmodules`]). A submodule is fetched by its commit id (`want <id>`, depth 1), into the same
//! workspace as the superproject, so DEST is replaced only once every submodule is in place.
//! The submodules of one level are fetched side by side, at most [`JOBS`] at a time; a failure
//! stops the others and names the submodule.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use serde_json::json;

use super::checkout::{self, Gitlink, Stats};
use super::clone::{clone_into, Cloned, Wants};
use super::gitmodules::{self, Submodule};
use super::pack::{hex, Kind, Oid, Pack};
use super::progress::Progress;
use super::protocol::Wanted;
use super::remote::Remote;
use super::sparse::Sparse;
use super::workspace::Workspace;
use crate::error::Error;
use crate::http::{Client, Url};
use crate::log;
use crate::supervisor::Deadline;

/// Submodules fetched at the same time: enough to hide the round trips of small ones, few
/// enough to bound memory and connections.
pub const JOBS: usize = 4;
/// Submodules nested deeper than this are refused: a repository can name itself.
const MAX_NESTING: u32 = 8;
/// All submodules of one checkout, every level counted.
const MAX_SUBMODULES: usize = 1000;

/// `--submodules`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    Shallow,
    Recursive,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode, String> {
        match text {
            "off" => Ok(Mode::Off),
            "shallow" => Ok(Mode::Shallow),
            "recursive" => Ok(Mode::Recursive),
            _ => Err(format!(
                "invalid --submodules '{text}': use recursive, shallow or off"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Shallow => "shallow",
            Mode::Recursive => "recursive",
        }
    }
}

/// One submodule to fetch and check out.
pub struct Job {
    name: String,
    /// The raw path from the top of the checkout, e.g. `vendor/lib/deps/x`.
    path: Vec<u8>,
    shown: String,
    url: Url,
    commit: Oid,
    /// 1 for a gitlink of the superproject.
    level: u32,
    /// The `--sparse` paths inside this submodule; `None`: all of it.
    sparse: Option<Sparse>,
}

impl Job {
    /// An error of this submodule, naming it, with the exit code of its kind.
    fn error(&self, err: Error) -> Error {
        err.context(format!(
            "submodule '{}' ({}, commit {}, {})",
            self.name,
            self.shown,
            hex(&self.commit),
            self.url
        ))
    }
}

fn refused(why: String) -> Error {
    Error::Remote(format!(
        "refusing the submodules: {why} (a hostile or broken .gitmodules; nothing was written)"
    ))
}

/// What a checkout with submodules is given.
pub struct Context<'a> {
    pub mode: Mode,
    pub client: &'a Client,
    pub credentials: &'a super::credentials::Credentials,
    pub workspace: &'a Workspace,
    pub deadline: &'a Deadline,
    /// Numbers the pack files: two submodules may record the same commit.
    pub packs: AtomicUsize,
}

/// The submodules the gitlinks of one repository's checkout name. `pack` and `tree` are that
/// repository's, `url` where it came from; `parent` the job that checked it out (`None` for the
/// superproject); `sparse` that checkout's `--sparse` paths, which hand theirs to submodules.
pub fn plan(
    pack: &mut Pack,
    tree: &Oid,
    gitlinks: &[Gitlink],
    url: &Url,
    parent: Option<&Job>,
    mut sparse: Option<&mut Sparse>,
) -> Result<Vec<Job>, Error> {
    if gitlinks.is_empty() {
        return Ok(Vec::new());
    }
    let level = parent.map_or(1, |p| p.level + 1);
    let within = |text: &str| match parent {
        Some(job) => format!("{}/{text}", job.shown),
        None => text.to_string(),
    };
    if level > MAX_NESTING {
        return Err(refused(format!(
            "submodules nested deeper than {MAX_NESTING} levels, at {}",
            within(&gitlinks[0].shown)
        )));
    }
    let modules = read_gitmodules(pack, tree).map_err(|e| match parent {
        Some(job) => job.error(e),
        None => e,
    })?;
    for module in &modules {
        let checked_out = gitlinks.iter().any(|g| g.path == module.path.as_bytes());
        if !checked_out {
            // A gitlink `--sparse` left out is fine; anything else by that path is not.
            let kind = checkout::entry_kind(pack, tree, module.path.as_bytes())?;
            if let Some(kind) = kind.filter(|kind| *kind != "submodule") {
                return Err(refused(format!(
                    "submodule '{}' has path '{}', which is a {kind} of the tree, not a submodule",
                    module.name,
                    within(&module.path)
                )));
            }
        }
    }
    let mut jobs = Vec::with_capacity(gitlinks.len());
    for link in gitlinks {
        let module = modules
            .iter()
            .find(|m| m.path.as_bytes() == link.path)
            .ok_or_else(|| {
                refused(format!(
                    "'{}' is a submodule (commit {}) that .gitmodules does not name",
                    within(&link.shown),
                    hex(&link.id)
                ))
            })?;
        if module.update_none {
            log::info(
                &format!(
                    "submodule '{}' ({}) is left empty: .gitmodules says update = none, which \
                     git clone honours too",
                    module.name,
                    within(&link.shown)
                ),
                &[("submodule", json!(within(&link.shown)))],
            );
            continue;
        }
        let url = gitmodules::resolve_url(url, &module.url).map_err(|why| {
            refused(format!(
                "submodule '{}' ({}): {why}",
                module.name,
                within(&link.shown)
            ))
        })?;
        let path = match parent {
            Some(job) => [&job.path[..], b"/", &link.path[..]].concat(),
            None => link.path.clone(),
        };
        jobs.push(Job {
            name: module.name.clone(),
            path,
            shown: within(&link.shown),
            url,
            commit: link.id,
            level,
            sparse: sparse.as_mut().and_then(|s| s.below(&link.path)),
        });
    }
    Ok(jobs)
}

/// The `.gitmodules` of `tree`, empty when there is none.
fn read_gitmodules(pack: &mut Pack, tree: &Oid) -> Result<Vec<Submodule>, Error> {
    let Some(id) = checkout::root_file(pack, tree, b".gitmodules")? else {
        return Ok(Vec::new());
    };
    // The pack hands out blobs of up to 1 MiB whole; a larger .gitmodules is refused there.
    let Some((Kind::Blob, data)) = pack.get(&id)? else {
        return Err(checkout::missing(&id, ".gitmodules"));
    };
    gitmodules::parse(&data).map_err(|why| refused(format!(".gitmodules {why}")))
}

/// What the submodules added to the checkout.
#[derive(Default)]
pub struct Totals {
    pub submodules: usize,
    pub files: u64,
    pub bytes: u64,
}

/// Fetches and checks out `jobs`, then the submodules they hold when recursive, level by level.
pub fn check_out_all(mut jobs: Vec<Job>, context: &Context<'_>) -> Result<Totals, Error> {
    let mut totals = Totals::default();
    while !jobs.is_empty() {
        totals.submodules += jobs.len();
        if totals.submodules > MAX_SUBMODULES {
            return Err(refused(format!("more than {MAX_SUBMODULES} submodules")));
        }
        jobs = check_out_level(&jobs, context, &mut totals)?;
    }
    Ok(totals)
}

/// One level, [`JOBS`] at a time; returns the next level's jobs.
fn check_out_level(
    jobs: &[Job],
    context: &Context<'_>,
    totals: &mut Totals,
) -> Result<Vec<Job>, Error> {
    let next = AtomicUsize::new(0);
    let outcome: Mutex<(Result<(), Error>, Vec<Job>, Totals)> =
        Mutex::new((Ok(()), Vec::new(), Totals::default()));
    let worker = || loop {
        if outcome.lock().expect("not poisoned").0.is_err() {
            return;
        }
        let Some(job) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) else {
            return;
        };
        let result = check_out_one(job, context);
        let mut shared = outcome.lock().expect("not poisoned");
        match result {
            Ok((stats, children)) => {
                shared.1.extend(children);
                shared.2.files += stats.files;
                shared.2.bytes += stats.bytes;
            }
            Err(err) if shared.0.is_ok() => shared.0 = Err(job.error(err)),
            Err(_) => {}
        }
    };
    thread::scope(|scope| -> Result<(), Error> {
        for _ in 1..jobs.len().min(JOBS) {
            thread::Builder::new()
                .name("submodule".into())
                .spawn_scoped(scope, worker)
                .map_err(|e| Error::Internal(format!("cannot start a thread: {e}")))?;
        }
        worker();
        Ok(())
    })?;
    let (result, children, level) = outcome.into_inner().expect("not poisoned");
    result?;
    totals.files += level.files;
    totals.bytes += level.bytes;
    Ok(children)
}

/// Fetches one submodule's commit and checks it out into its (empty) directory.
fn check_out_one(job: &Job, context: &Context<'_>) -> Result<(Stats, Vec<Job>), Error> {
    let deadline = context.deadline;
    let auth = context.credentials.for_url(&job.url);
    let remote = Remote {
        client: context.client,
        url: &job.url,
        auth: &auth,
    };
    let wanted = Wanted::Commit(job.commit);
    let advertisement = remote.advertisement(&wanted)?;
    let mut progress = Progress::of_submodule(&job.shown);
    let pack_name = format!("pack-{}", context.packs.fetch_add(1, Ordering::SeqCst));
    let wants = Wants {
        target: &job.commit,
        depth: 1,
        sparse: job.sparse.as_ref(),
        gitmodules: context.mode == Mode::Recursive,
        fail_on_submodules: false,
        pack_name: &pack_name,
        prefix: &format!("{}/", job.shown),
    };
    let mut dir = checkout::open_below(&context.workspace.tree(), &job.path, &job.shown)?;
    let Cloned {
        mut pack,
        commit,
        tree,
        stats,
        mut sparse,
    } = clone_into(
        &remote,
        &advertisement,
        &wants,
        context.workspace,
        &mut dir,
        deadline,
        &mut progress,
    )?;
    if commit != job.commit {
        return Err(Error::Remote(format!(
            "the recorded commit is a tag object, not a commit ({})",
            hex(&commit)
        )));
    }
    let children = match context.mode {
        Mode::Recursive => plan(
            &mut pack,
            &tree,
            &stats.gitlinks,
            &job.url,
            Some(job),
            sparse.as_mut(),
        )?,
        _ => {
            warn_left_empty(&stats.gitlinks, Some(job));
            Vec::new()
        }
    };
    if let Some(sparse) = &sparse {
        sparse.check_found(&hex(&job.commit), &format!("{}/", job.shown))?;
    }
    Ok((stats, children))
}

/// Logs the submodules left as empty directories (`--submodules off`, or below the first
/// level with `shallow`).
pub fn warn_left_empty(gitlinks: &[Gitlink], parent: Option<&Job>) {
    if gitlinks.is_empty() {
        return;
    }
    let mut paths = Vec::with_capacity(gitlinks.len());
    for link in gitlinks {
        let mut path = String::new();
        if let Some(job) = parent {
            let _ = write!(path, "{}/", job.shown);
        }
        path.push_str(&link.shown);
        paths.push(path);
    }
    log::warn(
        &format!(
            "submodules not cloned, left empty: {} (--submodules recursive clones them)",
            paths.join(", ")
        ),
        &[("submodules", json!(paths))],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name() {
        for mode in [Mode::Off, Mode::Shallow, Mode::Recursive] {
            assert_eq!(Mode::parse(mode.name()), Ok(mode));
        }
        assert!(Mode::parse("yes")
            .unwrap_err()
            .contains("recursive, shallow or off"));
    }
}
