//! `wait` against the real servers (issue 11): PostgreSQL, MariaDB and Redis from Debian packages,
//! started in the test's temporary directory on loopback ports, as an unprivileged user where
//! the server demands it. No protocol is mocked.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{free_port, have_root, initbox, require_tool, wait_until, Cmd, Outcome, TempDir};

/// A server process, stopped (and reaped) when the test ends, however it ends.
struct Server {
    child: Child,
    /// PostgreSQL wants SIGQUIT (immediate shutdown, backends too); the others die by SIGKILL.
    stop_signal: i32,
}

impl Server {
    fn start(command: &mut Command, stop_signal: i32) -> Server {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Server { child, stop_signal }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory effects; the pid is our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(self.stop_signal);
        let _ = self.child.wait();
    }
}

#[track_caller]
fn run_ok(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `initbox wait ...` started now, while the server is not up yet.
fn wait_in_background(args: &[&str]) -> crate::util::Running {
    initbox([&["wait"], args].concat()).spawn()
}

// ---- PostgreSQL ----

fn postgres_bin(tool: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("postgresql is not installed");
    let mut dirs: Vec<PathBuf> = versions.map(|v| v.unwrap().path()).collect();
    dirs.sort();
    let path = dirs.last().unwrap().join("bin").join(tool);
    assert!(
        path.exists(),
        "{} missing: install postgresql",
        path.display()
    );
    path
}

/// `command` run as the `postgres` user, as initdb and postgres insist.
fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(require_tool("setpriv"));
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
    command
}

/// A data directory made by initdb (trust authentication), owned by `postgres`.
fn initdb(temp: &TempDir) -> PathBuf {
    run_ok(
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(temp.path()),
    );
    let data = temp.join("pgdata");
    run_ok(
        as_postgres(postgres_bin("initdb"))
            .args(["--auth=trust", "--no-sync", "--username=postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null()),
    );
    data
}

fn start_postgres(temp: &TempDir, data: &Path, port: u16) -> Server {
    Server::start(
        as_postgres(postgres_bin("postgres"))
            .arg("-D")
            .arg(data)
            .arg("-k")
            .arg(temp.path())
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"]),
        libc::SIGQUIT,
    )
}

/// What pg_isready says right now: 0 accepting, 1 rejecting (57P03), 2 no response.
fn pg_isready(port: u16) -> i32 {
    Command::new(postgres_bin("pg_isready"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[test]
fn postgres_started_after_the_wait_is_ready_once_it_accepts_connections() {
    if !have_root("postgres_started_after_the_wait") {
        return;
    }
    let temp = TempDir::new("wait-pg");
    let data = initdb(&temp);
    let port = free_port();
    let target = format!("postgres://app@127.0.0.1:{port}/app");
    let waiting = wait_in_background(&[&target, "--timeout", "60s"]);
    std::thread::sleep(Duration::from_millis(300));
    let _server = start_postgres(&temp, &data, port);
    let out = waiting.finish();
    out.success()
        .stderr_has("connection refused")
        .stderr_has(&format!("postgres://127.0.0.1:{port}/app ready after"));
    assert_eq!(pg_isready(port), 0, "wait said ready before pg_isready");
}

/// Issue 11: a smart shutdown with a session still open answers 57P03 to new connections; the
/// port is open, but the database is not ready.
#[test]
fn postgres_answering_57p03_is_not_ready() {
    if !have_root("postgres_answering_57p03_is_not_ready") {
        return;
    }
    let temp = TempDir::new("wait-pg-57p03");
    let data = initdb(&temp);
    let port = free_port();
    let server = start_postgres(&temp, &data, port);
    wait_until("postgres to accept", Duration::from_secs(30), || {
        pg_isready(port) == 0
    });
    let _session = Server::start(
        Command::new(postgres_bin("psql"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-c", "select pg_sleep(60)"]),
        libc::SIGKILL,
    );
    wait_until("the session to start", Duration::from_secs(20), || {
        let out = Command::new(postgres_bin("psql"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-Atc", "select count(*) from pg_stat_activity where query like '%pg_sleep(60)%' and pid <> pg_backend_pid()"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    });
    server.signal(libc::SIGTERM); // smart shutdown: waits for the session
    wait_until(
        "pg_isready to say rejecting",
        Duration::from_secs(20),
        || pg_isready(port) == 1,
    );
    let target = format!("postgres://127.0.0.1:{port}");
    initbox(["wait", &target, "--timeout", "1s"])
        .run()
        .code(124)
        .stderr_has("postgres: the database system is shutting down (57P03)")
        .stderr_has(&format!("postgres://127.0.0.1:{port}: not ready"));
}

// ---- Redis ----

fn start_redis(dir: &Path, port: u16, extra: &[&str]) -> Server {
    Server::start(
        Command::new(require_tool("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--appendonly", "no"])
            .args(extra),
        libc::SIGKILL,
    )
}

fn redis_cli(port: u16, password: &str, command: &[&str]) -> String {
    let out = Command::new(require_tool("redis-cli"))
        .args(["-p", &port.to_string(), "--no-auth-warning", "-a", password])
        .args(command)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_started_after_the_wait_with_the_password_from_a_file() {
    let temp = TempDir::new("wait-redis");
    let secret = temp.join("password");
    std::fs::write(&secret, "s3cret-from-file\n").unwrap();
    let port = free_port();
    let target = format!("redis://127.0.0.1:{port}");
    let secret = secret.to_str().unwrap();
    let waiting = wait_in_background(&[&target, "--timeout", "30s", "--password-file", secret]);
    std::thread::sleep(Duration::from_millis(300));
    let _server = start_redis(temp.path(), port, &["--requirepass", "s3cret-from-file"]);
    waiting
        .finish()
        .success()
        .stderr_has("connection refused")
        .stderr_has("ready after")
        .stderr_lacks("s3cret");
}

/// Issue 11: a Redis loading its dataset answers `-LOADING` with its port open; wait must not
/// call it ready until PING answers PONG.
#[test]
fn redis_loading_its_dataset_is_not_ready() {
    let temp = TempDir::new("wait-redis-loading");
    let port = free_port();
    let keys = "20000";
    {
        let _server = start_redis(temp.path(), port, &["--enable-debug-command", "yes"]);
        wait_until("redis to start", Duration::from_secs(20), || {
            redis_cli(port, "", &["ping"]) == "PONG"
        });
        assert_eq!(redis_cli(port, "", &["debug", "populate", keys]), "OK");
        assert_eq!(redis_cli(port, "", &["save"]), "OK");
    }
    let target = format!("redis://127.0.0.1:{port}");
    let waiting = wait_in_background(&[&target, "--timeout", "60s"]);
    // 100 µs per key: two seconds of LOADING, with events handled every KiB.
    let _server = start_redis(
        temp.path(),
        port,
        &[
            "--key-load-delay",
            "100",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
    );
    let out = waiting.finish();
    let after = redis_cli(port, "", &["dbsize"]);
    out.success()
        .stderr_has("redis: LOADING Redis is loading the dataset in memory")
        .stderr_has("ready after");
    assert_eq!(after, keys, "wait returned before the dataset was loaded");
}

/// Issue 11: a wrong password, or none where one is needed, fails at once with 77, and the
/// password appears in no output (text or JSON).
#[test]
fn redis_wrong_or_missing_password_is_77_at_once_and_never_printed() {
    let temp = TempDir::new("wait-redis-auth");
    let port = free_port();
    let _server = start_redis(temp.path(), port, &["--requirepass", "right-pass"]);
    wait_until("redis to start", Duration::from_secs(20), || {
        redis_cli(port, "right-pass", &["ping"]) == "PONG"
    });
    let wrong = format!("redis://:Wr0ng-P%40ss@127.0.0.1:{port}/0");
    let plain = format!("redis://127.0.0.1:{port}");
    let runs: [(&str, Cmd); 4] = [
        ("url", initbox(["wait", &wrong, "--timeout", "30s"])),
        (
            "json",
            initbox(["wait", &wrong, "--timeout", "30s", "--log-format", "json"]),
        ),
        (
            "env",
            initbox([
                "wait",
                &plain,
                "--password-env",
                "REDIS_PW",
                "--timeout",
                "30s",
            ])
            .env("REDIS_PW", "Wr0ng-P@ss"),
        ),
        ("missing", initbox(["wait", &plain, "--timeout", "30s"])),
    ];
    for (name, cmd) in runs {
        let out = cmd.run();
        out.code(77).within(Duration::from_secs(5));
        for needle in ["Wr0ng", "P@ss", "P%40ss", "right-pass"] {
            assert!(
                !out.stderr.contains(needle) && !out.stdout.contains(needle),
                "{name}: {needle} printed:\n{}",
                out.stderr
            );
        }
        let expected = if name == "missing" {
            "a password is needed and none was given"
        } else {
            "the password was refused"
        };
        out.stderr_has(expected);
    }
}

/// A Redis speaking only TLS on `port`, with the server certificate of `make_pki` (valid for
/// 127.0.0.1) and no client certificate asked for.
fn start_redis_tls(dir: &Path, port: u16, pki: &crate::util::Pki, extra: &[&str]) -> Server {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (cert, key, ca) = (path(&pki.cert), path(&pki.key), path(&pki.ca));
    let port = port.to_string();
    let mut args = vec![
        "--tls-port",
        &port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ];
    args.extend(extra);
    // Port 0: no plain-text port at all.
    start_redis(dir, 0, &args)
}

/// Issue 11: `rediss://` speaks TLS, verified against --ca-file, then AUTH/PING as redis://:
/// ready with the CA; without it the certificate is untrusted (78 at once), for another name it
/// mismatches (78); a wrong password is 77 and never printed.
#[test]
fn rediss_verified_tls_then_auth_and_ping() {
    let temp = TempDir::new("wait-rediss");
    let pki = crate::util::make_pki(temp.path());
    let ca = pki.ca.to_str().unwrap().to_string();
    let port = free_port();
    let right = format!("rediss://:right-pass@127.0.0.1:{port}/0");
    let waiting = wait_in_background(&[&right, "--ca-file", &ca, "--timeout", "30s"]);
    std::thread::sleep(Duration::from_millis(300));
    let _server = start_redis_tls(temp.path(), port, &pki, &["--requirepass", "right-pass"]);
    waiting
        .finish()
        .success()
        .stderr_has(&format!("rediss://127.0.0.1:{port}/0 ready after"))
        .stderr_lacks("right-pass");
    initbox(["wait", &right, "--timeout", "30s"])
        .run()
        .code(78)
        .within(Duration::from_secs(5))
        .stderr_has("certificate not trusted");
    let other_name = format!("rediss://:right-pass@localhost:{port}");
    initbox(["wait", &other_name, "--ca-file", &ca, "--timeout", "30s"])
        .run()
        .code(78)
        .within(Duration::from_secs(5))
        .stderr_has("certificate name mismatch");
    let wrong = format!("rediss://:Wr0ng-Pass@127.0.0.1:{port}");
    let out = initbox(["wait", &wrong, "--ca-file", &ca, "--timeout", "30s"]).run();
    out.code(77)
        .within(Duration::from_secs(5))
        .stderr_has("the password was refused")
        .stderr_lacks("Wr0ng");
}

/// Issue 11: a Redis that asks for a client certificate gets the one of `--cert`/`--key` (the
/// shared HTTP options); without one the server refuses the handshake, which is 78 at once.
#[test]
fn rediss_client_certificate_from_the_http_options() {
    let temp = TempDir::new("wait-rediss-mtls");
    let pki = crate::util::make_pki(temp.path());
    let (cert, key) = crate::http_options::client_cert(temp.path(), "client", "ec");
    let ca = pki.ca.to_str().unwrap().to_string();
    let port = free_port();
    let _server = start_redis_tls(temp.path(), port, &pki, &["--tls-auth-clients", "yes"]);
    let target = format!("rediss://127.0.0.1:{port}");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    initbox([
        "wait",
        &target,
        "--ca-file",
        &ca,
        "--cert",
        cert,
        "--key",
        key,
        "--timeout",
        "30s",
    ])
    .run()
    .success()
    .stderr_has("ready after");
    initbox(["wait", &target, "--ca-file", &ca, "--timeout", "30s"])
        .run()
        .code(78)
        .within(Duration::from_secs(5))
        .stderr_has("the server aborted the TLS handshake");
}

// ---- MariaDB ----

#[test]
fn mariadb_started_after_the_wait_is_ready_at_its_handshake() {
    let temp = TempDir::new("wait-mariadb");
    let data = temp.join("data");
    run_ok(
        Command::new(require_tool("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=root", "--skip-test-db", "--skip-name-resolve"])
            .stdout(Stdio::null()),
    );
    let port = free_port();
    let target = format!("mysql://127.0.0.1:{port}");
    let waiting = wait_in_background(&[&target, "--timeout", "60s"]);
    std::thread::sleep(Duration::from_millis(300));
    let _server = Server::start(
        Command::new(require_tool("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", temp.join("sock").display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
            ])
            .args(["--innodb-buffer-pool-size=16M", "--skip-log-bin"])
            // Without grants for 127.0.0.1 the answer is error 1130 (host not allowed).
            .arg("--skip-grant-tables"),
        libc::SIGKILL,
    );
    waiting
        .finish()
        .success()
        .stderr_has("connection refused")
        .stderr_has("ready after")
        .stderr_has("MariaDB");
}

// ---- files, names, several targets ----

#[test]
fn file_that_appears_later_and_must_not_be_empty() {
    let temp = TempDir::new("wait-file");
    let path = temp.join("token");
    let target = format!("file://{}", path.display());
    let waiting = wait_in_background(&[&target, "--non-empty", "--timeout", "30s"]);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&path, "").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&path, "token").unwrap();
    waiting
        .finish()
        .success()
        .stderr_has("file: does not exist yet")
        .stderr_has("file: exists but is empty")
        .stderr_has("ready after");
}

/// A name that appears in /etc/hosts late, as a Service does in DNS; /etc/hosts is a bind mount
/// of a temporary file in a private mount namespace, so the real one is never touched.
#[test]
fn name_added_late_to_etc_hosts_resolves() {
    if !have_root("name_added_late_to_etc_hosts_resolves") {
        return;
    }
    let temp = TempDir::new("wait-dns");
    let hosts = temp.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let script = format!(
        "mount --bind {hosts} /etc/hosts && {{ \"$0\" wait dns://late.initbox.test \
         --min-addresses 2 --timeout 30s & pid=$!; sleep 0.3; \
         echo '127.0.0.7 late.initbox.test' >> {hosts}; sleep 0.3; \
         echo '127.0.0.8 late.initbox.test' >> {hosts}; wait $pid; }}",
        hosts = hosts.display()
    );
    let mut command = Command::new(require_tool("unshare"));
    command
        .args(["-m", "sh", "-c", &script])
        .arg(crate::util::bin());
    Cmd::from(command)
        .run()
        .success()
        .stderr_has("dns: name not known yet")
        .stderr_has("dns: 1 of 2 addresses (127.0.0.7)")
        .stderr_has("127.0.0.7, 127.0.0.8");
}

#[test]
fn several_kinds_at_once_one_never_ready_is_124_naming_it() {
    let temp = TempDir::new("wait-mixed");
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = open.local_addr().unwrap().to_string();
    let file = format!("file://{}", temp.path().display());
    let never = format!("redis://127.0.0.1:{}", free_port());
    let out: Outcome = initbox(["wait", &tcp, &file, &never, "--timeout", "1s"]).run();
    out.code(124)
        .stderr_has(&format!("{tcp} ready"))
        .stderr_has(&format!("{file} ready"))
        .stderr_has(&format!("{never}: not ready: connection refused"))
        .stderr_has(&format!("1 of 3 target(s) not ready: {never}"));
}

// ---- HTTP(S) ----

#[test]
fn http_health_endpoint_that_switches_from_503_to_200() {
    let nginx = crate::fetch::Nginx::start();
    let url = nginx.url("/healthz");
    let waiting = wait_in_background(&[&url, "--expect-body", "up", "--timeout", "30s"]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(nginx.www("healthz-ready"), "starting\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(nginx.www("healthz-ready"), "up\n").unwrap();
    waiting
        .finish()
        .success()
        .stderr_has("http: HTTP 503 Service Unavailable")
        .stderr_has("http: HTTP 200 OK, but the body lacks \"up\"")
        .stderr_has(&format!("{url} ready after"));
}

/// A certificate that is not trusted fails at once with 78; with the CA given, the same target
/// is ready.
#[test]
fn https_untrusted_certificate_is_78_at_once() {
    let nginx = crate::fetch::Nginx::start();
    let url = nginx.tls_url("/hello.txt");
    initbox(["wait", &url, "--timeout", "30s"])
        .run()
        .code(78)
        .within(Duration::from_secs(5));
    let ca = nginx.ca_file().to_str().unwrap().to_string();
    initbox(["wait", &url, "--ca-file", &ca, "--timeout", "30s"])
        .run()
        .success()
        .stderr_has("HTTP 200 OK");
}

#[test]
fn command_after_double_dash_runs_once_ready() {
    let temp = TempDir::new("wait-exec");
    let target = format!("file://{}", temp.path().display());
    initbox([
        "wait",
        &target,
        "--",
        "/bin/sh",
        "-c",
        "echo became $0; exit 7",
        "app",
    ])
    .run()
    .code(7)
    .stdout_has("became app");
}
