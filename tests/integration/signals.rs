//! SIGTERM and SIGINT as PID 1 of a scratch container: obeyed at once, 128+N.

use std::time::Duration;

use crate::util::{have_root, scratch_pid1, wait_until, Scratch};

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
