//! Signals: SIGTERM and SIGINT as PID 1 of a scratch container, every other terminating signal
//! outside one; obeyed at once, temporaries removed, 128+N.

use std::fs;
use std::os::fd::FromRawFd;
use std::time::Duration;

use crate::fetch::Nginx;
use crate::util::{have_root, initbox, scratch_pid1, wait_until, Scratch, TempDir};

pub fn stop_waiting_pid1(signal: i32, expected_code: i32) {
    // No network at all: wait-tcp would wait until its (long) deadline.
    let scratch = Scratch::new().isolated_network(false);
    let running = scratch
        .initbox(["wait-tcp", "127.0.0.1:5432", "--timeout", "1h"])
        .spawn();
    let pid1 = scratch_pid1(&running);
    // Let it get past start-up into its waiting loop.
    wait_until("the first attempt", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid1}/status"))
            .map(|s| s.contains("Threads:\t3") || s.contains("Threads:\t4"))
            .unwrap_or(false)
    });
    running.signal(signal, pid1);
    let out = running.finish();
    out.code(expected_code).within(Duration::from_secs(5));
    assert!(
        out.stderr.contains("stopped by SIG"),
        "no reason printed:\n{}",
        out.stderr
    );
}

#[test]
fn sigterm_as_pid1_exits_143() {
    if have_root("sigterm_as_pid1_exits_143") {
        stop_waiting_pid1(libc::SIGTERM, 143);
    }
}

#[test]
fn sigint_as_pid1_exits_130() {
    if have_root("sigint_as_pid1_exits_130") {
        stop_waiting_pid1(libc::SIGINT, 130);
    }
}

#[test]
fn failure_reason_goes_to_the_termination_log_capped_at_4_kib() {
    if !have_root("failure_reason_goes_to_the_termination_log_capped_at_4_kib") {
        return;
    }
    // The kubelet creates the file; initbox only writes it when it exists.
    let scratch = Scratch::new()
        .file("dev/termination-log", "")
        .isolated_network(false);
    let out = scratch
        .initbox(["wait-tcp", "127.0.0.1:5432", "--timeout", "200ms", "-q"])
        .run();
    out.code(124);
    let reason = std::fs::read_to_string(scratch.root.join("dev/termination-log")).unwrap();
    assert!(
        reason.starts_with("initbox wait-tcp: 1 of 1 target(s) not ready: 127.0.0.1:5432"),
        "{reason:?}"
    );
    assert_eq!(reason.trim_end(), out.stderr.lines().last().unwrap());

    // 400 targets make a reason longer than Kubernetes keeps: it is cut at 4096 bytes.
    let targets: Vec<String> = (1..=400).map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec![
        "wait-tcp".to_string(),
        "--timeout".into(),
        "200ms".into(),
        "-q".into(),
    ];
    args.extend(targets);
    scratch.initbox(&args).run().code(124);
    let reason = std::fs::read_to_string(scratch.root.join("dev/termination-log")).unwrap();
    assert_eq!(reason.len(), 4096);

    // Without the file nothing is created.
    let bare = Scratch::new().isolated_network(false);
    bare.initbox(["wait-tcp", "127.0.0.1:1", "--timeout", "100ms"])
        .run()
        .code(124);
    assert!(!bare.root.join("dev/termination-log").exists());
}

/// Issue 9 #25: every signal whose default action ends the process (not only TERM and INT) ends
/// a download with 128+N and removes its temporary, also when initbox is not PID 1.
#[test]
fn every_terminating_signal_cleans_up_and_exits_128_plus_n() {
    let nginx = Nginx::start();
    fs::write(nginx.www("slow/big.bin"), vec![7u8; 8 << 20]).unwrap();
    let dir = TempDir::new("signals-all");
    let dest = dir.join("config");
    fs::write(&dest, "old").unwrap();
    for signal in [
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGPWR,
    ] {
        let running = initbox([
            "fetch",
            &nginx.url("/slow/big.bin"),
            "-o",
            dest.to_str().unwrap(),
        ])
        .spawn();
        // The temporary may be unnamed (O_TMPFILE): wait until the download holds it open.
        wait_until("the temporary file", Duration::from_secs(10), || {
            holds_a_file_in(running.pid(), dir.path())
        });
        running.signal(signal, running.pid());
        let out = running.finish();
        out.code(128 + signal).within(Duration::from_secs(5));
        out.stderr_has("stopped by SIG");
        assert_eq!(dir.names(), ["config"], "signal {signal}");
        assert_eq!(fs::read_to_string(&dest).unwrap(), "old");
    }
}

/// Whether process `pid` has a file in `dir` open (named or unnamed: `/proc` shows both by path).
fn holds_a_file_in(pid: i32, dir: &std::path::Path) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| fs::read_link(fd.path()).ok())
                .any(|target| target.starts_with(dir))
        })
        .unwrap_or(false)
}

/// Issue 9 #25, SIGPIPE: writing `-o -` into a pipe nobody reads ends at once with an error,
/// neither killed silently mid-way nor hanging.
#[test]
fn a_closed_stdout_pipe_ends_the_download() {
    let nginx = Nginx::start();
    fs::write(nginx.www("big.bin"), vec![7u8; 8 << 20]).unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here, once each.
    let (reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    let out = initbox(["fetch", &nginx.url("/big.bin"), "-o", "-"])
        .stdout_file(writer)
        .run();
    out.code(74)
        .stderr_has("stdout: Broken pipe")
        .within(Duration::from_secs(5));
}
