//! One repository fetched and checked out: the superproject into the workspace's tree, or a
//! submodule into its directory there. The fetch is shallow; with `--sparse` paths and a server
//! that filters, it leaves out the blobs the paths do not need.

use std::os::fd::OwnedFd;

use serde_json::json;

use super::checkout::{self, Checkout};
use super::pack::{self, hex, Kind, Oid, Pack};
use super::progress::Progress;
use super::protocol::{self, Advertisement, Fetch};
use super::remote::{fetch_pack, Remote};
use super::sparse::Sparse;
use super::workspace::Workspace;
use crate::error::Error;
use crate::log;
use crate::supervisor::Deadline;

/// One repository fetched and checked out: its pack, commit and root tree, what the checkout
/// wrote and met (gitlinks, `--sparse` paths found).
pub(super) struct Cloned {
    pub(super) pack: Pack,
    pub(super) commit: Oid,
    pub(super) tree: Oid,
    pub(super) stats: checkout::Stats,
    pub(super) sparse: Option<Sparse>,
}

/// What [`clone_into`] is asked for.
pub(super) struct Wants<'a> {
    pub(super) target: &'a Oid,
    pub(super) depth: u32,
    /// `--sparse`: when the server can filter, only the blobs these paths need are fetched.
    pub(super) sparse: Option<&'a Sparse>,
    /// The `.gitmodules` blob is needed (submodules are checked out).
    pub(super) gitmodules: bool,
    pub(super) fail_on_submodules: bool,
    /// Tells apart the pack files of repositories fetched side by side.
    pub(super) pack_name: &'a str,
    /// Where the checkout goes, for messages: empty, or a submodule's path and `/`.
    pub(super) prefix: &'a str,
}

/// Fetches `wants.target` into a pack file of `workspace` and writes its tree into `dir` (which
/// `wants.prefix` names in messages): the superproject into the workspace's tree, a submodule into its
/// directory there. With `--sparse` paths, a v2 server that offers `filter` first sends the
/// commit and trees only (`filter blob:none`), then, in a second request, the blobs the paths
/// need.
pub(super) fn clone_into(
    remote: &Remote<'_>,
    advertisement: &Advertisement,
    wants: &Wants<'_>,
    workspace: &Workspace,
    dir: &mut OwnedFd,
    deadline: &Deadline,
    progress: &mut Progress,
) -> Result<Cloned, Error> {
    let filtered = wants.sparse.is_some()
        && matches!(advertisement, Advertisement::V2 { capabilities }
            if protocol::supports_filter(capabilities));
    let shallow = Fetch::Shallow {
        want: wants.target,
        depth: wants.depth,
        filtered,
    };
    let file = workspace.pack_file(wants.pack_name)?;
    let mut pack = fetch_pack(remote, advertisement, &shallow, file, deadline, progress)?;
    let (commit, tree) = peel(&mut pack, wants.target)?;
    if let (true, Some(sparse)) = (filtered, wants.sparse) {
        let mut blobs = checkout::blobs_in_scope(&mut pack, &tree, sparse)?;
        if wants.gitmodules {
            blobs.extend(checkout::root_file(&mut pack, &tree, b".gitmodules")?);
        }
        if !blobs.is_empty() {
            let file = workspace.pack_file(&format!("{}-blobs", wants.pack_name))?;
            let objects = Fetch::Objects(&blobs);
            pack.attach(fetch_pack(
                remote,
                advertisement,
                &objects,
                file,
                deadline,
                progress,
            )?);
        }
        log::info(
            &format!(
                "{}: fetched {} blobs for the --sparse paths only (filter blob:none)",
                remote.url,
                blobs.len()
            ),
            &[
                ("url", json!(remote.url.to_string())),
                ("blobs", json!(blobs.len())),
            ],
        );
    }
    let mut checkout = Checkout::new(&mut pack, deadline, progress, wants.fail_on_submodules);
    checkout.sparse = wants.sparse.cloned();
    checkout.write_tree(&tree, dir, wants.prefix, 0)?;
    let stats = std::mem::take(&mut checkout.stats);
    let sparse = checkout.sparse.take();
    Ok(Cloned {
        pack,
        commit,
        tree,
        stats,
        sparse,
    })
}

/// Follows tags to the commit, and returns it with its root tree.
fn peel(pack: &mut Pack, target: &Oid) -> Result<(Oid, Oid), Error> {
    let mut id = *target;
    for _ in 0..16 {
        let (kind, data) = pack
            .get(&id)?
            .ok_or_else(|| checkout::missing(&id, "the wanted commit"))?;
        let field = |name: &str| -> Result<Oid, Error> {
            data.split(|&b| b == b'\n')
                .take_while(|line| !line.is_empty())
                .find_map(|line| line.strip_prefix(name.as_bytes()))
                .and_then(|rest| std::str::from_utf8(rest).ok())
                .and_then(pack::parse_hex)
                .ok_or_else(|| {
                    Error::Remote(format!("{} {}: no '{name}' line", kind.name(), hex(&id)))
                })
        };
        match kind {
            Kind::Tag => id = field("object ")?,
            Kind::Commit => return Ok((id, field("tree ")?)),
            other => {
                return Err(Error::Remote(format!(
                    "{} is a {}, not a commit",
                    hex(target),
                    other.name()
                )))
            }
        }
    }
    Err(Error::Remote(format!(
        "{}: tags nested too deep",
        hex(target)
    )))
}
