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
