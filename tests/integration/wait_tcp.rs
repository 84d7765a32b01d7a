//! wait-tcp against real sockets on loopback, and in the scratch harness for names and DNS.

use std::net::{TcpListener, UdpSocket};
use std::thread;
use std::time::Duration;

use crate::util::{free_port, have_root, initbox, DnsServer, Scratch};

/// Opens a listener on `address` after `delay`, and keeps it open for a while.
fn listen_later(address: String, delay: Duration) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(delay);
        let listener = TcpListener::bind(&address).unwrap();
        thread::sleep(Duration::from_secs(5));
        drop(listener);
    })
}

#[test]
fn port_that_opens_later_is_detected() {
    let port = free_port();
    let _server = listen_later(format!("127.0.0.1:{port}"), Duration::from_millis(400));
    let target = format!("127.0.0.1:{port}");
    let out = initbox(["wait-tcp", &target, "--timeout", "20s"]).run();
    out.success()
        .stderr_has("connection refused")
        .stderr_has(&format!("{target} ready after"));
    assert!(out.elapsed >= Duration::from_millis(400));
}

#[test]
fn port_that_never_opens_times_out_with_124_and_the_last_error() {
    let target = format!("127.0.0.1:{}", free_port());
    let out = initbox(["wait-tcp", &target, "--timeout", "700ms"]).run();
    out.code(124)
        .stderr_has(&format!("{target}: not ready: connection refused"))
        .stderr_has("timed out after 700ms")
        .within(Duration::from_secs(3));
    assert!(
        out.elapsed >= Duration::from_millis(700),
        "{:?}",
        out.elapsed
    );
}

#[test]
fn several_targets_are_all_awaited() {
    let (a, b) = (free_port(), free_port());
    let _first = listen_later(format!("127.0.0.1:{a}"), Duration::ZERO);
    let _second = listen_later(format!("127.0.0.1:{b}"), Duration::from_millis(500));
    let (ta, tb) = (format!("127.0.0.1:{a}"), format!("tcp://127.0.0.1:{b}"));
    let out = initbox(["wait-tcp", &ta, &tb, "--timeout", "20s"]).run();
    out.success()
        .stderr_has(&format!("{ta} ready"))
        .stderr_has(&format!("127.0.0.1:{b} ready"));
    // The second listener came 500 ms after the first: it was waited for, not found at once.
    let first = out.stderr.find(&format!("{ta} ready")).unwrap();
    let second = out.stderr.find(&format!("127.0.0.1:{b} ready")).unwrap();
    assert!(first < second, "{}", out.stderr);
}

#[test]
fn one_missing_target_fails_and_only_it_is_named() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let ready = open.local_addr().unwrap().to_string();
    let missing = format!("127.0.0.1:{}", free_port());
    let out = initbox(["wait-tcp", &ready, &missing, "--timeout", "500ms"]).run();
    out.code(124)
        .stderr_has(&format!("{ready} ready"))
        .stderr_has(&format!("{missing}: not ready"))
        .stderr_has("1 of 2 target(s) not ready");
    assert!(
        !out.stderr.contains(&format!("{ready}: not ready")),
        "{}",
        out.stderr
    );
}

#[test]
fn any_succeeds_when_one_target_is_ready() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let ready = open.local_addr().unwrap().to_string();
    let missing = format!("127.0.0.1:{}", free_port());
    initbox(["wait-tcp", "--any", &missing, &ready, "--timeout", "10s"])
        .run()
        .success()
        .within(Duration::from_secs(5));
}

#[test]
fn ipv6_loopback_in_brackets() {
    let Ok(open) = TcpListener::bind("[::1]:0") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no IPv6 loopback in CI"
        );
        eprintln!("SKIP ipv6_loopback_in_brackets: no IPv6 loopback here");
        return;
    };
    let target = format!("[::1]:{}", open.local_addr().unwrap().port());
    initbox(["wait-tcp", &target, "--timeout", "10s"])
        .run()
        .success()
        .stderr_has("ready");
}

#[test]
fn connection_is_probed_and_closed_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    initbox(["wait-tcp", &target]).run().success();
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    // A clean close is an orderly end of stream (FIN), not a reset.
    let read = std::io::Read::read_to_end(&mut stream, &mut rest);
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
}

#[test]
fn command_after_double_dash_replaces_initbox() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = open.local_addr().unwrap().to_string();
    let out = initbox([
        "wait-tcp",
        &target,
        "--",
        "/bin/sh",
        "-c",
        "echo became $0; exit 7",
        "app",
    ])
    .run();
    out.code(7).stdout_has("became app");
}

#[test]
fn command_not_found_is_127_and_not_executable_126() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = open.local_addr().unwrap().to_string();
    initbox(["wait-tcp", &target, "--", "/nonexistent/app"])
        .run()
        .code(127)
        .stderr_has("/nonexistent/app: command not found");
    let dir = crate::util::TempDir::new("noexec");
    let script = dir.join("app");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    initbox([
        "wait-tcp".as_ref(),
        target.as_ref(),
        "--".as_ref(),
        script.as_os_str(),
    ])
    .run()
    .code(126)
    .stderr_has("cannot execute");
}

#[test]
fn name_that_appears_later_in_etc_hosts_is_found() {
    if !have_root("name_that_appears_later_in_etc_hosts_is_found") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A nameserver that answers, so each attempt's DNS step is quick under any C library.
    let _dns = DnsServer::start("127.0.0.80", &[]);
    let scratch = Scratch::new()
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .file("etc/resolv.conf", "nameserver 127.0.0.80\n");
    let hosts = scratch.root.join("etc/hosts");
    let target = format!("db.internal:{port}");
    let running = scratch
        .initbox(["wait-tcp", &target, "--timeout", "20s"])
        .spawn();
    thread::sleep(Duration::from_millis(500));
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.1 db.internal\n").unwrap();
    let out = running.finish();
    out.success()
        .stderr_has(&format!("{target}: db.internal: "))
        .stderr_has("attempt 1,")
        .stderr_has(&format!("{target} ready"));
    assert!(out.elapsed >= Duration::from_millis(500));
}

#[test]
fn deadline_holds_while_the_dns_server_never_answers() {
    if !have_root("deadline_holds_while_the_dns_server_never_answers") {
        return;
    }
    // A resolver that receives queries and never answers: glibc would wait 30 s per attempt.
    let silent = UdpSocket::bind("127.0.0.77:53").expect("bind the silent DNS server");
    let scratch = Scratch::new()
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .file(
            "etc/resolv.conf",
            "nameserver 127.0.0.77\noptions timeout:30 attempts:5\n",
        );
    let out = scratch
        .initbox(["wait-tcp", "db.example.test:5432", "--timeout", "1s"])
        .run();
    out.code(124)
        .stderr_has("name resolution did not answer")
        .within(Duration::from_secs(4));
    let mut query = [0u8; 512];
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(
        silent.recv(&mut query).is_ok(),
        "the resolver was never asked"
    );
}

/// Kubernetes' resolv.conf: short names get the namespace's search suffixes (ndots:5), tried in
/// order, and the first that exists is used. musl applies them as glibc does.
#[test]
fn search_suffixes_of_a_kubernetes_resolv_conf_are_applied() {
    if !have_root("search_suffixes_of_a_kubernetes_resolv_conf_are_applied") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dns = DnsServer::start(
        "127.0.0.79",
        &[("db.prod.svc.cluster.local", "127.0.0.1".parse().unwrap())],
    );
    let scratch = Scratch::new()
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .file(
            "etc/resolv.conf",
            "nameserver 127.0.0.79\n\
         search prod.svc.cluster.local svc.cluster.local cluster.local\n\
         options ndots:5\n",
        );
    scratch
        .initbox(["wait-tcp", &format!("db:{port}"), "--timeout", "10s"])
        .run()
        .success();
    assert!(
        dns.asked()
            .iter()
            .any(|name| name == "db.prod.svc.cluster.local"),
        "asked: {:?}",
        dns.asked()
    );
    // A name that exists nowhere: every suffix is tried, and wait-tcp keeps waiting for it.
    scratch
        .initbox(["wait-tcp", &format!("nothing:{port}"), "--timeout", "1s"])
        .run()
        .code(124)
        .stderr_has("nothing: name not resolved yet");
    let asked = dns.asked();
    for name in [
        "nothing.prod.svc.cluster.local",
        "nothing.svc.cluster.local",
        "nothing.cluster.local",
    ] {
        assert!(
            asked.iter().any(|n| n == name),
            "{name} not asked: {asked:?}"
        );
    }
}

/// Issue 9 #16: a name that resolves to a port that refuses was reported as "name resolution
/// did not answer in time", because the deadline cut the last lookup short; the real last error
/// is the refused connection.
#[test]
fn a_resolved_name_whose_port_refuses_reports_the_refusal() {
    if !have_root("a_resolved_name_whose_port_refuses_reports_the_refusal") {
        return;
    }
    let scratch = Scratch::new().file("etc/hosts", "127.0.0.1 localhost db.internal\n");
    let target = format!("db.internal:{}", free_port());
    for _ in 0..3 {
        let out = scratch
            .initbox(["wait-tcp", &target, "--timeout", "700ms"])
            .run();
        out.code(124)
            .stderr_has(&format!("{target}: not ready: 127.0.0.1:"))
            .stderr_has("connection refused (attempt")
            .stderr_lacks("name resolution");
    }
}
