//! `git-shallow --submodules` (issue 13) against Debian's real `git http-backend`, compared with
//! `git clone --depth 1 --recurse-submodules --shallow-submodules`; credentials per host through
//! real nginx `auth_basic`; hostile `.gitmodules`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::git_server::{git, snapshot, AuthProxy, Behaviour, GitServer};
use crate::util::{initbox, TempDir};

/// Repositories under one served root: work trees in `src/NAME`, bare copies as `NAME.git`.
struct Forge {
    root: TempDir,
}

impl Forge {
    fn new() -> Forge {
        Forge {
            root: TempDir::new("git-forge"),
        }
    }

    fn work(&self, name: &str) -> PathBuf {
        let work = self.root.join("src").join(name);
        if !work.exists() {
            fs::create_dir_all(&work).unwrap();
            git(&work, &["init", "-q"]);
        }
        work
    }

    /// Writes `files` (path, content) into NAME's work tree, records `gitlinks` (path, commit)
    /// and commits; returns the commit id.
    fn commit(&self, name: &str, files: &[(&str, &str)], gitlinks: &[(&str, &str)]) -> String {
        let work = self.work(name);
        for (path, content) in files {
            let path = work.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        git(&work, &["add", "-A"]);
        for (path, commit) in gitlinks {
            git(
                &work,
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    &format!("160000,{commit},{path}"),
                ],
            );
        }
        git(&work, &["commit", "-q", "--allow-empty", "-m", "change"]);
        git(&work, &["rev-parse", "HEAD"])
    }

    /// (Re)publishes NAME as the bare `NAME.git` the server serves; `by_id` sets
    /// `uploadpack.allowReachableSHA1InWant`, which v0 fetches of a non-tip commit need.
    fn publish(&self, name: &str, by_id: bool) {
        let bare = self.root.join(format!("{name}.git"));
        let _ = fs::remove_dir_all(&bare);
        git(
            self.root.path(),
            &[
                "clone",
                "-q",
                "--bare",
                "--no-local",
                &format!("src/{name}"),
                &format!("{name}.git"),
            ],
        );
        git(
            &bare,
            &[
                "config",
                "uploadpack.allowReachableSHA1InWant",
                &by_id.to_string(),
            ],
        );
    }
}

fn gitmodules(entries: &[(&str, &str, &str)]) -> String {
    entries
        .iter()
        .map(|(name, path, url)| {
            format!("[submodule \"{name}\"]\n\tpath = {path}\n\turl = {url}\n")
        })
        .collect()
}

/// superproject `super` with `lib` (relative URL, pinned to a commit that is not lib's tip,
/// itself holding `deps/nested`, relative to lib's URL), `vendor/tools` (absolute URL) and
/// `again/lib` (lib at the same commit once more), and `skipped`, whose `update = none` leaves
/// it empty.
struct Project {
    forge: Forge,
    server: GitServer,
    superproject: String,
}

fn project(behaviour: Behaviour, by_id: bool) -> Project {
    let forge = Forge::new();
    let server = GitServer::start(forge.root.path(), behaviour);
    let nested = forge.commit("nested", &[("n.txt", "nested\n")], &[]);
    forge.publish("nested", by_id);
    let lib_pinned = forge.commit(
        "lib",
        &[
            ("include/lib.h", "int lib;\n"),
            ("src/lib.c", "int lib = 1;\n"),
            (
                ".gitmodules",
                &gitmodules(&[("nested", "deps/nested", "../nested.git")]),
            ),
        ],
        &[("deps/nested", &nested)],
    );
    forge.commit("lib", &[("include/lib.h", "int lib2;\n")], &[]);
    forge.publish("lib", by_id);
    let tools = forge.commit("tools", &[("tool.sh", "echo tool\n")], &[]);
    forge.publish("tools", by_id);
    let superproject = forge.commit(
        "super",
        &[
            ("README", "super\n"),
            (
                ".gitmodules",
                &(gitmodules(&[
                    ("lib", "lib", "../lib.git"),
                    ("tools", "vendor/tools", &server.url("tools.git")),
                    ("lib-again", "again/lib", "../lib.git"),
                    ("skipped", "skipped", "../tools.git"),
                ]) + "\tupdate = none\n"),
            ),
        ],
        &[
            ("lib", &lib_pinned),
            ("vendor/tools", &tools),
            ("again/lib", &lib_pinned),
            ("skipped", &tools),
        ],
    );
    forge.publish("super", by_id);
    Project {
        forge,
        server,
        superproject,
    }
}

fn git_clone_recursive(url: &str) -> TempDir {
    let scratch = TempDir::new("git-reference");
    git(
        scratch.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            "--recurse-submodules",
            "--shallow-submodules",
            url,
            "ref",
        ],
    );
    scratch
}

#[track_caller]
fn assert_same_tree(expected: &Path, actual: &Path) {
    let (expected, actual) = (snapshot(expected), snapshot(actual));
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>()
    );
    for (path, node) in &expected {
        assert!(actual[path] == *node, "{path} differs from git clone");
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".initbox-"))
        .collect()
}

#[test]
fn issue_13_recursive_clone_matches_git_clone_recurse_submodules() {
    let p = project(Behaviour::default(), false);
    let out = TempDir::new("git-out");
    let dest = out.join("app");
    let d = dest.to_str().unwrap();
    let url = p.server.url("super.git");
    initbox(["git-shallow", &url, d, "--submodules", "recursive"])
        .run()
        .success()
        .stdout_has(&p.superproject)
        .stderr_has("5 submodules");
    let reference = git_clone_recursive(&url);
    assert_same_tree(&reference.join("ref"), &dest);
    assert_eq!(
        fs::read_to_string(dest.join("lib/include/lib.h")).unwrap(),
        "int lib;\n",
        "the recorded commit, not lib's tip"
    );
    assert!(leftovers(out.path()).is_empty());

    // Again: nothing is fetched.
    let before = p.server.requests.load(std::sync::atomic::Ordering::SeqCst);
    initbox(["git-shallow", &url, d, "--submodules", "recursive"])
        .run()
        .success()
        .stderr_has("already holds");
    let after = p.server.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        after - before <= 2,
        "fetched again: {} requests",
        after - before
    );

    // The same commit with other options is redone without --replace.
    initbox(["git-shallow", &url, d, "--submodules", "shallow"])
        .run()
        .success()
        .stderr_has("deps/nested");
    assert!(dest.join("lib/include/lib.h").exists());
    assert_eq!(
        fs::read_dir(dest.join("lib/deps/nested")).unwrap().count(),
        0
    );
    initbox(["git-shallow", &url, d])
        .run()
        .success()
        .stderr_has("--submodules recursive");
    assert_eq!(fs::read_dir(dest.join("lib")).unwrap().count(), 0);
    assert!(leftovers(out.path()).is_empty());
}

/// A gitlink may record a commit that no branch or tag reaches any more (force-pushed away).
/// git's protocol v2 sends it; a v0 server only with `uploadpack.allowAnySHA1InWant`. Without it
/// the error names the submodule and the setting, and nothing is installed.
#[test]
fn issue_13_a_commit_no_ref_reaches_needs_the_server_setting_and_says_so() {
    for v0_only in [false, true] {
        let forge = Forge::new();
        let server = GitServer::start(
            forge.root.path(),
            Behaviour {
                v0_only,
                ..Behaviour::default()
            },
        );
        forge.commit("lib", &[("lib.h", "tip\n")], &[]);
        let lost = forge.commit("lib", &[("lib.h", "force-pushed away\n")], &[]);
        git(&forge.work("lib"), &["reset", "-q", "--hard", "HEAD~1"]);
        forge.publish("lib", true);
        let bare = forge.root.join("lib.git");
        git(&bare, &["fetch", "-q", "../src/lib", &lost]);
        forge.commit(
            "super",
            &[(".gitmodules", &gitmodules(&[("lib", "lib", "../lib.git")]))],
            &[("lib", &lost)],
        );
        forge.publish("super", true);
        let out = TempDir::new("git-out");
        let dest = out.join("app");
        let run = || {
            initbox([
                "git-shallow",
                &server.url("super.git"),
                dest.to_str().unwrap(),
                "--submodules",
                "shallow",
            ])
            .run()
        };
        if v0_only {
            run()
                .code(76)
                .stderr_has("submodule 'lib'")
                .stderr_has("uploadpack.allowAnySHA1InWant");
            assert!(!dest.exists(), "nothing installed");
            assert!(leftovers(out.path()).is_empty());
            git(&bare, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        }
        run().success();
        assert_eq!(
            fs::read_to_string(dest.join("lib/lib.h")).unwrap(),
            "force-pushed away\n",
            "v0 only: {v0_only}"
        );
    }
}

/// Over protocol v0, git itself wants `uploadpack.allowReachableSHA1InWant` advertised before it
/// asks for lib's pinned commit, which is not a branch tip.
#[test]
fn issue_13_recursive_clone_from_a_v0_server() {
    let v0 = Behaviour {
        v0_only: true,
        ..Behaviour::default()
    };
    let p = project(v0, true);
    let out = TempDir::new("git-out");
    let dest = out.join("app");
    let url = p.server.url("super.git");
    initbox([
        "git-shallow",
        &url,
        dest.to_str().unwrap(),
        "--submodules",
        "recursive",
    ])
    .run()
    .success();
    assert_same_tree(&git_clone_recursive(&url).join("ref"), &dest);
}

/// One credential for the main host, another for the vendor's; each goes only to its own host.
#[test]
fn issue_13_each_host_gets_its_own_credential() {
    let forge = Forge::new();
    let backend = GitServer::start(forge.root.path(), Behaviour::default());
    let main = AuthProxy::start(&backend, "deploy", "main-secret");
    let vendor = AuthProxy::start(&backend, "vendor", "vendor-secret");
    let tools = forge.commit("tools", &[("tool.sh", "echo tool\n")], &[]);
    forge.publish("tools", false);
    let lib = forge.commit("lib", &[("lib.h", "int lib;\n")], &[]);
    forge.publish("lib", false);
    forge.commit(
        "super",
        &[(
            ".gitmodules",
            &gitmodules(&[
                ("lib", "lib", "../lib.git"),
                ("tools", "tools", &vendor.url("/private/tools.git")),
            ]),
        )],
        &[("lib", &lib), ("tools", &tools)],
    );
    forge.publish("super", false);
    let out = TempDir::new("git-out");
    let secrets = out.join("vendor-auth");
    fs::write(&secrets, "vendor:vendor-secret\n").unwrap();
    let dest = out.join("app");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "git-shallow".to_string(),
            main.url("/private/super.git"),
            dest.to_str().unwrap().to_string(),
            "--submodules".into(),
            "recursive".into(),
            "--username".into(),
            "deploy".into(),
            "--password-env".into(),
            "MAIN_PASSWORD".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        initbox(args)
            .env("MAIN_PASSWORD", "main-secret")
            .env("VENDOR_AUTH", "vendor:vendor-secret")
            .env("WRONG_AUTH", "vendor:guess")
            .run()
    };
    // Without the vendor's credential, the main one is not tried on the vendor's host.
    run(&[])
        .code(77)
        .stderr_has("submodule 'tools'")
        .stderr_has("--credential")
        .stderr_lacks("main-secret");
    let prefix = vendor.url("/private");
    run(&["--credential", &format!("{prefix}=WRONG_AUTH")])
        .code(77)
        .stderr_has("submodule 'tools'")
        .stderr_lacks("guess");
    assert!(!dest.exists());
    run(&["--credential", &format!("{prefix}=VENDOR_AUTH")]).success();
    assert!(dest.join("tools/tool.sh").exists() && dest.join("lib/lib.h").exists());
    fs::remove_dir_all(&dest).unwrap();
    run(&[
        "--credential-file",
        &format!("{prefix}={}", secrets.display()),
    ])
    .success();
    assert!(dest.join("tools/tool.sh").exists());
    assert!(leftovers(out.path()).is_empty());
}

/// Each hostile `.gitmodules` exits 76 naming the problem, before DEST is touched.
#[test]
fn issue_13_hostile_gitmodules_are_refused() {
    let forge = Forge::new();
    let server = GitServer::start(forge.root.path(), Behaviour::default());
    let lib = forge.commit("lib", &[("lib.h", "int lib;\n")], &[]);
    forge.publish("lib", false);
    let out = TempDir::new("git-out");
    let dest = out.join("app");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("keep"), "kept").unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "ext transport",
            gitmodules(&[("lib", "lib", "ext::sh -c touch% /tmp/pwned")]),
            "submodule 'lib'",
        ),
        (
            "file URL",
            gitmodules(&[("lib", "lib", "file:///etc")]),
            "file",
        ),
        (
            "ssh URL",
            gitmodules(&[("lib", "lib", "git@github.com:org/lib.git")]),
            "submodule 'lib'",
        ),
        (
            "option-like URL",
            gitmodules(&[("lib", "lib", "-u./payload")]),
            "submodule 'lib'",
        ),
        (
            "name climbing out (CVE-2018-11235)",
            gitmodules(&[("../../modules/evil", "lib", "../lib.git")]),
            "..",
        ),
        (
            "gitlink without an entry",
            gitmodules(&[("other", "other", "../lib.git")]),
            "does not name",
        ),
        (
            "path that is a file of the tree",
            gitmodules(&[("lib", "lib", "../lib.git"), ("x", "README", "../lib.git")]),
            "README",
        ),
        (
            "path through .git",
            gitmodules(&[("lib", ".git/hooks", "../lib.git")]),
            ".git",
        ),
    ];
    for (i, (case, modules, needle)) in cases.into_iter().enumerate() {
        let name = format!("super{i}");
        forge.commit(
            &name,
            &[("README", "r\n"), (".gitmodules", &modules)],
            &[("lib", &lib)],
        );
        forge.publish(&name, false);
        let outcome = initbox([
            "git-shallow",
            &server.url(&format!("{name}.git")),
            dest.to_str().unwrap(),
            "--replace",
            "--submodules",
            "recursive",
        ])
        .run();
        assert_eq!(outcome.code, Some(76), "{case}: {}", outcome.stderr);
        outcome.stderr_has(needle);
        assert_eq!(
            fs::read_to_string(dest.join("keep")).ok().as_deref(),
            Some("kept"),
            "{case}: DEST was touched"
        );
        assert!(leftovers(out.path()).is_empty(), "{case}");
    }
}

/// A submodule that cannot be fetched leaves DEST as it was: the install is all or nothing.
#[test]
fn issue_13_a_failing_submodule_leaves_dest_as_it_was() {
    let p = project(Behaviour::default(), false);
    let out = TempDir::new("git-out");
    let dest = out.join("app");
    let d = dest.to_str().unwrap();
    let url = p.server.url("super.git");
    initbox(["git-shallow", &url, d]).run().success();
    let before = snapshot(&dest);
    fs::remove_dir_all(p.forge.root.join("nested.git")).unwrap();
    initbox(["git-shallow", &url, d, "--submodules", "recursive"])
        .run()
        .code(76)
        .stderr_has("submodule 'nested'")
        .stderr_has("lib/deps/nested");
    assert!(snapshot(&dest) == before, "DEST changed");
    assert!(leftovers(out.path()).is_empty());
    assert!(leftovers(&dest).is_empty());
}

/// `--sparse`: only the named paths and the directories above them, into submodules too; the
/// rest of each file is what `git clone` writes. A path that names nothing is an error.
#[test]
fn issue_13_sparse_paths_reach_into_submodules() {
    let p = project(Behaviour::default(), false);
    let out = TempDir::new("git-out");
    let dest = out.join("app");
    let d = dest.to_str().unwrap();
    let url = p.server.url("super.git");
    let sparse = |paths: &[&str]| {
        let mut args = vec!["git-shallow", url.as_str(), d, "--submodules", "recursive"];
        for path in paths {
            args.extend(["--sparse", path]);
        }
        initbox(args).run()
    };
    sparse(&["lib/include", "README"]).success();
    let reference = git_clone_recursive(&url);
    let wanted = |path: &str| {
        ["README", "lib/include"].iter().any(|w| {
            path == *w || path.starts_with(&format!("{w}/")) || w.starts_with(&format!("{path}/"))
        })
    };
    let expected: Vec<_> = snapshot(&reference.join("ref"))
        .into_iter()
        .filter(|(path, _)| wanted(path))
        .collect();
    let actual: Vec<_> = snapshot(&dest).into_iter().collect();
    assert_eq!(
        expected.iter().map(|e| &e.0).collect::<Vec<_>>(),
        actual.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    assert!(expected == actual, "contents differ from git clone");

    // Other paths on the same commit: redone without --replace. Into a nested submodule too.
    sparse(&["lib/deps/nested/n.txt"]).success();
    assert!(dest.join("lib/deps/nested/n.txt").exists());
    assert!(!dest.join("README").exists() && !dest.join("lib/include").exists());

    sparse(&["lib/nothing", "vendor"])
        .code(66)
        .stderr_has("lib/nothing")
        .stderr_lacks("vendor,");
    initbox(["git-shallow", &url, d, "--sparse", "lib/include"])
        .run()
        .code(66)
        .stderr_has("--submodules");
    initbox(["git-shallow", &url, d, "--sparse", "../etc"])
        .run()
        .code(64);
    assert!(dest.join("lib/deps/nested/n.txt").exists(), "DEST kept");
    assert!(leftovers(out.path()).is_empty());
}

/// With `--sparse`, a server that offers `filter` (uploadpack.allowFilter) sends the commit and
/// trees without blobs, then only the blobs the paths need, into submodules too; one that does
/// not sends everything. The checkout is the same either way.
#[test]
fn issue_13_sparse_fetches_only_the_needed_blobs_where_the_server_filters() {
    let forge = Forge::new();
    let server = GitServer::start(forge.root.path(), Behaviour::default());
    let many: Vec<(String, String)> = (0..300)
        .map(|i| (format!("assets/a{i}.txt"), format!("asset {i}\n")))
        .collect();
    let mut lib_files: Vec<(&str, &str)> =
        many.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    lib_files.push(("include/lib.h", "int lib;\n"));
    let lib = forge.commit("lib", &lib_files, &[]);
    let mut files = lib_files.clone();
    files.retain(|(p, _)| p.starts_with("assets/"));
    files.push(("README", "super\n"));
    let modules = gitmodules(&[("lib", "lib", "../lib.git")]);
    files.push((".gitmodules", &modules));
    forge.commit("super", &files, &[("lib", &lib)]);
    let out = TempDir::new("git-out");
    let objects = |filter: bool, dest: &str| {
        for name in ["lib", "super"] {
            forge.publish(name, false);
            git(
                &forge.root.join(format!("{name}.git")),
                &["config", "uploadpack.allowFilter", &filter.to_string()],
            );
        }
        let outcome = initbox([
            "git-shallow",
            &server.url("super.git"),
            out.join(dest).to_str().unwrap(),
            "--submodules",
            "recursive",
            "--sparse",
            "README",
            "--sparse",
            "lib/include",
            "--log-format",
            "json",
        ])
        .run();
        outcome.success();
        assert_eq!(
            outcome.stderr.contains("filter blob:none"),
            filter,
            "{}",
            outcome.stderr
        );
        let done = outcome
            .stderr
            .lines()
            .find(|l| l.contains("\"files\""))
            .unwrap_or_else(|| panic!("no summary: {}", outcome.stderr));
        let value: serde_json::Value = serde_json::from_str(done).unwrap();
        value["objects"].as_u64().unwrap()
    };
    let filtered = objects(true, "filtered");
    let whole = objects(false, "whole");
    assert!(filtered < 10, "{filtered} objects with the filter");
    assert!(whole > 300, "{whole} objects without it");
    assert!(snapshot(&out.join("filtered")) == snapshot(&out.join("whole")));
    assert!(out.join("filtered/lib/include/lib.h").exists());
    assert!(!out.join("filtered/assets").exists());
}

/// The new options are checked before any work; secrets are read only when the job runs.
#[test]
fn issue_13_submodule_options_are_checked_before_any_work() {
    let out = TempDir::new("git-out");
    let dest = out.join("never");
    let d = dest.to_str().unwrap();
    let url = "http://127.0.0.1:1/r.git";
    let check = |extra: &[&str]| {
        let mut args = vec!["git-shallow", "--check-args", url, d];
        args.extend(extra);
        initbox(args).run()
    };
    check(&[
        "--submodules",
        "recursive",
        "--sparse",
        "lib/include",
        "--credential",
        "https://git.example/org=NOT_SET_ANYWHERE_42",
        "--credential-file",
        "https://vendor.example=/nonexistent/auth",
    ])
    .success();
    for (bad, needle) in [
        (vec!["--submodules", "yes"], "recursive, shallow or off"),
        (
            vec!["--submodules", "shallow", "--fail-on-submodules"],
            "--fail-on-submodules",
        ),
        (vec!["--sparse", "../etc"], "--sparse"),
        (vec!["--sparse", "/"], "--sparse"),
        (
            vec!["--credential", "https://git.example/org"],
            "URL_PREFIX=",
        ),
        (vec!["--credential", "ssh://git.example/org=VAR"], "http"),
        (
            vec!["--credential-file", "https://u:p@git.example/=/x"],
            "no user",
        ),
    ] {
        check(&bad).code(64).stderr_has(needle);
    }
    initbox([
        "git-shallow",
        url,
        d,
        "--credential",
        "https://git.example/org=NOT_SET_ANYWHERE_42",
    ])
    .run()
    .code(66)
    .stderr_has("NOT_SET_ANYWHERE_42");
    assert!(!dest.exists());
}
