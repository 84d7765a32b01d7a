//! Multi-call dispatch, help, version, install, and the usage-error contract (exit 64).

use crate::util::{bin_target, initbox, TempDir};
use std::process::Command;

pub const APPLETS: &[&str] = &[
    "wait",
    "wait-tcp",
    "fetch",
    "render-template",
    "chmod-tree",
    "sysctl",
    "git-shallow",
    "init",
    "sleep",
];

#[test]
fn no_arguments_and_help_list_every_applet() {
    for args in [&[][..], &["--help"][..], &["-h"][..]] {
        let out = initbox(args).run();
        out.success();
        for applet in APPLETS {
            out.stdout_has(&format!("    {applet} "));
        }
        out.stdout_has("143 SIGTERM");
    }
}

#[test]
fn applet_help_shows_options_defaults_and_exit_codes() {
    for applet in APPLETS {
        let out = initbox([applet, "--help"]).run();
        out.success()
            .stdout_has(&format!("Usage: initbox {applet} "))
            .stdout_has("--timeout DURATION")
            .stdout_has("default")
            .stdout_has("EXIT CODES");
    }
}

#[test]
fn version_names_commit_target_and_applets() {
    let out = initbox(["--version"]).run();
    out.success()
        .stdout_has(concat!("initbox ", env!("CARGO_PKG_VERSION")))
        .stdout_has(&bin_target())
        .stdout_has(&format!("applets: {}", APPLETS.join(" ")));
}

#[test]
fn install_links_every_applet_and_links_dispatch_by_name() {
    let dir = TempDir::new("install");
    initbox(["--install".as_ref(), dir.path().as_os_str()])
        .run()
        .success();
    // Running it again keeps the links: an image build step may repeat.
    initbox(["--install".as_ref(), dir.path().as_os_str()])
        .run()
        .success();
    assert_eq!(dir.names(), {
        let mut names: Vec<String> = APPLETS.iter().map(|a| a.to_string()).collect();
        names.sort();
        names
    });
    for applet in APPLETS {
        let out = crate::util::Cmd::from(Command::new(dir.join(applet)))
            .env("PATH", "/usr/bin:/bin")
            .run();
        // Through the link, the first argument is already the applet's own.
        assert_ne!(out.code, Some(0));
        out.stderr_has(&format!("initbox {applet}: "));
    }
    let out = crate::util::Cmd::from({
        let mut c = Command::new(dir.join("wait-tcp"));
        c.arg("--help");
        c
    })
    .run();
    out.success().stdout_has("Usage: initbox wait-tcp ");
}

#[test]
fn hard_link_named_after_an_applet_dispatches_too() {
    let dir = TempDir::new("hardlink");
    let link = dir.join("wait-tcp");
    if std::fs::hard_link(crate::util::bin(), &link).is_err() {
        std::fs::copy(crate::util::bin(), &link).unwrap();
    }
    let mut command = Command::new(&link);
    command.args(["127.0.0.1:1", "--timeout", "100ms", "-q"]);
    crate::util::Cmd::from(command).run().code(124);
}

#[test]
fn install_refuses_a_file_in_the_way() {
    let dir = TempDir::new("install-clash");
    std::fs::write(dir.join("wait-tcp"), "mine").unwrap();
    initbox(["--install".as_ref(), dir.path().as_os_str()])
        .run()
        .code(74)
        .stderr_has("wait-tcp");
    assert_eq!(
        std::fs::read_to_string(dir.join("wait-tcp")).unwrap(),
        "mine"
    );
}

#[test]
fn usage_errors_exit_64_with_one_line_naming_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unknown applet 'frobnicate'"),
        (&["wait-tcp", "--bogus", "db:1"], "unknown option '--bogus'"),
        (&["wait-tcp"], "no TARGET given"),
        (&["wait-tcp", "db"], "invalid target 'db'"),
        (
            &["wait-tcp", "db:1", "--timeout"],
            "option '--timeout' needs a value",
        ),
        (
            &["wait-tcp", "db:1", "--timeout", "soon"],
            "invalid duration 'soon'",
        ),
        (&["wait-tcp", "db:1", "--interval", "0"], "--interval"),
        (
            &["wait-tcp", "db:1", "--log-format", "xml"],
            "unknown log format 'xml'",
        ),
        (&["--install"], "--install takes exactly one DIR"),
    ];
    for (args, needle) in cases {
        let out = initbox(*args).run();
        out.code(64).stderr_has(needle).stderr_has("--help'");
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn json_log_format_prints_one_object_per_line() {
    let out = initbox([
        "wait-tcp",
        "127.0.0.1:1",
        "--timeout",
        "200ms",
        "--log-format",
        "json",
    ])
    .run();
    out.code(124);
    for line in out.stderr.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect(line);
        assert_eq!(value["applet"], "wait-tcp");
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
        assert!(value["level"].is_string() && value["message"].is_string());
    }
    let last: serde_json::Value = serde_json::from_str(out.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert_eq!(last["exit_code"], 124);
    let env_json = initbox(["wait-tcp", "127.0.0.1:1", "--timeout", "100ms"])
        .env("INITBOX_LOG_FORMAT", "json")
        .run();
    assert!(env_json.stderr.starts_with('{'), "{}", env_json.stderr);
}

#[test]
fn quiet_keeps_only_errors() {
    let out = initbox(["wait-tcp", "127.0.0.1:1", "--timeout", "200ms", "-q"]).run();
    out.code(124);
    assert!(
        out.stderr
            .lines()
            .all(|l| l.contains("not ready") || l.contains("timed out")),
        "{}",
        out.stderr
    );
}

#[test]
fn check_args_validates_without_doing_anything() {
    // Port 1 on loopback is closed: a real run would wait and time out.
    initbox(["wait-tcp", "127.0.0.1:1", "--timeout", "1h", "--check-args"])
        .run()
        .success()
        .within(std::time::Duration::from_secs(5));
    initbox(["wait-tcp", "127.0.0.1", "--check-args"])
        .run()
        .code(64);
}

/// Issue 9 #13: words after `--` were dropped silently (exit 0) by every applet but wait-tcp.
/// Now every applet chain-loads them (issue 12): the command runs after a success, and never
/// after a failure.
#[test]
fn a_command_after_double_dash_runs_only_after_success() {
    let dir = TempDir::new("double-dash");
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).unwrap();
    let template = dir.join("t.tmpl");
    std::fs::write(&template, "x").unwrap();
    let out_file = dir.join("out");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let chain = |args: &[String]| {
        let mut args = args.to_vec();
        args.extend(["--", "/bin/sh", "-c", "echo ran after $0", "ok"].map(String::from));
        args
    };
    let succeeding = [
        vec![
            "chmod-tree".into(),
            "--mode".into(),
            "0700".into(),
            path(&tree),
        ],
        vec!["render-template".into(), path(&template), path(&out_file)],
    ];
    for args in succeeding {
        initbox(chain(&args))
            .run()
            .success()
            .stdout_has("ran after ok");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&tree).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "x");
    let failing = [
        vec![
            "chmod-tree".into(),
            "--mode".into(),
            "0700".into(),
            path(&dir.join("missing")),
        ],
        vec![
            "render-template".into(),
            path(&dir.join("missing.tmpl")),
            path(&out_file),
        ],
    ];
    for args in failing {
        let out = initbox(chain(&args)).run();
        out.code(66);
        assert!(!out.stdout.contains("ran after"), "{}", out.stdout);
    }
}

/// Issue 9 #23: `--timeout 0.0000001ms` meant "no deadline"; a nonzero value below 1 ms is 64.
#[test]
fn a_timeout_below_a_millisecond_is_a_usage_error() {
    initbox(["wait-tcp", "127.0.0.1:1", "--timeout", "0.0000001ms"])
        .run()
        .code(64)
        .stderr_has("shorter than 1ms");
}
