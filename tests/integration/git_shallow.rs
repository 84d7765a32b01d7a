//! `git-shallow` against Debian's real `git http-backend`, compared with real `git clone`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::io::{self, Write};
use std::sync::Arc;

use crate::git_server::{
    git, git_stdin, pkt, snapshot, Answer, AuthProxy, Behaviour, GitServer, HostileServer, Repo,
};
use crate::util::{have_root, initbox, scratch_pid1, wait_until, Scratch, TempDir};

/// Deterministic bytes that do not compress well.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A repository with every kind of entry; returns (repo, commits oldest first).
fn rich_repo() -> (Repo, Vec<String>) {
    let repo = Repo::new("git-rich");
    let w = &repo.work;
    fs::write(w.join("a.txt"), "alpha\n").unwrap();
    fs::write(w.join("empty"), "").unwrap();
    fs::write(w.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(w.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", w.join("link")).unwrap();
    std::os::unix::fs::symlink("dir/sub", w.join("dirlink")).unwrap();
    fs::create_dir_all(w.join("dir/sub/deeper")).unwrap();
    fs::write(w.join("dir/sub/deeper/deep.txt"), "deep\n").unwrap();
    fs::write(w.join("ünïcødé ☃.txt"), "snow\n").unwrap();
    fs::write(w.join("bin.dat"), noise(300_000, 7)).unwrap();
    let mut big = Vec::new();
    for i in 0..60_000 {
        big.extend_from_slice(format!("line {i} of a large text file\n").as_bytes());
    }
    fs::write(w.join("big.txt"), &big).unwrap();
    let mut commits = vec![repo.commit("one")];
    big.extend_from_slice(b"one more line\n");
    big[100..110].copy_from_slice(b"CHANGED!!!");
    fs::write(w.join("big.txt"), &big).unwrap();
    fs::write(w.join("a.txt"), "alpha 2\n").unwrap();
    git(w, &["add", "-A"]);
    // A submodule entry (gitlink) pointing at some commit.
    git(
        w,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{},submod", commits[0]),
        ],
    );
    git(w, &["commit", "-q", "-m", "two"]);
    commits.push(git(w, &["rev-parse", "HEAD"]));
    git(w, &["tag", "-a", "v1", "-m", "release 1"]);
    git(w, &["tag", "light"]);
    fs::write(w.join("a.txt"), "alpha 3\n").unwrap();
    // Not `add -A`: the gitlink has no directory in the work tree and would be dropped.
    git(w, &["add", "a.txt"]);
    git(w, &["commit", "-q", "-m", "three"]);
    commits.push(git(w, &["rev-parse", "HEAD"]));
    git(w, &["checkout", "-q", "-b", "feature"]);
    fs::write(w.join("feature.txt"), "feature\n").unwrap();
    commits.push(repo.commit("feature"));
    git(w, &["checkout", "-q", "main"]);
    repo.publish();
    (repo, commits)
}

#[track_caller]
fn assert_same_as_git_clone(server: &GitServer, dest: &Path, args: &[&str]) {
    let scratch = TempDir::new("git-reference");
    let mut clone = vec!["clone", "-q", "--depth", "1", "--no-tags"];
    clone.extend_from_slice(args);
    let url = server.url("repo.git");
    clone.extend_from_slice(&[url.as_str(), "ref"]);
    git(scratch.path(), &clone);
    let expected = snapshot(&scratch.join("ref"));
    let actual = snapshot(dest);
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>()
    );
    for (path, node) in &expected {
        assert!(actual[path] == *node, "{path} differs from git clone");
    }
}

fn no_temporaries(dir: &Path) {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".initbox-"))
        .collect();
    assert!(
        names.is_empty(),
        "left behind in {}: {names:?}",
        dir.display()
    );
}

#[test]
fn v2_clone_of_head_matches_git_clone() {
    let (repo, commits) = rich_repo();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("site");
    let revision = out_dir.join("rev");
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        dest.to_str().unwrap(),
        "--revision-file",
        revision.to_str().unwrap(),
    ])
    .run()
    .success()
    .stdout_has(&commits[2])
    .stderr_has("submod");
    assert_same_as_git_clone(&server, &dest, &[]);
    assert_eq!(
        fs::read_to_string(&revision).unwrap().trim(),
        commits[2].as_str()
    );
    assert!(server
        .seen_headers
        .lock()
        .unwrap()
        .iter()
        .any(|h| h == "git-protocol: version=2" || h == "Git-Protocol: version=2"));
    no_temporaries(out_dir.path());

    // Same commit again (URL with a trailing slash): nothing is fetched, DEST stays.
    let before = server.requests.load(std::sync::atomic::Ordering::SeqCst);
    initbox([
        "git-shallow",
        &server.url("repo.git/"),
        dest.to_str().unwrap(),
    ])
    .run()
    .success()
    .stdout_has(&commits[2])
    .stderr_has("already holds");
    let after = server.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        after - before <= 2,
        "fetched again ({} requests)",
        after - before
    );
}

#[test]
fn branch_tag_annotated_tag_and_commit_refs() {
    let (repo, commits) = rich_repo();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    for (wanted, commit, clone_args) in [
        ("feature", &commits[3], vec!["--branch", "feature"]),
        ("v1", &commits[1], vec!["--branch", "v1"]),
        ("light", &commits[1], vec!["--branch", "light"]),
        ("refs/heads/main", &commits[2], vec![]),
    ] {
        let out_dir = TempDir::new("git-out");
        let dest = out_dir.join("dest");
        initbox([
            "git-shallow",
            &server.url("repo.git"),
            dest.to_str().unwrap(),
            "--ref",
            wanted,
        ])
        .run()
        .success()
        .stdout_has(commit);
        assert_same_as_git_clone(&server, &dest, &clone_args);
    }
    // A commit id that is not a ref tip, with depth 3.
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        dest.to_str().unwrap(),
        "--ref",
        &commits[0],
        "--depth",
        "3",
    ])
    .run()
    .success()
    .stdout_has(&commits[0]);
    assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "alpha\n");
    assert!(!dest.join("submod").exists());
    // Pinned and already there: succeeds without the server.
    initbox([
        "git-shallow",
        "http://127.0.0.1:9/unreachable.git",
        dest.to_str().unwrap(),
        "--ref",
        &commits[0],
    ])
    .run()
    .success()
    .stdout_has(&commits[0])
    .stderr_has("already holds");

    initbox([
        "git-shallow",
        &server.url("repo.git"),
        out_dir.join("x").to_str().unwrap(),
        "--ref",
        "nope",
    ])
    .run()
    .code(76)
    .stderr_has("no ref nope");
}

#[test]
fn v0_server_and_depth_three() {
    let (repo, commits) = rich_repo();
    let behaviour = Behaviour {
        v0_only: true,
        ..Behaviour::default()
    };
    let server = GitServer::start(repo.root.path(), behaviour);
    for (wanted, commit, clone_args) in [
        ("main", &commits[2], vec!["--branch", "main"]),
        ("v1", &commits[1], vec!["--branch", "v1"]),
    ] {
        let out_dir = TempDir::new("git-out");
        let dest = out_dir.join("dest");
        initbox([
            "git-shallow",
            &server.url("repo.git"),
            dest.to_str().unwrap(),
            "--ref",
            wanted,
            "--depth",
            "3",
        ])
        .run()
        .success()
        .stdout_has(commit)
        .stderr_lacks(" 0 deltas");
        assert_same_as_git_clone(&server, &dest, &clone_args);
    }
}

#[test]
fn submodules_refused_on_request_and_replace_swaps() {
    let (repo, commits) = rich_repo();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    let url = server.url("repo.git");
    let d = dest.to_str().unwrap();
    initbox(["git-shallow", &url, d, "--fail-on-submodules"])
        .run()
        .code(76)
        .stderr_has("submod");
    assert!(!dest.exists());
    no_temporaries(out_dir.path());

    initbox(["git-shallow", &url, d, "--ref", "feature"])
        .run()
        .success();
    initbox(["git-shallow", &url, d, "--ref", "main"])
        .run()
        .code(74)
        .stderr_has("--replace");
    assert!(dest.join("feature.txt").exists());
    initbox(["git-shallow", &url, d, "--ref", "main", "--replace"])
        .run()
        .success()
        .stdout_has(&commits[2]);
    assert!(!dest.join("feature.txt").exists());
    assert_same_as_git_clone(&server, &dest, &[]);
    no_temporaries(out_dir.path());

    // Foreign content is left alone unless --replace.
    let other = out_dir.join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("keep"), "x").unwrap();
    initbox(["git-shallow", &url, other.to_str().unwrap()])
        .run()
        .code(74);
    assert!(other.join("keep").exists());
}

#[test]
fn mount_point_dest_with_read_only_parent_uses_a_temporary_inside() {
    if !have_root("mount_point_dest_with_read_only_parent_uses_a_temporary_inside") {
        return;
    }
    let (repo, commits) = rich_repo();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let parent = out_dir.join("ro");
    let dest = parent.join("dest");
    fs::create_dir_all(&dest).unwrap();
    // In a private mount namespace: DEST a tmpfs, its parent read-only.
    let script = format!(
        "mount --bind {parent} {parent} && mount -o remount,bind,ro {parent} && \
         mount -t tmpfs none {dest} && {bin} git-shallow {url} {dest} && \
         {bin} git-shallow {url} {dest} && ls -A {dest}",
        dest = dest.display(),
        parent = parent.display(),
        bin = crate::util::bin().display(),
        url = server.url("repo.git"),
    );
    let out = crate::util::Cmd::from({
        let mut c = std::process::Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        c
    })
    .run();
    out.success()
        .stdout_has(&commits[2])
        .stderr_has("already holds");
    assert!(
        !out.stdout.contains(".initbox-"),
        "temporary left: {}",
        out.stdout
    );
    assert!(out.stdout.contains("run.sh"));
}

#[test]
fn hostile_trees_are_refused_and_nothing_escapes() {
    for (case, entries) in [
        ("dotdot", vec!["100644 blob {A}\t.."]),
        ("dotgit", vec!["040000 tree {T}\t.git"]),
        ("DOTGIT", vec!["040000 tree {T}\t.GIT"]),
        ("ntfs", vec!["040000 tree {T}\tgit~1"]),
        (
            "symlink-then-dir",
            vec!["120000 blob {L}\tesc", "040000 tree {T}\tesc"],
        ),
    ] {
        let repo = Repo::new("git-hostile");
        let w = &repo.work;
        let outside = TempDir::new("git-outside");
        let a = git_stdin(w, &["hash-object", "-w", "--stdin"], b"pwned\n");
        let l = git_stdin(
            w,
            &["hash-object", "-w", "--stdin"],
            outside.path().to_str().unwrap().as_bytes(),
        );
        let t = git_stdin(
            w,
            &["mktree"],
            format!("100644 blob {a}\tfile\n").as_bytes(),
        );
        let listing: String = entries
            .iter()
            .map(|e| e.replace("{A}", &a).replace("{T}", &t).replace("{L}", &l) + "\n")
            .collect();
        let root = git_stdin(w, &["mktree", "--missing"], listing.as_bytes());
        let commit = git_stdin(
            w,
            &[
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@e",
                "commit-tree",
                &root,
                "-m",
                case,
            ],
            b"",
        );
        git(w, &["update-ref", "refs/heads/main", &commit]);
        repo.publish();
        let server = GitServer::start(repo.root.path(), Behaviour::default());
        let out_dir = TempDir::new("git-out");
        let dest = out_dir.join("dest");
        initbox([
            "git-shallow",
            &server.url("repo.git"),
            dest.to_str().unwrap(),
        ])
        .run()
        .code(76)
        .stderr_has("refusing");
        assert!(!dest.exists(), "{case}: DEST was created");
        assert!(
            fs::read_dir(outside.path()).unwrap().next().is_none(),
            "{case}: escaped"
        );
        no_temporaries(out_dir.path());
    }
}

#[test]
fn object_not_matching_its_id_is_an_integrity_error() {
    let repo = Repo::new("git-corrupt");
    fs::write(repo.work.join("good.txt"), "the real content\n").unwrap();
    repo.commit("one");
    repo.publish();
    // Replace the loose blob's file with another object's, keeping its name (its id).
    let blob = git(&repo.bare, &["rev-parse", "HEAD:good.txt"]);
    let packs: Vec<PathBuf> = fs::read_dir(repo.bare.join("objects/pack"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    let mut data = Vec::new();
    for pack in &packs {
        if pack.extension().is_some_and(|e| e == "pack") {
            data.push(fs::read(pack).unwrap());
        }
        fs::remove_file(pack).unwrap();
    }
    for pack in data {
        git_stdin(&repo.bare, &["unpack-objects", "-q"], &pack);
    }
    let evil = git_stdin(
        &repo.bare,
        &["hash-object", "-w", "--stdin"],
        b"evil content\n",
    );
    let path = |id: &str| repo.bare.join(format!("objects/{}/{}", &id[..2], &id[2..]));
    let _ = fs::set_permissions(path(&blob), fs::Permissions::from_mode(0o644));
    fs::copy(path(&evil), path(&blob)).unwrap();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        dest.to_str().unwrap(),
    ])
    .run()
    .code(79)
    .stderr_has(&blob);
    assert!(!dest.exists());
    no_temporaries(out_dir.path());
}

#[test]
fn server_error_message_is_surfaced() {
    let (repo, _) = rich_repo();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        out_dir.join("dest").to_str().unwrap(),
        "--ref",
        "0123456789012345678901234567890123456789",
    ])
    .run()
    .code(76)
    .stderr_has("the server reported")
    .stderr_has("0123456789012345678901234567890123456789");
    // A crafted side-band error in the pack stream.
    let mut body = Vec::new();
    {
        let line = "packfile\n";
        body.extend(format!("{:04x}{line}", line.len() + 4).as_bytes());
    }
    let msg = "\x03fatal: disk quota exceeded on the server\n";
    body.extend(format!("{:04x}{msg}", msg.len() + 4).as_bytes());
    let crafted = GitServer::start(
        repo.root.path(),
        Behaviour {
            upload_pack_body: Some(body),
            ..Behaviour::default()
        },
    );
    initbox([
        "git-shallow",
        &crafted.url("repo.git"),
        out_dir.join("dest").to_str().unwrap(),
        "--ref",
        "main",
    ])
    .run()
    .code(76)
    .stderr_has("disk quota exceeded");
    assert!(!out_dir.join("dest").exists());
    initbox([
        "git-shallow",
        &server.url("missing.git"),
        out_dir.join("dest").to_str().unwrap(),
    ])
    .run()
    .code(76)
    .stderr_has("404");
}

#[test]
fn basic_auth_from_file_is_sent_and_not_logged() {
    let (repo, commits) = rich_repo();
    // "deploy:s3cret" in base64.
    let server = GitServer::start(
        repo.root.path(),
        Behaviour {
            require_auth: Some("Basic ZGVwbG95OnMzY3JldA==".into()),
            ..Behaviour::default()
        },
    );
    let out_dir = TempDir::new("git-out");
    let secret = out_dir.join("token");
    fs::write(&secret, "s3cret\n").unwrap();
    let dest = out_dir.join("dest");
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        dest.to_str().unwrap(),
    ])
    .run()
    .code(77)
    .stderr_has("401");
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        dest.to_str().unwrap(),
        "--username",
        "deploy",
        "--password-file",
        secret.to_str().unwrap(),
    ])
    .run()
    .success()
    .stdout_has(&commits[2])
    .stderr_lacks("s3cret");
}

#[test]
fn stalled_server_times_out() {
    let (repo, _) = rich_repo();
    let server = GitServer::start(
        repo.root.path(),
        Behaviour {
            stall_after: Some(20_000),
            ..Behaviour::default()
        },
    );
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        dest.to_str().unwrap(),
        "--timeout",
        "2s",
    ])
    .limit(Duration::from_secs(10))
    .run()
    .code(124);
    assert!(!dest.exists());
    no_temporaries(out_dir.path());
}

#[test]
fn sigterm_mid_transfer_as_pid1_leaves_dest_untouched() {
    if !have_root("sigterm_mid_transfer_as_pid1_leaves_dest_untouched") {
        return;
    }
    let (repo, _) = rich_repo();
    let server = GitServer::start(
        repo.root.path(),
        Behaviour {
            chunk_pause: Some(Duration::from_millis(50)),
            ..Behaviour::default()
        },
    );
    let scratch = Scratch::new();
    fs::create_dir(scratch.root.join("dest")).unwrap();
    fs::write(scratch.root.join("dest/old"), "old").unwrap();
    let running = scratch
        .initbox(["git-shallow", &server.url("repo.git"), "/dest", "--replace"])
        .spawn();
    let pid1 = scratch_pid1(&running);
    // Wait until the transfer is under way: the temporary workspace exists.
    wait_until("the transfer to start", Duration::from_secs(10), || {
        fs::read_dir(scratch.root.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".initbox-")
        })
    });
    running.signal(libc::SIGTERM, pid1);
    running.finish().code(143);
    assert_eq!(
        fs::read_to_string(scratch.root.join("dest/old")).unwrap(),
        "old"
    );
    assert_eq!(fs::read_dir(scratch.root.join("dest")).unwrap().count(), 1);
    no_temporaries(scratch.root.path());
}

#[test]
fn bearer_token_and_url_credentials_are_never_printed() {
    let (repo, commits) = rich_repo();
    let server = GitServer::start(
        repo.root.path(),
        Behaviour {
            require_auth: Some("Bearer t0ken-xyz".into()),
            ..Behaviour::default()
        },
    );
    let out_dir = TempDir::new("git-out");
    let token = out_dir.join("token");
    fs::write(&token, "t0ken-xyz\n").unwrap();
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        out_dir.join("dest").to_str().unwrap(),
        "--bearer-file",
        token.to_str().unwrap(),
    ])
    .run()
    .success()
    .stdout_has(&commits[2])
    .stderr_lacks("t0ken");
    // A password in the URL is sent as basic auth (rejected here) and masked in messages.
    let url = server
        .url("repo.git")
        .replace("http://", "http://deploy:hunter2@");
    initbox(["git-shallow", &url, out_dir.join("other").to_str().unwrap()])
        .run()
        .code(77)
        .stderr_has("401")
        .stderr_lacks("hunter2");
}

#[test]
fn clones_as_pid1_in_an_empty_root() {
    if !have_root("clones_as_pid1_in_an_empty_root") {
        return;
    }
    let (repo, commits) = rich_repo();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let scratch = Scratch::new();
    scratch
        .initbox([
            "git-shallow",
            &server.url("repo.git"),
            "/srv/site",
            "--revision-file",
            "/srv/rev",
        ])
        .run()
        .success()
        .stdout_has(&commits[2]);
    assert_same_as_git_clone(&server, &scratch.root.join("srv/site"), &[]);
    assert_eq!(
        fs::read_to_string(scratch.root.join("srv/rev"))
            .unwrap()
            .trim(),
        commits[2].as_str()
    );
    no_temporaries(&scratch.root.join("srv"));
}

/// A workspace as a killed run leaves it inside DEST (see `Workspace` in checkout.rs): the
/// documented name, and the FIFO marker no git tree can contain.
fn leftover_workspace(dir: &Path, name: &str) {
    let workspace = dir.join(name);
    fs::create_dir_all(workspace.join("tree/sub")).unwrap();
    fs::write(workspace.join("tree/sub/junk"), "x").unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(workspace.join(".initbox-workspace"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn workspace_left_by_a_killed_run_is_cleaned_up() {
    let (repo, commits) = rich_repo();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    fs::create_dir(&dest).unwrap();
    leftover_workspace(&dest, ".initbox-0123456789abcdef.git");
    leftover_workspace(out_dir.path(), ".dest.initbox-fedcba9876543210.git");
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        dest.to_str().unwrap(),
    ])
    .run()
    .success()
    .stdout_has(&commits[2]);
    no_temporaries(&dest);
    no_temporaries(out_dir.path());
    assert_same_as_git_clone(&server, &dest, &[]);
}

/// Issue 9 #11: a re-run deleted checked-out entries named `.initbox-git-*` (taking them for its
/// own leftovers) and reported success. Only what carries initbox's marker may go.
#[test]
fn issue_9_11_entries_named_like_a_workspace_survive_a_rerun() {
    let repo = Repo::new("git-lookalike");
    let w = &repo.work;
    fs::create_dir_all(w.join(".initbox-git-notes")).unwrap();
    fs::write(w.join(".initbox-git-notes/keep"), "mine\n").unwrap();
    fs::write(w.join(".initbox-git-1-2"), "mine too\n").unwrap();
    // Many, so that whatever the directory order, one comes before the other files.
    for i in 0..30 {
        fs::create_dir(w.join(format!(".initbox-git-{i}"))).unwrap();
        fs::write(w.join(format!(".initbox-git-{i}/keep")), "x").unwrap();
    }
    // Also a look-alike of the current format (a tree cannot hold the FIFO marker).
    fs::create_dir_all(w.join(".initbox-0123456789abcdef.git/.initbox-workspace")).unwrap();
    fs::write(
        w.join(".initbox-0123456789abcdef.git/.initbox-workspace/f"),
        "x",
    )
    .unwrap();
    let commit = repo.commit("look-alikes");
    repo.publish();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    let d = dest.to_str().unwrap();
    for _ in 0..2 {
        initbox(["git-shallow", &server.url("repo.git"), d])
            .run()
            .success()
            .stdout_has(&commit);
        assert_same_as_git_clone(&server, &dest, &[]);
    }
}

/// Issue 9 #1 and #12: a SIGKILL (OOM-kill) of git-shallow as PID 1 left its workspace beside
/// DEST, and no later run ever removed it.
#[test]
fn issue_9_12_workspace_of_a_sigkilled_run_is_swept_by_the_next() {
    if !have_root("issue_9_12_workspace_of_a_sigkilled_run_is_swept_by_the_next") {
        return;
    }
    let (repo, commits) = rich_repo();
    let slow = GitServer::start(
        repo.root.path(),
        Behaviour {
            chunk_pause: Some(Duration::from_millis(50)),
            ..Behaviour::default()
        },
    );
    let scratch = Scratch::new();
    let running = scratch
        .initbox(["git-shallow", &slow.url("repo.git"), "/srv/dest"])
        .spawn();
    let pid1 = scratch_pid1(&running);
    let srv = scratch.root.join("srv");
    wait_until("the transfer to start", Duration::from_secs(10), || {
        fs::read_dir(&srv).is_ok_and(|mut d| d.next().is_some())
    });
    std::thread::sleep(Duration::from_millis(200));
    running.signal(libc::SIGKILL, pid1);
    let _ = running.finish();
    assert_eq!(fs::read_dir(&srv).unwrap().count(), 1, "nothing was left");
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    scratch
        .initbox(["git-shallow", &server.url("repo.git"), "/srv/dest"])
        .run()
        .success()
        .stdout_has(&commits[2]);
    no_temporaries(&srv);
    assert_same_as_git_clone(&server, &srv.join("dest"), &[]);
}

/// Issue 9 #7: `--revision-file DEST/link/REV`, `link` a symlink of the checked-out tree, wrote
/// wherever the repository pointed it.
#[test]
fn issue_9_7_revision_file_through_a_symlink_in_the_tree_is_refused() {
    let outside = TempDir::new("git-outside");
    let repo = Repo::new("git-revlink");
    std::os::unix::fs::symlink(outside.path(), repo.work.join("link")).unwrap();
    fs::create_dir(repo.work.join("real")).unwrap();
    fs::write(repo.work.join("real/file"), "x").unwrap();
    repo.commit("a link out");
    repo.publish();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    let url = server.url("repo.git");
    let rev = dest.join("link/REV");
    initbox([
        "git-shallow",
        &url,
        dest.to_str().unwrap(),
        "--revision-file",
        rev.to_str().unwrap(),
    ])
    .run()
    .code(74)
    .stderr_has("symlink");
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "written outside DEST"
    );
    // A real directory of the tree is fine.
    let inside = dest.join("real/REV");
    initbox([
        "git-shallow",
        &url,
        dest.to_str().unwrap(),
        "--revision-file",
        inside.to_str().unwrap(),
    ])
    .run()
    .success();
    assert_eq!(fs::read_to_string(inside).unwrap().len(), 41);
}

/// Issue 9 #19: the workspace's name added ~25 bytes to DEST's: a 235-255 byte DEST failed.
#[test]
fn issue_9_19_a_255_byte_dest_name_works() {
    let (repo, commits) = rich_repo();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("d".repeat(255));
    initbox([
        "git-shallow",
        &server.url("repo.git"),
        dest.to_str().unwrap(),
    ])
    .run()
    .success()
    .stdout_has(&commits[2]);
    assert_same_as_git_clone(&server, &dest, &[]);
    no_temporaries(out_dir.path());
}

/// `initbox ARGS` under `ulimit -n LIMIT`.
fn with_fd_limit(limit: u32, args: &[&str]) -> crate::util::Cmd {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\"")])
        .arg(crate::util::bin())
        .args(args);
    crate::util::Cmd::from(command)
}

/// Makes `depth` nested directories `d` under `dir`, one descriptor at a time (the path is
/// longer than PATH_MAX).
fn nest(dir: &Path, depth: usize) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut current = fs::File::open(dir).unwrap();
    for _ in 0..depth {
        // SAFETY: valid descriptor and NUL-terminated names; results checked.
        unsafe {
            assert_eq!(libc::mkdirat(current.as_raw_fd(), c"d".as_ptr(), 0o755), 0);
            let fd = libc::openat(
                current.as_raw_fd(),
                c"d".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0);
            current = fs::File::from(OwnedFd::from_raw_fd(fd));
        }
    }
    fs::write(format!("/proc/self/fd/{}/leaf", current.as_raw_fd()), "x").unwrap();
}

/// Issue 9 #10: `--replace` over a tree deeper than the descriptor limit ran out of descriptors
/// and left the old tree beside DEST; the checkout held one descriptor per level too.
#[test]
fn issue_9_10_replace_over_a_deep_tree_and_deep_checkout_under_a_low_fd_limit() {
    let repo = Repo::new("git-deep");
    let deep: PathBuf = std::iter::repeat_n("d", 200).collect();
    fs::create_dir_all(repo.work.join(&deep)).unwrap();
    fs::write(repo.work.join(&deep).join("leaf"), "deep\n").unwrap();
    let commit = repo.commit("deep");
    repo.publish();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    fs::create_dir(&dest).unwrap();
    nest(&dest, 5000);
    let d = dest.to_str().unwrap();
    let url = server.url("repo.git");
    with_fd_limit(1024, &["git-shallow", &url, d, "--replace"])
        .run()
        .success()
        .stdout_has(&commit);
    assert_same_as_git_clone(&server, &dest, &[]);
    no_temporaries(out_dir.path());
    // The 200-deep checkout itself, with fewer descriptors than levels.
    let other = out_dir.join("other");
    with_fd_limit(64, &["git-shallow", &url, other.to_str().unwrap()])
        .run()
        .success();
    assert_same_as_git_clone(&server, &other, &[]);
}

#[test]
fn usage_errors_before_any_work() {
    for args in [
        vec!["git-shallow"],
        vec!["git-shallow", "http://127.0.0.1:1/r.git"],
        vec!["git-shallow", "ftp://x/r.git", "/tmp/x"],
        vec![
            "git-shallow",
            "http://127.0.0.1:1/r.git",
            "/tmp/x",
            "--depth",
            "0",
        ],
        vec![
            "git-shallow",
            "http://127.0.0.1:1/r.git",
            "/tmp/x",
            "--bogus",
        ],
    ] {
        initbox(&args).run().code(64);
    }
    // Credentials are read when the job runs (so --check-args needs no Secret): a variable
    // that is not set is missing input, named in the message.
    initbox([
        "git-shallow",
        "http://127.0.0.1:1/r.git",
        "/tmp/x",
        "--password-env",
        "NOT_SET_ANYWHERE_42",
    ])
    .run()
    .code(66)
    .stderr_has("--password-env NOT_SET_ANYWHERE_42: the variable is not set");
}

/// nginx (TLS) + fcgiwrap + git http-backend, stopped on drop.
struct TlsGitServer {
    dir: TempDir,
    fcgiwrap: std::process::Child,
    nginx: std::process::Child,
    port: u16,
}

impl TlsGitServer {
    fn start(project_root: &Path) -> TlsGitServer {
        use crate::util::{free_port, require_tool};
        let dir = TempDir::new("git-tls");
        crate::util::make_pki(dir.path());
        let socket = dir.join("fcgi.sock");
        let fcgiwrap = std::process::Command::new(require_tool("fcgiwrap"))
            .arg("-s")
            .arg(format!("unix:{}", socket.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            "user root; daemon off; pid {d}/nginx.pid; error_log {d}/error.log; worker_processes 1;
events {{}}
http {{
    access_log off;
    client_body_temp_path {d}/body; fastcgi_temp_path {d}/fcgi; proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
            fastcgi_param GIT_PROJECT_ROOT {root};
            fastcgi_param GIT_HTTP_EXPORT_ALL \"\";
            fastcgi_param PATH_INFO $uri;
            fastcgi_param GIT_PROTOCOL $http_git_protocol;
            fastcgi_pass unix:{socket};
        }}
    }}
}}
",
            root = project_root.display(),
            socket = socket.display(),
        );
        fs::write(dir.join("nginx.conf"), config).unwrap();
        let nginx = std::process::Command::new(require_tool("nginx"))
            .args(["-c", dir.join("nginx.conf").to_str().unwrap(), "-p"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && socket.exists()
        });
        TlsGitServer {
            dir,
            fcgiwrap,
            nginx,
            port,
        }
    }
}

impl Drop for TlsGitServer {
    fn drop(&mut self) {
        // nginx runs in the foreground (daemon off); SIGTERM makes the master stop its workers.
        // SAFETY: kill has no memory effects; the pid is the nginx child this test started.
        unsafe { libc::kill(self.nginx.id() as i32, libc::SIGTERM) };
        let _ = self.nginx.wait();
        let _ = self.fcgiwrap.kill();
        let _ = self.fcgiwrap.wait();
    }
}

#[test]
fn https_with_ca_file_and_untrusted_without() {
    let (repo, commits) = rich_repo();
    let server = TlsGitServer::start(repo.root.path());
    let url = format!("https://127.0.0.1:{}/repo.git", server.port);
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    initbox(["git-shallow", &url, dest.to_str().unwrap()])
        .run()
        .code(78);
    assert!(!dest.exists());
    initbox([
        "git-shallow",
        &url,
        dest.to_str().unwrap(),
        "--ca-file",
        server.dir.join("ca.pem").to_str().unwrap(),
    ])
    .run()
    .success()
    .stdout_has(&commits[2]);
    assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "alpha 3\n");
}

// Issue 9 #9: a hostile server must not be able to grow git-shallow's memory with what it
// sends. Each case runs initbox under GNU time (peak RSS of exactly that process) and, so that a
// regression fails the test rather than the machine, under an address-space limit far above the
// goal.

/// The peak RSS initbox may reach against any server response.
const RSS_LIMIT_KIB: u64 = 64 << 10;

fn measured(dir: &TempDir, args: &[&str]) -> (crate::util::Outcome, u64) {
    let report = dir.join("rss");
    let mut command = std::process::Command::new("/usr/bin/time");
    command
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .args(["prlimit", "--as=2147483648", "--"])
        .arg(crate::util::bin())
        .arg("git-shallow")
        .args(args);
    let outcome = crate::util::Cmd::from(command).run();
    let text = fs::read_to_string(&report).unwrap();
    let kib = text.lines().last().unwrap().trim().parse().unwrap();
    (outcome, kib)
}

#[track_caller]
fn assert_bounded(server: &HostileServer, code: i32, needle: &str) {
    let dir = TempDir::new("git-hostile");
    let dest = dir.join("dest");
    let (outcome, kib) = measured(
        &dir,
        &[&server.url(), dest.to_str().unwrap(), "--timeout", "60s"],
    );
    outcome.code(code).stderr_has(needle);
    eprintln!("peak RSS {kib} KiB");
    assert!(
        kib <= RSS_LIMIT_KIB,
        "peak RSS {kib} KiB is over {RSS_LIMIT_KIB} KiB\n{}",
        outcome.stderr
    );
    assert!(!dest.exists());
}

fn answer(f: impl Fn(&mut dyn Write) -> io::Result<()> + Send + Sync + 'static) -> Answer {
    Arc::new(f)
}

fn nothing() -> Answer {
    answer(|_| Ok(()))
}

const SOME_ID: &str = "c2ceb93fb05b4153f7471f31a7bdfb9cbd3e16f7";

/// `info/refs` of a v2 server.
fn v2_info_refs() -> Answer {
    answer(|out| {
        pkt(out, b"# service=git-upload-pack\n")?;
        out.write_all(b"0000")?;
        for line in ["version 2\n", "ls-refs\n", "fetch=shallow\n"] {
            pkt(out, line.as_bytes())?;
        }
        out.write_all(b"0000")
    })
}

/// `ls-refs` naming `id` as HEAD.
fn head_is(id: String) -> Answer {
    answer(move |out| {
        pkt(out, format!("{id} HEAD\n").as_bytes())?;
        out.write_all(b"0000")
    })
}

/// A v2 fetch response carrying `pack` on side-band channel 1.
fn fetch_of(pack: impl Fn(&mut dyn Write) -> io::Result<()> + Send + Sync + 'static) -> Answer {
    answer(move |out| {
        pkt(out, b"packfile\n")?;
        let mut sideband = SideBand(out);
        pack(&mut sideband)?;
        sideband.0.write_all(b"0000")
    })
}

/// Cuts what it is given into side-band packets.
struct SideBand<'a>(&'a mut dyn Write);

impl Write for SideBand<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(65000);
        pkt(self.0, &[&[1], &buf[..n]].concat())?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A pack object header: type and inflated size.
fn object_header(kind: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest > 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

fn adler32(data: &[u8], (mut a, mut b): (u32, u32)) -> (u32, u32) {
    for chunk in data.chunks(4096) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (a, b)
}

/// A zlib stream of stored (uncompressed) blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(65535).peekable();
    if blocks.peek().is_none() {
        out.extend([1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(block);
    }
    let (a, b) = adler32(data, (1, 0));
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

/// Writes a pack of `objects` (header, object bytes) with its trailer.
fn pack_of(out: &mut dyn Write, objects: &[Vec<u8>]) -> io::Result<()> {
    let mut pack = b"PACK\0\0\0\x02".to_vec();
    pack.extend((objects.len() as u32).to_be_bytes());
    for object in objects {
        pack.extend(object);
    }
    let sum = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &pack);
    pack.extend(sum.as_ref());
    out.write_all(&pack)
}

#[test]
fn issue_9_endless_v2_capabilities_are_refused_in_bounded_memory() {
    let server = HostileServer::start(
        answer(|out| {
            pkt(out, b"version 2\n")?;
            let line = vec![b'a'; 65000];
            loop {
                pkt(out, &line)?;
            }
        }),
        nothing(),
        nothing(),
    );
    assert_bounded(&server, 76, "capabilities");
}

#[test]
fn issue_9_millions_of_refs_cost_no_memory() {
    // v0: two million refs in the advertisement, none of them HEAD.
    let v0 = HostileServer::start(
        answer(|out| {
            pkt(out, b"# service=git-upload-pack\n")?;
            out.write_all(b"0000")?;
            pkt(
                out,
                format!("{SOME_ID} refs/heads/b\0shallow side-band-64k\n").as_bytes(),
            )?;
            for i in 0..2_000_000 {
                pkt(out, format!("{SOME_ID} refs/heads/branch-{i}\n").as_bytes())?;
            }
            out.write_all(b"0000")
        }),
        nothing(),
        nothing(),
    );
    assert_bounded(&v0, 76, "no HEAD");
    // v2: the same from ls-refs, which was asked for HEAD only.
    let v2 = HostileServer::start(
        v2_info_refs(),
        answer(|out| {
            for i in 0..2_000_000 {
                pkt(out, format!("{SOME_ID} refs/heads/branch-{i}\n").as_bytes())?;
            }
            out.write_all(b"0000")
        }),
        nothing(),
    );
    assert_bounded(&v2, 76, "no HEAD");
}

/// A raw deflate stream of `prefix` then `runs` * 258 + 1 bytes 'x' (fixed Huffman codes,
/// length 258 at distance 1), wrapped in zlib: a huge object in a small pack.
fn zlib_bomb(prefix: &[u8], runs: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, value: u64, n: u32) {
            self.acc |= value << self.n;
            self.n += n;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, code: u64, n: u32) {
            let reversed = (0..n).fold(0, |r, i| r | (((code >> i) & 1) << (n - 1 - i)));
            self.put(reversed, n);
        }
    }
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // final block
    bits.put(1, 2); // fixed Huffman
    for &byte in prefix.iter().chain(b"x") {
        bits.code(0x30 + u64::from(byte), 8);
    }
    for _ in 0..runs {
        bits.code(0xc5, 8); // length 258
        bits.code(0, 5); // distance 1
    }
    bits.code(0, 7); // end of block
    bits.put(0, 7);
    let mut sums = adler32(prefix, (1, 0));
    let run = vec![b'x'; 258 * 1024];
    sums = adler32(b"x", sums);
    for _ in 0..runs / 1024 {
        sums = adler32(&run, sums);
    }
    sums = adler32(&run[..258 * (runs % 1024)], sums);
    let mut out = bits.out;
    out.extend(((sums.1 << 16) | sums.0).to_be_bytes());
    out
}

#[test]
fn issue_9_commit_with_a_huge_message_is_refused_in_bounded_memory() {
    let prefix = format!("tree {SOME_ID}\n\n");
    let runs = 512 * 1024; // 128 MiB of message
    let size = (prefix.len() + 1 + 258 * runs) as u64;
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    hasher.update(format!("commit {size}\0{prefix}").as_bytes());
    let run = vec![b'x'; 258 * 1024];
    hasher.update(b"x");
    for _ in 0..runs / 1024 {
        hasher.update(&run);
    }
    let id: String = hasher
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let object = [object_header(1, size), zlib_bomb(prefix.as_bytes(), runs)].concat();
    let server = HostileServer::start(
        v2_info_refs(),
        head_is(id.clone()),
        fetch_of(move |out| pack_of(out, std::slice::from_ref(&object))),
    );
    assert_bounded(&server, 76, "is larger than the 8 MiB limit");
}

/// A 64 KiB blob of zeros, then an OFS_DELTA copying it `copies` times: a large blob of zeros
/// in a pack of a few KiB. Returns both objects and the id of the large blob.
fn zeros_by_delta(copies: u64) -> (Vec<u8>, Vec<u8>, [u8; 20]) {
    let base = zlib_stored(&[0; 0x10000]);
    let mut delta = vec![0x80, 0x80, 0x04]; // base size 65536
    let mut result = copies << 16;
    while result >= 0x80 {
        delta.push(0x80 | (result & 0x7f) as u8);
        result >>= 7;
    }
    delta.push(result as u8);
    delta.extend(std::iter::repeat_n(0x80, copies as usize));
    let base_object = [object_header(3, 0x10000), base].concat();
    // OFS_DELTA to the object just before it.
    let mut distance = base_object.len() as u64;
    let mut encoded = vec![(distance & 0x7f) as u8];
    distance >>= 7;
    while distance > 0 {
        distance -= 1;
        encoded.push(0x80 | (distance & 0x7f) as u8);
        distance >>= 7;
    }
    encoded.reverse();
    let delta_object = [
        object_header(6, delta.len() as u64),
        encoded,
        zlib_stored(&delta),
    ]
    .concat();
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    hasher.update(format!("blob {}\0", copies << 16).as_bytes());
    for _ in 0..copies {
        hasher.update(&[0; 0x10000]);
    }
    let id = hasher.finish().as_ref().try_into().unwrap();
    (base_object, delta_object, id)
}

/// A whole object of `kind` (1 commit, 2 tree) and its id.
fn whole(kind: u8, content: &[u8]) -> (Vec<u8>, [u8; 20]) {
    let name = if kind == 1 { "commit" } else { "tree" };
    let header = format!("{name} {}\0", content.len());
    let sum = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &[header.as_bytes(), content].concat(),
    );
    let object = [
        object_header(kind, content.len() as u64),
        zlib_stored(content),
    ]
    .concat();
    (object, sum.as_ref().try_into().unwrap())
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Issue 9 #9: a delta whose result is a large blob is rebuilt in the pack file's spill area
/// and hashed as it is written, never held in memory.
#[test]
fn issue_9_delta_expanding_to_256_mib_streams_to_disk() {
    let (base_object, delta_object, _) = zeros_by_delta(4096);
    let server = HostileServer::start(
        v2_info_refs(),
        head_is(SOME_ID.into()),
        fetch_of(move |out| pack_of(out, &[base_object.clone(), delta_object.clone()])),
    );
    // The pack is sound; the wanted commit is not in it.
    assert_bounded(&server, 79, SOME_ID);
}

/// Issue 9 #9, found beside it: a symlink's target was read into memory whatever its size,
/// so a symlink to a 256 MiB blob cost 256 MiB (and a 4 GiB one an abort).
#[test]
fn issue_9_symlink_to_a_huge_blob_is_refused_in_bounded_memory() {
    let (base_object, delta_object, blob) = zeros_by_delta(4096);
    let (tree_object, tree) = whole(2, &[&b"120000 link\0"[..], &blob].concat());
    let (commit_object, commit) = whole(1, format!("tree {}\n\nm\n", hex(&tree)).as_bytes());
    let objects = [base_object, delta_object, tree_object, commit_object];
    let server = HostileServer::start(
        v2_info_refs(),
        head_is(hex(&commit)),
        fetch_of(move |out| pack_of(out, &objects)),
    );
    assert_bounded(&server, 76, "symlink");
}

#[test]
fn issue_9_pack_header_count_is_not_trusted() {
    // 2^32-1 objects claimed, then empty blobs without end.
    let endless = HostileServer::start(
        v2_info_refs(),
        head_is(SOME_ID.into()),
        fetch_of(|out| {
            out.write_all(b"PACK\0\0\0\x02\xff\xff\xff\xff")?;
            let blob = [vec![0x30], zlib_stored(b"")].concat();
            let chunk = blob.repeat(4096);
            loop {
                out.write_all(&chunk)?;
            }
        }),
    );
    assert_bounded(&endless, 76, "objects");
}

/// Issue 9 #9: as many distinct objects as the limit allows; the index must stay within the
/// goal (it cost ~145 bytes an object, 136 MiB here, before it kept only offsets and sorted ids).
#[test]
fn issue_9_index_of_the_largest_allowed_pack_is_bounded() {
    let full = HostileServer::start(
        v2_info_refs(),
        head_is(SOME_ID.into()),
        fetch_of(|out| {
            let objects: Vec<Vec<u8>> = (0..1_000_000u32)
                .map(|i| [object_header(3, 4), zlib_stored(&i.to_be_bytes())].concat())
                .collect();
            pack_of(out, &objects)
        }),
    );
    assert_bounded(&full, 79, SOME_ID);
}

#[test]
fn issue_9_8_server_text_in_errors_is_escaped() {
    for (line, shown) in [
        ("\x1b[31mred\nfake: line".to_string(), "[31mred fake"),
        (format!("\x1b[2J{} refs/heads/x", &SOME_ID[4..]), "[2J"),
    ] {
        let server = HostileServer::start(
            answer(move |out| {
                pkt(out, b"# service=git-upload-pack\n")?;
                out.write_all(b"0000")?;
                pkt(out, line.as_bytes())?;
                out.write_all(b"0000")
            }),
            nothing(),
            nothing(),
        );
        let dir = TempDir::new("git-hostile");
        initbox([
            "git-shallow",
            &server.url(),
            dir.join("dest").to_str().unwrap(),
        ])
        .run()
        .code(76)
        .stderr_has(shown)
        .stderr_lacks("\x1b")
        .stderr_lacks("\nfake");
    }
}

/// Issue 13: missing or rejected credentials (HTTP 401/403 from nginx's auth_basic) exited 76,
/// the code of a protocol error; they are 77 (permission denied), and the message names the
/// options that supply credentials.
#[test]
fn issue_13_missing_or_rejected_credentials_exit_77() {
    let (repo, commits) = rich_repo();
    let backend = GitServer::start(repo.root.path(), Behaviour::default());
    let proxy = AuthProxy::start(&backend, "deploy", "s3cret");
    let out_dir = TempDir::new("git-out");
    let dest = out_dir.join("dest");
    let dest = dest.to_str().unwrap();
    let right = out_dir.join("right");
    fs::write(&right, "s3cret\n").unwrap();
    let wrong = out_dir.join("wrong");
    fs::write(&wrong, "guess\n").unwrap();
    let url = proxy.url("/private/repo.git");
    initbox(["git-shallow", &url, dest])
        .run()
        .code(77)
        .stderr_has("401")
        .stderr_has("missing or rejected")
        .stderr_has("--password-file")
        .stderr_has("--bearer-file")
        .stderr_has("--header");
    let with_password = |file: &Path| {
        initbox([
            "git-shallow",
            &url,
            dest,
            "--username",
            "deploy",
            "--password-file",
            file.to_str().unwrap(),
        ])
    };
    with_password(&wrong)
        .run()
        .code(77)
        .stderr_has("missing or rejected")
        .stderr_lacks("guess");
    initbox(["git-shallow", &proxy.url("/forbidden/repo.git"), dest])
        .run()
        .code(77)
        .stderr_has("403");
    with_password(&right)
        .run()
        .success()
        .stdout_has(&commits[2]);
    assert!(!out_dir.join("dest").join(".git").exists());
}

/// Issue 13: a slow clone gave no sign of life until it ended. Now a clone that takes over ~2 s
/// logs its phase with bytes and objects (as JSON fields with `--log-format json`), and `-q`
/// keeps it quiet.
#[test]
fn issue_13_slow_clone_logs_progress_unless_quiet() {
    let (repo, commits) = rich_repo();
    let slow = GitServer::start(
        repo.root.path(),
        Behaviour {
            chunk_pause: Some(Duration::from_millis(60)),
            ..Behaviour::default()
        },
    );
    let out_dir = TempDir::new("git-out");
    let url = slow.url("repo.git");
    let text = out_dir.join("text");
    let outcome = initbox(["git-shallow", &url, text.to_str().unwrap()])
        .limit(Duration::from_secs(60))
        .run();
    outcome
        .success()
        .stdout_has(&commits[2])
        .stderr_has("receiving ")
        .stderr_has(" objects, ")
        .stderr_has("iB/s");
    let json = out_dir.join("json");
    let outcome = initbox([
        "git-shallow",
        &url,
        json.to_str().unwrap(),
        "--log-format",
        "json",
    ])
    .limit(Duration::from_secs(60))
    .run();
    outcome.success();
    let line = outcome
        .stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["phase"] == "receiving")
        .expect("a progress line in JSON");
    assert!(line["bytes"].as_u64().unwrap() > 0, "{line}");
    assert!(line["objects"].is_u64(), "{line}");
    let quiet = out_dir.join("quiet");
    initbox(["git-shallow", &url, quiet.to_str().unwrap(), "-q"])
        .limit(Duration::from_secs(60))
        .run()
        .success()
        .stderr_lacks("receiving");
}
