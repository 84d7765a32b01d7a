//! Every row of the exit-code table (as `initbox --help` prints it) is produced by a real failure
//! of the real binary: no row is documented that nothing produces.

use std::fs;
use std::net::TcpListener;
use std::process::Command;

use crate::fetch::Nginx;
use crate::util::{
    free_port, have_root, initbox, require_tool, Cmd, DnsServer, Outcome, Scratch, TempDir,
};

/// The codes listed under EXIT CODES in `initbox --help`, but 128+N (signals.rs covers it).
fn documented_codes() -> Vec<i32> {
    let help = initbox(["--help"]).run().stdout;
    let table = &help[help.find("EXIT CODES").expect("help has the table")..];
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

/// `initbox ARGS` as the unprivileged user nobody, with extra `prlimit` limits.
fn as_nobody(limits: &[&str], args: &[&str]) -> Cmd {
    let mut command = Command::new(require_tool("setpriv"));
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    command
        .arg(require_tool("prlimit"))
        .args(limits)
        .arg(crate::util::bin())
        .args(args);
    Cmd::from(command)
}

#[test]
fn every_documented_exit_code_is_produced_by_a_real_failure() {
    if !have_root("every_documented_exit_code_is_produced_by_a_real_failure") {
        return;
    }
    let nginx = Nginx::start();
    let dir = TempDir::new("exit-codes");
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let ready = open.local_addr().unwrap().to_string();
    let closed = format!("127.0.0.1:{}", free_port());
    fs::write(dir.join("strict.tmpl"), "port=${UNSET_IN_THIS_TEST}\n").unwrap();
    let root_owned = dir.join("root-owned");
    fs::create_dir(&root_owned).unwrap();
    let not_executable = dir.join("app");
    fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // A real NXDOMAIN from a real DNS server, whichever C library the binary has.
    let _dns = DnsServer::start("127.0.0.78", &[]);
    let names_only = Scratch::new()
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .file("etc/resolv.conf", "nameserver 127.0.0.78\n");

    let rows: Vec<(i32, &str, Outcome)> = vec![
        (
            0,
            "wait-tcp on an open port",
            initbox(["wait-tcp", &ready]).run(),
        ),
        (
            1,
            "no thread can be started (process limit)",
            as_nobody(&["--nproc=1"], &["wait-tcp", &closed]).run(),
        ),
        (
            64,
            "unknown option",
            initbox(["wait-tcp", "--frobnicate", &ready]).run(),
        ),
        (
            65,
            "undefined template variable",
            initbox([
                "render-template",
                &path(&dir.join("strict.tmpl")),
                &path(&dir.join("out")),
            ])
            .run(),
        ),
        (
            66,
            "missing template",
            initbox([
                "render-template",
                "/nonexistent/in.tmpl",
                &path(&dir.join("out")),
            ])
            .run(),
        ),
        (
            68,
            "name that does not exist",
            names_only
                .initbox([
                    "fetch",
                    "http://nowhere.test/x",
                    "-o",
                    "-",
                    "--retries",
                    "0",
                ])
                .run(),
        ),
        (
            69,
            "connection refused",
            initbox([
                "fetch",
                &format!("http://{closed}/"),
                "-o",
                "-",
                "--retries",
                "0",
            ])
            .run(),
        ),
        (
            74,
            "disk full",
            initbox(["fetch", &nginx.url("/hello.txt"), "-o", "-"])
                .stdout_file(
                    fs::OpenOptions::new()
                        .write(true)
                        .open("/dev/full")
                        .unwrap(),
                )
                .run(),
        ),
        (
            76,
            "HTTP 404",
            initbox(["fetch", &nginx.url("/missing"), "-o", &path(&dir.join("f"))]).run(),
        ),
        (
            77,
            "permission denied",
            as_nobody(&[], &["chmod-tree", "--mode", "0700", &path(&root_owned)]).run(),
        ),
        (
            78,
            "certificate not trusted",
            initbox([
                "fetch",
                &nginx.tls_url("/hello.txt"),
                "-o",
                "-",
                "--retries",
                "0",
            ])
            // Only the embedded roots: a machine's bundle must not matter.
            .env_remove("SSL_CERT_FILE")
            .run(),
        ),
        (
            79,
            "checksum mismatch",
            initbox([
                "fetch",
                &nginx.url("/hello.txt"),
                "-o",
                "-",
                "--sha256",
                &"0".repeat(64),
            ])
            .run(),
        ),
        (
            124,
            "deadline",
            initbox(["wait-tcp", &closed, "--timeout", "300ms"]).run(),
        ),
        (
            126,
            "command not executable",
            initbox(["wait-tcp", &ready, "--", &path(&not_executable)]).run(),
        ),
        (
            127,
            "command not found",
            initbox(["wait-tcp", &ready, "--", "/nonexistent/app"]).run(),
        ),
    ];
    for (code, why, outcome) in &rows {
        assert_eq!(
            outcome.code,
            Some(*code),
            "{why}: expected {code}\n{}\n{}",
            outcome.command,
            outcome.stderr
        );
        if *code != 0 {
            let last = outcome.stderr.lines().last().unwrap_or_default();
            assert!(last.starts_with("initbox"), "{why}: last line {last:?}");
        }
    }
    let produced: Vec<i32> = rows.iter().map(|(code, _, _)| *code).collect();
    for code in documented_codes() {
        assert!(
            produced.contains(&code),
            "exit code {code} is documented but no row produces it"
        );
    }
    // 128+N: a signal as PID 1.
    crate::signals::stop_waiting_pid1(libc::SIGTERM, 143);
}
