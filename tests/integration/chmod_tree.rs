//! `chmod-tree` on real trees: modes and owners, only-what-differs (ctime unchanged), symlinks
//! never followed (also while a directory is being swapped for one), errors that do not stop the
//! walk, and the scratch harness.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::util::{bin, have_root, initbox, require_tool, Cmd, Scratch, TempDir};

fn mode(path: impl AsRef<Path>) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn owner(path: impl AsRef<Path>) -> (u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

fn set_mode(path: impl AsRef<Path>, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// tree/{a.txt, run.sh(0755), sub/{b.txt, deep/c.txt}, link -> outside, filelink -> outside/f}
/// and outside/{f, g/h}, all 0755/0644 and owned by root.
fn sample(dir: &TempDir) {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("sub/deep")).unwrap();
    fs::create_dir_all(dir.join("outside/g")).unwrap();
    for file in [
        "tree/a.txt",
        "tree/sub/b.txt",
        "tree/sub/deep/c.txt",
        "outside/f",
        "outside/g/h",
    ] {
        fs::write(dir.join(file), "x").unwrap();
        set_mode(dir.join(file), 0o644);
    }
    fs::write(tree.join("run.sh"), "#!/bin/sh\n").unwrap();
    set_mode(tree.join("run.sh"), 0o755);
    set_mode(dir.join("outside"), 0o755);
    set_mode(dir.join("outside/g"), 0o755);
    symlink(dir.join("outside"), tree.join("link")).unwrap();
    symlink(dir.join("outside/f"), tree.join("filelink")).unwrap();
}

fn assert_outside_untouched(dir: &TempDir) {
    for (path, expected) in [
        ("outside", 0o755),
        ("outside/g", 0o755),
        ("outside/f", 0o644),
        ("outside/g/h", 0o644),
    ] {
        assert_eq!(mode(dir.join(path)), expected, "{path} mode changed");
        assert_eq!(owner(dir.join(path)), (0, 0), "{path} owner changed");
    }
}

#[test]
fn modes_and_owners_over_a_tree_never_through_symlinks() {
    if !have_root("modes_and_owners_over_a_tree_never_through_symlinks") {
        return;
    }
    let dir = TempDir::new("chmod-tree");
    sample(&dir);
    let tree = dir.join("tree");
    let out = initbox([
        "chmod-tree".as_ref(),
        "--dir-mode".as_ref(),
        "0750".as_ref(),
        "--file-mode".as_ref(),
        "u=rwX,g=rX,o=".as_ref(),
        "--owner".as_ref(),
        "1234:2345".as_ref(),
        tree.as_os_str(),
    ])
    .run();
    out.success()
        .stderr_has("3 dirs, 4 files, 2 symlinks seen; changed 7; 0 errors");
    for d in ["", "sub", "sub/deep"] {
        assert_eq!(mode(tree.join(d)), 0o750, "{d}");
        assert_eq!(owner(tree.join(d)), (1234, 2345), "{d}");
    }
    assert_eq!(mode(tree.join("a.txt")), 0o640);
    assert_eq!(mode(tree.join("sub/deep/c.txt")), 0o640);
    assert_eq!(mode(tree.join("run.sh")), 0o750);
    assert_eq!(owner(tree.join("sub/b.txt")), (1234, 2345));
    // The links themselves are left alone too.
    assert_eq!(owner(tree.join("link")), (0, 0));
    assert_outside_untouched(&dir);
}

#[test]
fn a_second_run_changes_nothing_and_touches_no_ctime() {
    if !have_root("a_second_run_changes_nothing_and_touches_no_ctime") {
        return;
    }
    let dir = TempDir::new("chmod-tree-again");
    sample(&dir);
    let tree = dir.join("tree");
    let args = [
        "chmod-tree".as_ref(),
        "--mode".as_ref(),
        "go-w".as_ref(),
        "--group".as_ref(),
        "77".as_ref(),
        tree.as_os_str(),
    ];
    initbox(args).run().success();
    let ctime = |p: &str| fs::symlink_metadata(tree.join(p)).unwrap().ctime_nsec();
    let before: Vec<i64> = ["", "a.txt", "sub", "sub/deep/c.txt"]
        .iter()
        .map(|p| ctime(p))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    initbox(args).run().success().stderr_has("changed 0;");
    let after: Vec<i64> = ["", "a.txt", "sub", "sub/deep/c.txt"]
        .iter()
        .map(|p| ctime(p))
        .collect();
    assert_eq!(before, after);
}

/// Regression guard for the attack the design is about: a directory of the tree replaced by a
/// symlink to a directory outside while the walk runs.
#[test]
fn a_directory_swapped_for_a_symlink_during_the_walk_changes_nothing_outside() {
    if !have_root("a_directory_swapped_for_a_symlink_during_the_walk_changes_nothing_outside") {
        return;
    }
    let dir = TempDir::new("chmod-tree-swap");
    sample(&dir);
    let tree = dir.join("tree");
    // Enough entries that the walk is inside `victim` while it is being swapped.
    fs::create_dir_all(tree.join("victim")).unwrap();
    // The same names outside, so a walk that used paths would hit them after a swap.
    for i in 0..2000 {
        fs::write(tree.join(format!("victim/f{i}")), "").unwrap();
        fs::write(dir.join(format!("outside/f{i}")), "").unwrap();
        set_mode(dir.join(format!("outside/f{i}")), 0o644);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = Arc::clone(&stop);
        let victim = tree.join("victim");
        let aside = dir.join("victim.real");
        let outside = dir.join("outside");
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::SeqCst) {
                fs::rename(&victim, &aside).unwrap();
                symlink(&outside, &victim).unwrap();
                std::thread::yield_now();
                fs::remove_file(&victim).unwrap();
                fs::rename(&aside, &victim).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    for _ in 0..30 {
        let out = initbox([
            "chmod-tree".as_ref(),
            "--mode".as_ref(),
            "0700".as_ref(),
            "--owner".as_ref(),
            "4242:4242".as_ref(),
            "-q".as_ref(),
            tree.as_os_str(),
        ])
        .run();
        // Errors (entries vanishing mid-walk) are fine; following the link is not.
        assert!(
            matches!(out.code, Some(0) | Some(74) | Some(66)),
            "{}",
            out.stderr
        );
        // Reset, so every run has work to do.
        let _ = Command::new("chmod")
            .args(["-R", "0755"])
            .arg(&tree)
            .status();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(swapper.join().unwrap() > 0);
    assert_outside_untouched(&dir);
    for i in 0..2000 {
        let path = dir.join(format!("outside/f{i}"));
        assert_eq!(
            (mode(&path), owner(&path)),
            (0o644, (0, 0)),
            "{}",
            path.display()
        );
    }
}

#[test]
fn missing_paths_exit_66_after_the_others_are_done_and_mkdir_creates_them() {
    let dir = TempDir::new("chmod-tree-missing");
    fs::create_dir_all(dir.join("present")).unwrap();
    set_mode(dir.join("present"), 0o755);
    let missing = dir.join("missing/data");
    initbox([
        "chmod-tree".as_ref(),
        "--mode".as_ref(),
        "0700".as_ref(),
        missing.as_os_str(),
        dir.join("present").as_os_str(),
    ])
    .run()
    .code(66)
    .stderr_has(&format!("{}: does not exist", missing.display()));
    assert_eq!(mode(dir.join("present")), 0o700);

    initbox([
        "chmod-tree".as_ref(),
        "--mkdir".as_ref(),
        "--mode".as_ref(),
        "0700".as_ref(),
        missing.as_os_str(),
    ])
    .run()
    .success();
    assert_eq!(mode(&missing), 0o700);
}

#[test]
fn permission_errors_exit_77_and_the_walk_goes_on() {
    if !have_root("permission_errors_exit_77_and_the_walk_goes_on") {
        return;
    }
    let dir = TempDir::new("chmod-tree-eperm");
    sample(&dir);
    let tree = dir.join("tree");
    // An unprivileged user owns one file; everything else is root's.
    Command::new("chown")
        .arg("65534")
        .arg(tree.join("sub/b.txt"))
        .status()
        .unwrap();
    set_mode(dir.path(), 0o755);
    let mut command = Command::new(require_tool("setpriv"));
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .args(["chmod-tree", "--mode", "0600"])
        .arg(&tree);
    let out = Cmd::from(command).run();
    out.code(77)
        .stderr_has(&format!(
            "{}: cannot change mode: Operation not permitted",
            tree.join("a.txt").display()
        ))
        .stderr_has("errors (each reported above)");
    // The one file it may change was changed, although earlier entries failed.
    assert_eq!(mode(tree.join("sub/b.txt")), 0o600);
}

#[test]
fn dry_run_lists_changes_and_changes_nothing() {
    let dir = TempDir::new("chmod-tree-dry");
    fs::create_dir_all(dir.join("t/sub")).unwrap();
    fs::write(dir.join("t/sub/f"), "").unwrap();
    set_mode(dir.join("t/sub/f"), 0o644);
    set_mode(dir.join("t/sub"), 0o755);
    set_mode(dir.join("t"), 0o700);
    let out = initbox([
        "chmod-tree".as_ref(),
        "--dry-run".as_ref(),
        "--mode".as_ref(),
        "u=rwX,go=".as_ref(),
        dir.join("t").as_os_str(),
    ])
    .run();
    out.success()
        .stdout_has(&format!(
            "mode 0755 -> 0700 {}",
            dir.join("t/sub").display()
        ))
        .stdout_has(&format!(
            "mode 0644 -> 0600 {}",
            dir.join("t/sub/f").display()
        ))
        .stderr_has("would change 2;");
    assert_eq!(out.stdout.lines().count(), 2);
    assert_eq!(mode(dir.join("t/sub")), 0o755);
    let missing = dir.join("new/data");
    initbox([
        "chmod-tree".as_ref(),
        "--dry-run".as_ref(),
        "--mkdir".as_ref(),
        "--mode".as_ref(),
        "0700".as_ref(),
        missing.as_os_str(),
    ])
    .run()
    .success()
    .stdout_has(&format!("create {}", missing.display()));
    assert!(!dir.join("new").exists());
}

#[test]
fn if_root_mismatch_skips_a_tree_whose_top_is_right() {
    let dir = TempDir::new("chmod-tree-root");
    fs::create_dir_all(dir.join("t/sub")).unwrap();
    set_mode(dir.join("t"), 0o2770);
    set_mode(dir.join("t/sub"), 0o755);
    let run = || {
        initbox([
            "chmod-tree".as_ref(),
            "--if-root-mismatch".as_ref(),
            "--mode".as_ref(),
            "0770".as_ref(),
            dir.join("t").as_os_str(),
        ])
        .run()
    };
    // 0770 keeps the set-group-ID bit of directories (4 digits), so the top already matches.
    run()
        .success()
        .stderr_has("walk skipped (--if-root-mismatch)");
    assert_eq!(mode(dir.join("t/sub")), 0o755);
    set_mode(dir.join("t"), 0o2755);
    run().success().stderr_has("changed 2;");
    assert_eq!(
        (mode(dir.join("t")), mode(dir.join("t/sub"))),
        (0o2770, 0o770)
    );
}

#[test]
fn one_file_system_stays_off_mounts() {
    if !have_root("one_file_system_stays_off_mounts") {
        return;
    }
    let dir = TempDir::new("chmod-tree-mounts");
    fs::create_dir_all(dir.join("t/mnt")).unwrap();
    fs::write(dir.join("t/f"), "").unwrap();
    let script = "mount -t tmpfs -o mode=0755 tmpfs \"$1/t/mnt\" && touch \"$1/t/mnt/inner\" && \
                  chmod 0644 \"$1/t/mnt/inner\" && \
                  \"$0\" chmod-tree --one-file-system --mode 0600 \"$1/t\" && \
                  stat -c %a \"$1/t/mnt\" \"$1/t/mnt/inner\" \"$1/t/f\"";
    let mut command = Command::new(require_tool("unshare"));
    command
        .args(["--mount", "--", "sh", "-c", script])
        .arg(bin())
        .arg(dir.path());
    let out = Cmd::from(command).run();
    out.success()
        .stderr_has("1 directories on other filesystems skipped")
        .stdout_has("755\n644\n600\n");
}

#[test]
fn names_need_passwd_and_usage_errors() {
    initbox(["chmod-tree", "/tmp"])
        .run()
        .code(64)
        .stderr_has("nothing to change");
    initbox(["chmod-tree", "--mode", "0700"])
        .run()
        .code(64)
        .stderr_has("no PATH");
    initbox(["chmod-tree", "--mode", "u+q", "/x"])
        .run()
        .code(64)
        .stderr_has("unknown permission 'q'");
    initbox(["chmod-tree", "--owner", "no-such-user-x", "/x"])
        .run()
        .code(64)
        .stderr_has("'no-such-user-x' is not in /etc/passwd");
    let dir = TempDir::new("chmod-tree-names");
    initbox([
        "chmod-tree".as_ref(),
        "--owner".as_ref(),
        "root:root".as_ref(),
        dir.path().as_os_str(),
    ])
    .run()
    .success();
}

#[test]
fn scratch_creates_and_owns_a_data_directory() {
    if !have_root("scratch_creates_and_owns_a_data_directory") {
        return;
    }
    let scratch = Scratch::new().file("app/data/old.db", "x");
    scratch
        .initbox(["chmod-tree", "--owner", "nobody", "/app/data"])
        .run()
        .code(64)
        .stderr_has("/etc/passwd cannot be read: scratch images have none, use numeric IDs");
    scratch
        .initbox([
            "chmod-tree",
            "--mkdir",
            "--mode",
            "u=rwX,go=",
            "--owner",
            "65532:65532",
            "/app/data",
            "/app/cache/tmp",
        ])
        .run()
        .success()
        .stderr_has("0 errors");
    assert_eq!(owner(scratch.root.join("app/data/old.db")), (65532, 65532));
    assert_eq!(mode(scratch.root.join("app/data/old.db")), 0o600);
    assert_eq!(mode(scratch.root.join("app/cache/tmp")), 0o700);
    assert_eq!(owner(scratch.root.join("app/cache/tmp")), (65532, 65532));
}

/// Runs initbox with `prefix` (setpriv, sh -c ...) in front.
fn run_as(prefix: &[&str], args: &[&std::ffi::OsStr]) -> crate::util::Outcome {
    let mut command = Command::new(require_tool(prefix[0]));
    command.args(&prefix[1..]).arg(bin()).args(args);
    Cmd::from(command).run()
}

/// The README's initContainer as root with only CAP_CHOWN and CAP_FOWNER.
const CHOWN_FOWNER_ONLY: &[&str] = &[
    "setpriv",
    "--inh-caps=-all",
    "--bounding-set=-all,+chown,+fowner",
    "--",
];
/// An unprivileged user with no capabilities.
const USER_65532: &[&str] = &[
    "setpriv",
    "--reuid=65532",
    "--regid=65532",
    "--clear-groups",
    "--",
];

/// A volume as Kubernetes hands it over: owned 65532, mode 755, a root-owned file and
/// subdirectory inside.
pub fn volume(dir: &TempDir) -> std::path::PathBuf {
    let data = dir.join("data");
    fs::create_dir_all(data.join("app/sub")).unwrap();
    fs::write(data.join("app/f"), "x").unwrap();
    fs::write(data.join("app/sub/g"), "x").unwrap();
    set_mode(data.join("app/f"), 0o644);
    set_mode(data.join("app/sub/g"), 0o644);
    set_mode(data.join("app/sub"), 0o755);
    set_mode(data.join("app"), 0o755);
    std::os::unix::fs::chown(data.join("app"), Some(65532), Some(65532)).unwrap();
    data.join("app")
}

/// Issue 9 #2: with only CHOWN and FOWNER (no DAC_OVERRIDE) the walk restricted a directory
/// before reading it (77 "cannot examine it"), and `--if-root-mismatch` opened the top before
/// looking at it (77 "cannot open it" on every restart).
#[test]
fn issue_9_2_least_privilege_walk_enters_before_restricting() {
    if !have_root("issue_9_2_least_privilege_walk_enters_before_restricting") {
        return;
    }
    let dir = TempDir::new("chmod-tree-caps");
    let app = volume(&dir);
    let args: Vec<&std::ffi::OsStr> = [
        "chmod-tree",
        "--mkdir",
        "--if-root-mismatch",
        "--owner",
        "65532:65532",
        "--dir-mode",
        "0750",
        "--file-mode",
        "u=rwX,g=rX,o=",
    ]
    .iter()
    .map(|a| a.as_ref())
    .chain([app.as_os_str()])
    .collect();
    run_as(CHOWN_FOWNER_ONLY, &args)
        .success()
        .stderr_has("changed 4; 0 errors");
    for (path, wanted) in [("", 0o750), ("sub", 0o750), ("f", 0o640), ("sub/g", 0o640)] {
        assert_eq!(mode(app.join(path)), wanted, "{path}");
        assert_eq!(owner(app.join(path)), (65532, 65532), "{path}");
    }
    // The restart: the top is right and no longer open to root without DAC_OVERRIDE.
    run_as(CHOWN_FOWNER_ONLY, &args)
        .success()
        .stderr_has("walk skipped (--if-root-mismatch)");
}

/// Issue 9 #3: `link/` (and `link/.`) resolved the symlink and changed its target.
#[test]
fn issue_9_3_trailing_slash_or_dot_does_not_follow_a_symlink() {
    let dir = TempDir::new("chmod-tree-slash");
    fs::create_dir(dir.join("decoy")).unwrap();
    set_mode(dir.join("decoy"), 0o755);
    symlink(dir.join("decoy"), dir.join("link")).unwrap();
    for suffix in ["/", "//", "/.", "/./"] {
        let path = format!("{}{suffix}", dir.join("link").display());
        initbox(["chmod-tree", "--mode", "0777", &path])
            .run()
            .code(65)
            .stderr_has("is a symlink");
        assert_eq!(mode(dir.join("decoy")), 0o755, "{path}");
    }
    // A real directory with a trailing slash is still walked.
    let path = format!("{}/", dir.join("decoy").display());
    initbox(["chmod-tree", "--mode", "0700", &path])
        .run()
        .success();
    assert_eq!(mode(dir.join("decoy")), 0o700);
}

/// Issue 9 #10: one descriptor per level ran out of descriptors in deep trees (EMFILE at depth
/// ~1018 under `ulimit -n 1024`); here 300 levels under `ulimit -n 64`.
#[test]
fn issue_9_10_deep_trees_need_a_bounded_number_of_descriptors() {
    let dir = TempDir::new("chmod-tree-deep");
    let top = dir.join("t");
    fs::create_dir(&top).unwrap();
    let mut fd = fs::File::open(&top).unwrap();
    let name = c"d";
    for _ in 0..300 {
        use std::os::fd::{AsRawFd, FromRawFd};
        // A file beside each directory: some are listed after it, so are left for when the walk
        // comes back to a level it had closed.
        // SAFETY: the name is NUL-terminated; fd is open; the new descriptor is closed at once.
        let file = unsafe {
            libc::openat(
                fd.as_raw_fd(),
                c"f".as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            )
        };
        assert!(file >= 0);
        // SAFETY: file is a fresh descriptor of ours.
        unsafe { libc::close(file) };
        // SAFETY: name is NUL-terminated; fd is open.
        let made = unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755) };
        assert_eq!(made, 0);
        // SAFETY: as above; the new descriptor is owned by the File.
        let next = unsafe { libc::openat(fd.as_raw_fd(), name.as_ptr(), libc::O_RDONLY) };
        assert!(next >= 0);
        // SAFETY: next is a fresh descriptor.
        fd = unsafe { fs::File::from_raw_fd(next) };
    }
    fs::write(dir.join("t").join("d/".repeat(300)).join("leaf"), "x").unwrap();
    let out = run_as(
        &["sh", "-c", "ulimit -n 64 && exec \"$0\" \"$@\""],
        &[
            "chmod-tree".as_ref(),
            "--mode".as_ref(),
            "u=rwX,go=".as_ref(),
            top.as_os_str(),
        ],
    );
    out.success()
        .stderr_has("301 dirs, 301 files")
        .stderr_has("changed 602; 0 errors");
    for depth in [0, 1, 100, 299] {
        assert_eq!(
            mode(dir.join("t").join("d/".repeat(depth)).join("f")),
            0o600
        );
    }
    let leaf = dir.join("t").join("d/".repeat(300)).join("leaf");
    assert_eq!(mode(leaf), 0o600);
    assert_eq!(mode(dir.join("t").join("d/".repeat(150))), 0o700);
}

/// Issue 9 #15: a directory the caller owns but cannot read (mode 000) was not repaired, as
/// `chmod -R u=rwX` does: its mode is fixed first, then it is entered.
#[test]
fn issue_9_15_an_owned_unreadable_directory_is_repaired_then_entered() {
    if !have_root("issue_9_15_an_owned_unreadable_directory_is_repaired_then_entered") {
        return;
    }
    let dir = TempDir::new("chmod-tree-000");
    let tree = dir.join("t");
    fs::create_dir_all(tree.join("locked/inner")).unwrap();
    fs::write(tree.join("locked/f"), "x").unwrap();
    for path in ["", "locked", "locked/inner", "locked/f"] {
        std::os::unix::fs::chown(tree.join(path), Some(65532), Some(65532)).unwrap();
    }
    set_mode(tree.join("locked/f"), 0o000);
    set_mode(tree.join("locked/inner"), 0o000);
    set_mode(tree.join("locked"), 0o000);
    run_as(
        USER_65532,
        &[
            "chmod-tree".as_ref(),
            "--mode".as_ref(),
            "u=rwX".as_ref(),
            tree.as_os_str(),
        ],
    )
    .success()
    .stderr_has("0 errors");
    assert_eq!(mode(tree.join("locked")), 0o700);
    assert_eq!(mode(tree.join("locked/inner")), 0o700);
    assert_eq!(mode(tree.join("locked/f")), 0o600);
}

/// Issue 9 #20: 4294967295 is chown's "leave unchanged" (-1): it was accepted as an owner,
/// changed nothing and reported changes.
#[test]
fn issue_9_20_owner_or_group_minus_one_is_a_usage_error() {
    let dir = TempDir::new("chmod-tree-minus-one");
    for args in [
        ["--owner", "4294967295"],
        ["--owner", "1:4294967295"],
        ["--owner", ":4294967295"],
        ["--group", "4294967295"],
    ] {
        initbox([
            "chmod-tree".as_ref(),
            args[0].as_ref(),
            args[1].as_ref(),
            dir.path().as_os_str(),
        ])
        .run()
        .code(64)
        .stderr_has("4294967295");
    }
}
