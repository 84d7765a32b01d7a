//! `sysctl` against the real /proc/sys of fresh network namespaces (`unshare --net`), so the
//! host's settings are never touched; values are checked with `cat` in the same namespace.

use std::process::Command;

use crate::util::{bin, have_root, initbox, require_tool, Cmd, ProcMount, Scratch, TempDir};

/// Runs the shell `script` in a new network namespace; `$0` is the initbox binary.
fn in_new_netns(script: &str) -> Cmd {
    let mut command = Command::new(require_tool("unshare"));
    command.args(["--net", "--", "sh", "-c", script]).arg(bin());
    Cmd::from(command)
}

#[test]
fn writes_namespaced_keys_and_reads_them_back() {
    if !have_root("writes_namespaced_keys_and_reads_them_back") {
        return;
    }
    let out = in_new_netns(
        "\"$0\" sysctl net.core.somaxconn=1234 'net.ipv4.ip_local_port_range=2000   3000' \
         net/ipv4/tcp_keepalive_time=77 && echo --- && \
         cat /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/ip_local_port_range \
         /proc/sys/net/ipv4/tcp_keepalive_time",
    )
    .run();
    out.success();
    assert_eq!(
        out.stdout,
        "net.core.somaxconn = 1234\n\
         net.ipv4.ip_local_port_range = 2000 3000\n\
         net/ipv4/tcp_keepalive_time = 77\n\
         ---\n1234\n2000\t3000\n77\n"
    );
}

#[test]
fn a_key_alone_is_read() {
    if !have_root("a_key_alone_is_read") {
        return;
    }
    let out = in_new_netns(
        "echo 4321 > /proc/sys/net/core/somaxconn && \"$0\" sysctl net.core.somaxconn",
    )
    .run();
    out.success();
    assert_eq!(out.stdout, "net.core.somaxconn = 4321\n");
}

#[test]
fn conf_files_apply_in_order_and_the_command_line_wins() {
    if !have_root("conf_files_apply_in_order_and_the_command_line_wins") {
        return;
    }
    let dir = TempDir::new("sysctl-conf");
    std::fs::write(
        dir.join("a.conf"),
        "# tuning\n; procps comment\n\nnet.core.somaxconn = 1000\n\
         -net.core.no_such_key = 1\n  net.ipv4.tcp_keepalive_time=600  \n",
    )
    .unwrap();
    std::fs::write(dir.join("b.conf"), "net.core.somaxconn=2000\n").unwrap();
    let script = format!(
        "\"$0\" sysctl -p {a} --load {b} net.ipv4.tcp_keepalive_time=90 && \
         cat /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/tcp_keepalive_time",
        a = dir.join("a.conf").display(),
        b = dir.join("b.conf").display()
    );
    let out = in_new_netns(&script).run();
    out.success()
        .stderr_has("net.core.no_such_key")
        .stderr_has("ignored");
    assert_eq!(
        out.stdout,
        "net.core.somaxconn = 1000\nnet.ipv4.tcp_keepalive_time = 600\n\
         net.core.somaxconn = 2000\nnet.ipv4.tcp_keepalive_time = 90\n2000\n90\n"
    );
}

#[test]
fn malformed_lines_are_all_reported_and_nothing_is_set() {
    if !have_root("malformed_lines_are_all_reported_and_nothing_is_set") {
        return;
    }
    let dir = TempDir::new("sysctl-bad");
    let conf = dir.join("bad.conf");
    std::fs::write(
        &conf,
        "net.core.somaxconn = 999\nthis is not a setting\nnet..core = 1\n",
    )
    .unwrap();
    let script = format!(
        "echo 4096 > /proc/sys/net/core/somaxconn; \"$0\" sysctl -p {}; echo \"exit $?\"; \
         cat /proc/sys/net/core/somaxconn",
        conf.display()
    );
    let out = in_new_netns(&script).run();
    out.success()
        .stdout_has("exit 65\n4096\n")
        .stderr_has(&format!("{}:2: expected 'key = value'", conf.display()))
        .stderr_has(&format!("{}:3: invalid key 'net..core'", conf.display()))
        .stderr_has("nothing was set");
}

#[test]
fn unknown_keys_exit_66_and_other_settings_still_apply() {
    if !have_root("unknown_keys_exit_66_and_other_settings_still_apply") {
        return;
    }
    let out = in_new_netns(
        "\"$0\" sysctl net.core.bogus_key=1 net.core.somaxconn=555; echo \"exit $?\"; \
         cat /proc/sys/net/core/somaxconn",
    )
    .run();
    out.success()
        .stdout_has("net.core.somaxconn = 555\nexit 66\n555\n")
        .stderr_has("net.core.bogus_key: unknown key");
}

#[test]
fn write_only_keys_report_the_value_written() {
    if !have_root("write_only_keys_report_the_value_written") {
        return;
    }
    // Mode 0200: even root cannot read it back.
    let out = in_new_netns("\"$0\" sysctl net.ipv4.route.flush=1").run();
    out.success();
    assert_eq!(out.stdout, "net.ipv4.route.flush = 1\n");
}

#[test]
fn values_the_kernel_refuses_exit_65() {
    if !have_root("values_the_kernel_refuses_exit_65") {
        return;
    }
    in_new_netns("\"$0\" sysctl net.core.somaxconn=lots")
        .run()
        .code(65)
        .stderr_has("net.core.somaxconn: the kernel refused the value 'lots'");
}

#[test]
fn keys_outside_proc_sys_are_usage_errors() {
    for key in [
        "net/../../etc/passwd=x",
        "net..core=1",
        "/etc/shadow",
        "a. b=1",
    ] {
        initbox(["sysctl", key])
            .run()
            .code(64)
            .stderr_has("invalid key");
    }
    initbox(["sysctl"])
        .run()
        .code(64)
        .stderr_has("no KEY=VALUE");
}

#[test]
fn missing_conf_file_exits_66() {
    initbox(["sysctl", "-p", "/nonexistent/sysctl.conf"])
        .run()
        .code(66)
        .stderr_has("/nonexistent/sysctl.conf");
}

#[test]
fn scratch_sets_a_key_in_its_own_network_namespace() {
    if !have_root("scratch_sets_a_key_in_its_own_network_namespace") {
        return;
    }
    let scratch = Scratch::new()
        .isolated_network(false)
        .with_proc(ProcMount::ReadWrite)
        .file(
            "etc/sysctl.conf",
            "net.ipv4.ip_local_port_range = 40000 50000\n",
        );
    let out = scratch
        .initbox([
            "sysctl",
            "-p",
            "/etc/sysctl.conf",
            "net.core.somaxconn=8192",
        ])
        .run();
    out.success();
    assert_eq!(
        out.stdout,
        "net.ipv4.ip_local_port_range = 40000 50000\nnet.core.somaxconn = 8192\n"
    );
}

#[test]
fn read_only_proc_sys_exits_77_with_the_kubernetes_hint() {
    if !have_root("read_only_proc_sys_exits_77_with_the_kubernetes_hint") {
        return;
    }
    let scratch = Scratch::new()
        .isolated_network(false)
        .with_proc(ProcMount::ReadOnly);
    scratch
        .initbox(["sysctl", "net.core.somaxconn=8192"])
        .run()
        .code(77)
        .stderr_has("net.core.somaxconn")
        .stderr_has("read-only")
        .stderr_has("securityContext.sysctls")
        .stderr_has("privileged initContainer");
}

/// Issue 9 #21: a non-UTF-8 byte in a conf file was an I/O error (74) with no line; it is a
/// malformed line (65, `file:line`), and a comment may hold any bytes, as procps ignores it.
#[test]
fn a_non_utf8_byte_is_a_malformed_line_named_by_its_number() {
    if !have_root("a_non_utf8_byte_is_a_malformed_line_named_by_its_number") {
        return;
    }
    let dir = TempDir::new("sysctl-latin1");
    let conf = dir.join("latin1.conf");
    std::fs::write(
        &conf,
        b"# r\xe9glages\nnet.core.somaxconn = 999\nkernel.x = caf\xe9\n".as_slice(),
    )
    .unwrap();
    let script = format!(
        "echo 4096 > /proc/sys/net/core/somaxconn; \"$0\" sysctl -p {}; echo \"exit $?\"; \
         cat /proc/sys/net/core/somaxconn",
        conf.display()
    );
    let out = in_new_netns(&script).run();
    out.success()
        .stdout_has("exit 65\n4096\n")
        .stderr_has(&format!("{}:3: not valid UTF-8", conf.display()))
        .stderr_lacks(":1:");
}
