//! The one HTTP option set (issue 10): every applet that speaks HTTP accepts and refuses the same
//! values, checked with `--check-args` over one table, so the parsers cannot drift apart again.

use crate::util::{initbox, TempDir};

/// Each applet that takes the HTTP options, with the rest of a valid command line. (`wait`
/// joins this list when its http:// targets land.)
fn applets(dir: &TempDir) -> Vec<(&'static str, Vec<String>)> {
    let dest = dir.join("dest").display().to_string();
    vec![
        (
            "fetch",
            vec!["http://127.0.0.1:9/f".into(), "-o".into(), dest.clone()],
        ),
        ("git-shallow", vec!["http://127.0.0.1:9/r.git".into(), dest]),
    ]
}

/// Good option values: accepted by every applet. None of these files exists: `--check-args`
/// reads no file and no variable.
const GOOD: &[&[&str]] = &[
    &["--ca-file", "/nonexistent/ca.pem"],
    &["--ca-file", "a.pem", "--ca-file", "b.pem", "--ca-file-only"],
    &[
        "--cert",
        "/nonexistent/c.pem",
        "--key",
        "/nonexistent/k.pem",
    ],
    &["--connect-timeout", "1"],
    &["--connect-timeout", "500ms"],
    &["--read-timeout", "1m30s"],
    &["--header", "X-Api-Key: k", "--header", "Accept: */*"],
    &["--header-from-env", "Authorization=SOME_VAR"],
    &["--bearer-file", "/nonexistent/token"],
    &["--basic-auth-from-env", "CREDS"],
    &["--retries", "0"],
    &["--retries", "10"],
];

/// Bad option values: refused (64) by every applet.
const BAD: &[&[&str]] = &[
    // Issue 10: git-shallow accepted a zero connect timeout that fetch refused.
    &["--connect-timeout", "0"],
    &["--read-timeout", "0"],
    &["--connect-timeout", "soon"],
    &["--ca-file-only"],
    &["--cert", "c.pem"],
    &["--key", "k.pem"],
    &["--header", "no colon"],
    &["--header", "Bad Name: v"],
    &["--header-from-env", "NoEquals"],
    &["--header-from-env", "=VAR"],
    &["--retries", "-1"],
    &["--retries", "many"],
    &["--bearer-file", "t", "--basic-auth-from-env", "CREDS"],
    &["--ca-file"],
];

/// Issue 10: fetch and git-shallow parsed the HTTP options twice, with rules that had drifted
/// (`--connect-timeout 0`, `--ca-file-only` only in fetch, `--header` only in fetch).
#[test]
fn issue_10_every_http_applet_takes_the_same_options() {
    let dir = TempDir::new("http-options");
    for (applet, rest) in applets(&dir) {
        for options in GOOD {
            let mut args: Vec<String> = vec![applet.into(), "--check-args".into()];
            args.extend(options.iter().map(|s| s.to_string()));
            args.extend(rest.iter().cloned());
            initbox(&args).run().success();
        }
        for options in BAD {
            let mut args: Vec<String> = vec![applet.into(), "--check-args".into()];
            args.extend(options.iter().map(|s| s.to_string()));
            args.extend(rest.iter().cloned());
            initbox(&args).run().code(64);
        }
    }
}

/// Every HTTP applet documents the options in the one shared help block.
#[test]
fn issue_10_every_http_applet_shows_the_http_options_block() {
    let dir = TempDir::new("http-help");
    for (applet, _) in applets(&dir) {
        let out = initbox([applet, "--help"]).run();
        out.success()
            .stdout_has("HTTP OPTIONS")
            .stdout_has("--cert PEM, --key PEM");
    }
}
