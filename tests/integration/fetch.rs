//! `fetch` against a real nginx on loopback (plain and HTTPS with a CA made by the openssl CLI),
//! plus a small raw-socket HTTP/1.1 server for the misbehaviours nginx will not produce: a 500
//! followed by success, and a body that stalls half-way.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::util::{
    free_port, initbox, make_pki, require_tool, scratch_pid1, wait_until, NginxProcess, Pki,
    Scratch, TempDir,
};

const HELLO: &str = "hello from nginx\n";
/// SHA-256 of 64 KiB of zero bytes.
const ZEROS_64K_SHA256: &str = "de2f256064a0af797747c2b97505dc0b9f3df0de4f489eac731c23ae9ca9cc31";
/// SHA-256 of 1 GiB of zero bytes.
const ZEROS_1G_SHA256: &str = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14";

/// nginx on two free loopback ports (plain and TLS), its files under `www`; stopped on drop.
pub struct Nginx {
    _process: NginxProcess,
    dir: TempDir,
    port: u16,
    tls_port: u16,
    pki: Pki,
}

impl Nginx {
    pub fn start() -> Nginx {
        let dir = TempDir::new("nginx");
        let www = dir.join("www");
        fs::create_dir_all(www.join("slow")).unwrap();
        fs::write(www.join("hello.txt"), HELLO).unwrap();
        fs::write(www.join("zeros.bin"), vec![0u8; 65536]).unwrap();
        let text: String = (0..2000)
            .map(|i| format!("line {i} of a compressible file\n"))
            .collect();
        fs::write(www.join("text.txt"), text).unwrap();
        let pki = make_pki(dir.path());
        // `alt_port` is a second plain port of the same server: another origin on the same host.
        let (port, alt_port, tls_port) = (free_port(), free_port(), free_port());
        let d = dir.path().display();
        let http_body = format!(
            r#"    types {{ text/plain txt; application/octet-stream bin; }}
    gzip on;
    gzip_types text/plain;
    gzip_min_length 1;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{alt_port};
        root {d}/www;
        location = /redirect1 {{ return 302 /redirect2; }}
        location = /redirect2 {{ return 301 /hello.txt; }}
        location = /redirect-loop {{ return 302 /redirect-loop; }}
        location = /to-auth {{ return 302 /auth; }}
        location = /to-other-host {{ return 302 http://localhost:{port}/auth; }}
        location = /to-other-port {{ return 302 http://127.0.0.1:{alt_port}/auth; }}
        location = /auth {{ default_type text/plain; return 200 "authorization=[$http_authorization] key=[$http_x_api_key] pass=[$http_x_vault_pass]\n"; }}
        location = /status500 {{ return 500; }}
        location /slow/ {{ limit_rate 256k; }}
        location = /healthz {{ try_files /healthz-ready =503; }}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {d}/www;
        location = /to-http {{ return 302 http://127.0.0.1:{port}/hello.txt; }}
    }}
"#,
            cert = pki.cert.display(),
            key = pki.key.display(),
        );
        let process = NginxProcess::start(dir.path(), &http_body, &[port, alt_port, tls_port]);
        Nginx {
            _process: process,
            dir,
            port,
            tls_port,
            pki,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn tls_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port)
    }

    /// The CA certificate that signed the TLS server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.pki.ca
    }

    pub fn www(&self, rel: &str) -> PathBuf {
        self.dir.join("www").join(rel)
    }
}

/// A raw HTTP/1.1 server on loopback whose every connection is handled by `respond(n, stream)`
/// (n counts from 0); stopped on drop.
struct RawServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawServer {
    fn start(respond: fn(usize, &mut TcpStream, &AtomicBool)) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (Arc::clone(&connections), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        // One thread per connection, so a stalling reply does not hold up
                        // the next attempt.
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let stopping = Arc::clone(&stopping);
                        thread::spawn(move || {
                            stream.set_nonblocking(false).unwrap();
                            stream
                                .set_read_timeout(Some(Duration::from_secs(5)))
                                .unwrap();
                            read_request_head(&mut stream);
                            respond(n, &mut stream, &stopping);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RawServer {
            port,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn downloads_atomically_with_mode() {
    let nginx = Nginx::start();
    let out = TempDir::new("fetch-ok");
    let dest = out.join("hello.txt");
    let url = nginx.url("/hello.txt");
    initbox(["fetch", url.as_str(), "-o"]).run().code(64);
    initbox([
        "fetch",
        &url,
        "-o",
        dest.to_str().unwrap(),
        "--mode",
        "0600",
        "--print-sha256",
    ])
    .run()
    .success()
    .stderr_has("sha256");
    assert_eq!(fs::read_to_string(&dest).unwrap(), HELLO);
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(out.names(), ["hello.txt"]);
    // A restarted pod runs the same fetch again: it succeeds and replaces the file.
    initbox(["fetch", &url, "-o", dest.to_str().unwrap()])
        .run()
        .success();
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    initbox(["fetch", &url, "-o", "-"])
        .run()
        .success()
        .stdout_has(HELLO);
}

/// Issue 10: the SHA-256 was computed (and logged) on every download, needed or not; now only
/// `--sha256` (verify) and `--print-sha256` (report, as sha256sum prints it) pay for it.
#[test]
fn issue_10_the_digest_is_computed_only_when_used() {
    let nginx = Nginx::start();
    let out = TempDir::new("fetch-digest");
    let dest = out.join("zeros.bin");
    let dest_text = dest.to_str().unwrap();
    let url = nginx.url("/zeros.bin");
    initbox(["fetch", &url, "-o", dest_text])
        .run()
        .success()
        .stderr_lacks("sha256");
    initbox(["fetch", &url, "-o", dest_text, "--print-sha256"])
        .run()
        .success()
        .stdout_has(&format!("{ZEROS_64K_SHA256}  {dest_text}\n"));
    initbox(["fetch", &url, "-o", dest_text, "--sha256", ZEROS_64K_SHA256])
        .run()
        .success()
        .stderr_has(ZEROS_64K_SHA256);
    // With the body on stdout, the digest line goes to stderr.
    initbox(["fetch", &url, "-o", "-", "--print-sha256"])
        .run()
        .success()
        .stderr_has(&format!("{ZEROS_64K_SHA256}  stdout\n"));
}

#[test]
fn not_found_exits_76_and_writes_nothing() {
    let nginx = Nginx::start();
    let out = TempDir::new("fetch-404");
    let dest = out.join("missing");
    initbox([
        "fetch",
        &nginx.url("/missing"),
        "-o",
        dest.to_str().unwrap(),
    ])
    .run()
    .code(76)
    .stderr_has("HTTP 404 Not Found")
    .stderr_lacks("retrying");
    assert!(out.names().is_empty());
}

#[test]
fn redirect_chain_is_followed_and_loops_stop() {
    let nginx = Nginx::start();
    initbox(["fetch", &nginx.url("/redirect1"), "-o", "-"])
        .run()
        .success()
        .stdout_has(HELLO)
        .stderr_has("redirected (302)");
    initbox(["fetch", &nginx.url("/redirect-loop"), "-o", "-"])
        .run()
        .code(76)
        .stderr_has("more than 10 redirects");
}

/// Issue 9 #4: every header the user gave (`--header`, `--header-from-env`), not only those on a
/// keyword list, is a credential and stays behind when a redirect leaves the origin; another port
/// on the same host is another origin.
#[test]
fn credentials_are_dropped_when_a_redirect_leaves_the_host() {
    let nginx = Nginx::start();
    let with_user = |path: &str| format!("http://user:pw@127.0.0.1:{}{path}", nginx.port);
    let fetch = |path: &str| {
        initbox([
            "fetch",
            &with_user(path),
            "-o",
            "-",
            "--header",
            "X-Api-Key: k1",
            "--header-from-env",
            "X-Vault-Pass=FETCH_TEST_PASS",
        ])
        .env("FETCH_TEST_PASS", "VAULTSECRET")
        .run()
    };
    // Same host: userinfo becomes basic auth, the user's headers are kept.
    fetch("/to-auth")
        .success()
        .stdout_has("authorization=[Basic dXNlcjpwdw==] key=[k1] pass=[VAULTSECRET]");
    // 127.0.0.1 -> localhost, and another port: other origins, so nothing is sent there.
    for path in ["/to-other-host", "/to-other-port"] {
        fetch(path)
            .success()
            .stdout_has("authorization=[] key=[] pass=[]");
    }
}

#[test]
fn https_verifies_against_ca_file_and_refuses_downgrade() {
    let nginx = Nginx::start();
    let ca = nginx.pki.ca.to_str().unwrap().to_string();
    initbox(["fetch", &nginx.tls_url("/hello.txt"), "-o", "-"])
        .run()
        .code(78)
        .stderr_has("unknown issuer")
        .stderr_has("--ca-file");
    initbox([
        "fetch",
        &nginx.tls_url("/hello.txt"),
        "-o",
        "-",
        "--ca-file",
        &ca,
    ])
    .run()
    .success()
    .stdout_has(HELLO);
    initbox([
        "fetch",
        &nginx.tls_url("/hello.txt"),
        "-o",
        "-",
        "--ca-file",
        &ca,
        "--ca-file-only",
    ])
    .run()
    .success();
    initbox(["fetch", &nginx.tls_url("/hello.txt"), "-o", "-"])
        .env("SSL_CERT_FILE", &ca)
        .run()
        .success();
    let by_name = format!("https://localhost:{}/hello.txt", nginx.tls_port);
    initbox(["fetch", &by_name, "-o", "-", "--ca-file", &ca])
        .run()
        .code(78)
        .stderr_has("name mismatch");
    initbox([
        "fetch",
        &nginx.tls_url("/to-http"),
        "-o",
        "-",
        "--ca-file",
        &ca,
    ])
    .run()
    .code(76)
    .stderr_has("refusing the redirect from https to http");
}

/// Issue 9 #24: `SSL_CERT_FILE` naming a missing file failed every download, even over plain
/// http:// where no certificate is checked; an https:// URL still fails with 66.
#[test]
fn a_missing_ssl_cert_file_only_matters_to_https() {
    let nginx = Nginx::start();
    let dir = TempDir::new("fetch-cert-file");
    let missing = dir.join("missing.pem");
    initbox(["fetch", &nginx.url("/hello.txt"), "-o", "-"])
        .env("SSL_CERT_FILE", &missing)
        .run()
        .success()
        .stdout_has(HELLO);
    initbox(["fetch", &nginx.tls_url("/hello.txt"), "-o", "-"])
        .env("SSL_CERT_FILE", &missing)
        .run()
        .code(66)
        .stderr_has("SSL_CERT_FILE");
}

#[test]
fn checksum_mismatch_exits_79_and_keeps_the_old_file() {
    let nginx = Nginx::start();
    let out = TempDir::new("fetch-sha");
    let dest = out.join("zeros.bin");
    fs::write(&dest, "old").unwrap();
    let url = nginx.url("/zeros.bin");
    let wrong = "0".repeat(64);
    initbox([
        "fetch",
        &url,
        "-o",
        dest.to_str().unwrap(),
        "--sha256",
        &wrong,
    ])
    .run()
    .code(79)
    .stderr_has("SHA-256 mismatch")
    .stderr_has(ZEROS_64K_SHA256);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old");
    assert_eq!(out.names(), ["zeros.bin"]);
    initbox([
        "fetch",
        &url,
        "-o",
        dest.to_str().unwrap(),
        "--sha256",
        ZEROS_64K_SHA256,
    ])
    .run()
    .success();
    assert_eq!(fs::read(&dest).unwrap(), vec![0u8; 65536]);
}

#[test]
fn max_size_aborts_with_76() {
    let nginx = Nginx::start();
    let out = TempDir::new("fetch-max");
    let dest = out.join("zeros.bin");
    initbox([
        "fetch",
        &nginx.url("/zeros.bin"),
        "-o",
        dest.to_str().unwrap(),
        "--max-size",
        "1K",
    ])
    .run()
    .code(76)
    .stderr_has("--max-size");
    assert!(out.names().is_empty());
}

#[test]
fn gzip_content_encoding_is_decoded() {
    let nginx = Nginx::start();
    let url = nginx.url("/text.txt");
    // The test must be able to fail: first make sure nginx really compresses this file.
    let head = Command::new(require_tool("curl"))
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            "Accept-Encoding: gzip",
            &url,
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let out = TempDir::new("fetch-gzip");
    let dest = out.join("text.txt");
    initbox(["fetch", &url, "-o", dest.to_str().unwrap()])
        .run()
        .success();
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(nginx.www("text.txt")).unwrap()
    );
}

#[test]
fn server_error_then_success_is_retried() {
    let server = RawServer::start(|n, stream, _| {
        let reply: &[u8] = if n == 0 {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
        };
        let _ = stream.write_all(reply);
    });
    initbox(["fetch", &server.url("/flaky"), "-o", "-"])
        .run()
        .success()
        .stdout_has("ok\n")
        .stderr_has("HTTP 500 Internal Server Error; retrying in");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_after_is_honoured() {
    let server = RawServer::start(|n, stream, _| {
        let reply: &[u8] = if n == 0 {
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
        };
        let _ = stream.write_all(reply);
    });
    initbox(["fetch", &server.url("/busy"), "-o", "-"])
        .run()
        .success()
        .stderr_has("retrying in 1s");
}

#[test]
fn a_stalled_body_is_cut_off_retried_and_leaves_no_temporary() {
    let server = RawServer::start(|_, stream, stop| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        let _ = stream.write_all(&[b'x'; 1000]);
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
    });
    let out = TempDir::new("fetch-stall");
    let dest = out.join("stalled");
    let url = server.url("/stall");
    initbox([
        "fetch",
        &url,
        "-o",
        dest.to_str().unwrap(),
        "--read-timeout",
        "300ms",
        "--retries",
        "1",
    ])
    .run()
    .code(124)
    .stderr_has("sent nothing for 300ms")
    .stderr_has("retrying");
    assert!(out.names().is_empty(), "{:?}", out.names());
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn secrets_never_reach_the_logs() {
    let nginx = Nginx::start();
    let out = TempDir::new("fetch-secrets");
    let token = out.join("token");
    fs::write(&token, "TOKENSECRET\n").unwrap();
    for format in ["text", "json"] {
        for path in ["/status500", "/missing", "/redirect1", "/to-other-host"] {
            let url = format!(
                "http://user:URLSECRET@127.0.0.1:{}{path}?token=QUERYSECRET",
                nginx.port
            );
            let outcome = initbox([
                "fetch",
                &url,
                "-o",
                "-",
                "--log-format",
                format,
                "--retries",
                "1",
                "--header-from-env",
                "X-Api-Key=FETCH_TEST_KEY",
                "--bearer-file",
                token.to_str().unwrap(),
            ])
            .env("FETCH_TEST_KEY", "ENVSECRET")
            .env("INITBOX_LOG_FORMAT", format)
            .run();
            outcome.stderr_has("127.0.0.1");
            for secret in [
                "URLSECRET",
                "QUERYSECRET",
                "ENVSECRET",
                "TOKENSECRET",
                "dXNlcjpVUkxTRUNSRVQ",
            ] {
                outcome.stderr_lacks(secret);
            }
        }
    }
    // Usage errors that quote a URL or header mask them too.
    initbox(["fetch", "ftp://u:URLSECRET@h/", "-o", "-"])
        .run()
        .code(64)
        .stderr_lacks("URLSECRET");
}

/// Issue 9 #5: a password holding `/`, `?` or `#`, a token as the user name (GitHub style), a
/// malformed header and a proxy's credentials are never printed, in the log nor the reason.
#[test]
fn secrets_in_odd_places_never_reach_the_logs() {
    let nginx = Nginx::start();
    let port = nginx.port;
    let cases = [
        format!("http://alice:SECRET/TOKEN@127.0.0.1:{port}/hello.txt"),
        format!("http://alice:SECRET?TOKEN@127.0.0.1:{port}/hello.txt"),
        format!("http://alice:SECRET#TOKEN@127.0.0.1:{port}/hello.txt"),
        format!("http://TOKEN@127.0.0.1:{port}/missing"),
        format!("http://TOKEN@127.0.0.1:{port}/redirect1"),
    ];
    for url in &cases {
        let outcome = initbox(["fetch", url.as_str(), "-o", "-"]).run();
        outcome.stderr_lacks("SECRET").stderr_lacks("TOKEN");
    }
    initbox([
        "fetch",
        &nginx.url("/hello.txt"),
        "-o",
        "-",
        "--header",
        "Authorization Bearer TOKEN: x",
    ])
    .run()
    .code(64)
    .stderr_lacks("TOKEN");
    for (proxy, code) in [
        ("http://proxyuser:SECRET/TOKEN@127.0.0.1:1", 64),
        ("http://TOKEN@127.0.0.1:1", 69),
    ] {
        initbox([
            "fetch",
            &nginx.url("/hello.txt"),
            "-o",
            "-",
            "--retries",
            "0",
        ])
        .env("http_proxy", proxy)
        .run()
        .code(code)
        .stderr_lacks("SECRET")
        .stderr_lacks("TOKEN");
    }
}

/// Issue 9 #6: a destination that exists and is not a regular file (a FIFO, a socket, a symlink
/// to a device node) is refused with 74, and left as it was; before, it was replaced by a file,
/// so `-o /dev/null` as root replaced the real /dev/null.
#[test]
fn a_destination_that_is_not_a_regular_file_is_refused() {
    use std::os::unix::fs::FileTypeExt;
    if !crate::util::have_root("a_destination_that_is_not_a_regular_file_is_refused") {
        return;
    }
    let nginx = Nginx::start();
    let url = nginx.url("/hello.txt");
    let dir = TempDir::new("fetch-special");
    let fifo = dir.join("fifo");
    assert!(Command::new(require_tool("mkfifo"))
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // A null device of the test's own, never the real /dev/null.
    let device = dir.join("null");
    let c_device = std::ffi::CString::new(device.to_str().unwrap()).unwrap();
    // SAFETY: c_device is a valid NUL-terminated path inside the test's temporary directory.
    let made = unsafe {
        libc::mknod(
            c_device.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        )
    };
    assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    let link = dir.join("link-to-null");
    std::os::unix::fs::symlink(&device, &link).unwrap();
    for (path, kind) in [
        (&fifo, "FIFO"),
        (&socket, "socket"),
        (&link, "character device"),
    ] {
        initbox(["fetch", &url, "-o", path.to_str().unwrap()])
            .run()
            .code(74)
            .stderr_has(kind)
            .stderr_has("not a regular file");
    }
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::metadata(&link).unwrap().file_type().is_char_device());
    assert_eq!(dir.names(), ["fifo", "link-to-null", "null", "socket"]);
    // A symlink to a regular file and a missing path are still fine.
    let regular = dir.join("regular");
    fs::write(&regular, "old").unwrap();
    let to_regular = dir.join("to-regular");
    std::os::unix::fs::symlink(&regular, &to_regular).unwrap();
    for path in [&to_regular, &dir.join("new")] {
        initbox(["fetch", &url, "-o", path.to_str().unwrap()])
            .run()
            .success();
        assert_eq!(fs::read_to_string(path).unwrap(), HELLO);
    }
}

/// Issue 9 #8: a newline or escape sequence in a file name (or anything remote) cannot forge or
/// split a text log line: control characters are escaped, in the log and in the final reason.
#[test]
fn control_characters_in_logged_text_are_escaped() {
    let nginx = Nginx::start();
    let dir = TempDir::new("fetch-newline");
    let url = nginx.url("/hello.txt");
    let forged = dir.join("a\ninitbox fetch: FORGED\x1b[31m");
    let missing = dir.join("no\ndir/x");
    let outcomes = [
        initbox(["fetch", &url, "-o", forged.to_str().unwrap()]).run(),
        initbox(["fetch", &url, "-o", missing.to_str().unwrap()]).run(),
    ];
    outcomes[0].success();
    assert_eq!(fs::read_to_string(&forged).unwrap(), HELLO);
    outcomes[1].code(66);
    for outcome in &outcomes {
        outcome.stderr_has("\\n").stderr_lacks("\x1b");
        for line in outcome.stderr.lines() {
            assert!(line.starts_with("initbox fetch: "), "{line:?}");
            assert!(!line.starts_with("initbox fetch: FORGED"), "{line:?}");
        }
    }
}

#[test]
fn a_1gib_download_streams_in_constant_memory() {
    let nginx = Nginx::start();
    let big = fs::File::create(nginx.www("big.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    let dir = TempDir::new("fetch-big");
    let (log, rss) = (dir.join("stderr"), dir.join("rss"));
    // GNU time forks initbox from its own small process and reports that child's peak RSS. A
    // child spawned straight from this test binary would inherit the test's high-water mark.
    let status = Command::new(crate::util::require_tool("time"))
        .arg("-o")
        .arg(&rss)
        .args(["-f", "%M"])
        .arg(crate::util::bin())
        .args([
            "fetch",
            &nginx.url("/big.bin"),
            "-o",
            "-",
            "--sha256",
            ZEROS_1G_SHA256,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let stderr_text = fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {stderr_text}");
    assert!(stderr_text.contains("1.0 GiB"), "{stderr_text}");
    let peak_kib: u64 = fs::read_to_string(&rss).unwrap().trim().parse().unwrap();
    assert!(
        peak_kib < 16 * 1024,
        "peak RSS {peak_kib} KiB: {stderr_text}"
    );
}

#[test]
fn sigterm_as_pid1_removes_the_temporary_and_keeps_the_old_file() {
    if !crate::util::have_root("sigterm_as_pid1_removes_the_temporary_and_keeps_the_old_file") {
        return;
    }
    let nginx = Nginx::start();
    fs::write(nginx.www("slow/big.bin"), vec![7u8; 8 << 20]).unwrap();
    let scratch = Scratch::new().file("data/config", "old");
    let data = scratch.root.join("data");
    let running = scratch
        .initbox(["fetch", &nginx.url("/slow/big.bin"), "-o", "/data/config"])
        .spawn();
    let pid1 = scratch_pid1(&running);
    wait_until("the temporary file", Duration::from_secs(10), || {
        dir_names(&data).len() == 2
    });
    running.signal(libc::SIGTERM, pid1);
    let outcome = running.finish();
    outcome.code(143).stderr_has("SIGTERM");
    assert_eq!(dir_names(&data), ["config"]);
    assert_eq!(fs::read_to_string(data.join("config")).unwrap(), "old");
}

/// Issue 9 #1: temporaries were named after the pid, always 1 in a container, so the leftover of
/// a SIGKILLed run blocked every later run with 74 "File exists".
#[test]
fn issue_9_1_leftover_of_a_killed_run_as_pid1_does_not_block_the_next() {
    if !crate::util::have_root("issue_9_1_leftover_of_a_killed_run_as_pid1_does_not_block_the_next")
    {
        return;
    }
    let nginx = Nginx::start();
    fs::write(nginx.www("slow/big.bin"), vec![7u8; 8 << 20]).unwrap();
    // What the old naming left after a kill, and a user file that merely looks like ours.
    let scratch = Scratch::new()
        .file("data/.config.initbox-1-0.tmp", "left by an older initbox")
        .file("data/.config.initbox-0123456789abcdef.tmp", "a user's file");
    let data = scratch.root.join("data");
    scratch
        .initbox(["fetch", &nginx.url("/hello.txt"), "-o", "/data/config"])
        .run()
        .success();
    assert_eq!(fs::read_to_string(data.join("config")).unwrap(), HELLO);

    // A real SIGKILL mid-download leaves a temporary; the next run removes it and succeeds.
    let running = scratch
        .initbox(["fetch", &nginx.url("/slow/big.bin"), "-o", "/data/config"])
        .spawn();
    let pid1 = scratch_pid1(&running);
    // Killed once the temporary carries its marker (set right after it is created; a kill
    // inside that window leaves a file no run removes: litter that blocks nothing).
    wait_until("the temporary file", Duration::from_secs(10), || {
        fs::read_dir(&data)
            .unwrap()
            .flatten()
            .any(|entry| crate::util::has_xattr(&entry.path(), "user.initbox.temporary"))
    });
    running.signal(libc::SIGKILL, pid1);
    let _ = running.finish();
    assert_eq!(dir_names(&data).len(), 4, "the kill left no temporary");
    scratch
        .initbox(["fetch", &nginx.url("/hello.txt"), "-o", "/data/config"])
        .run()
        .success();
    assert_eq!(
        dir_names(&data),
        [
            ".config.initbox-0123456789abcdef.tmp",
            ".config.initbox-1-0.tmp",
            "config"
        ]
    );
}

/// Issue 9 #19: the temporary's name added ~25 bytes to DEST's, so a 235-255 byte name failed.
#[test]
fn issue_9_19_a_255_byte_destination_name_works() {
    let nginx = Nginx::start();
    let out = TempDir::new("fetch-long");
    let dest = out.join("x".repeat(255));
    initbox([
        "fetch",
        &nginx.url("/hello.txt"),
        "-o",
        dest.to_str().unwrap(),
    ])
    .run()
    .success();
    assert_eq!(fs::read_to_string(&dest).unwrap(), HELLO);
    assert_eq!(out.names().len(), 1);
}

/// The body the range server serves: 1 MiB that is not all one byte, so an offset error shows.
fn range_body() -> Vec<u8> {
    (0..1u32 << 20).map(|i| (i % 251) as u8).collect()
}

/// Where the first answer of the range server breaks off.
const BREAK_AT: usize = 300_000;

/// A server that answers the first request with `200`, `Accept-Ranges: bytes` and a strong ETag,
/// then breaks the body after [`BREAK_AT`] bytes; later requests get `206` for
/// `Range: bytes=N-` when `If-Range` holds that ETag, or (with `honour_range` false) the whole
/// body again under a new ETag. It records each request head and the body bytes it sent.
struct RangeServer {
    port: u16,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RangeServer {
    fn start(honour_range: bool) -> RangeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (heads_, sent_, stop_) = (heads.clone(), sent.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let body = range_body();
            while !stop_.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let head = read_head_text(&mut stream);
                let first = heads_.lock().unwrap().is_empty();
                heads_.lock().unwrap().push(head.clone());
                let lower = head.to_ascii_lowercase();
                let range_start = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|r| r.trim_end_matches('-').trim_end_matches("-\r").parse().ok());
                let validated = lower.contains("if-range: \"v1\"");
                let (head_out, slice) = match range_start {
                    Some(start) if honour_range && validated && !first => (
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\n\
                             Content-Range: bytes {start}-{}/{}\r\nETag: \"v1\"\r\n\
                             Accept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                            body.len() - start,
                            body.len() - 1,
                            body.len()
                        ),
                        &body[start..],
                    ),
                    _ => (
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"{}\"\r\n\
                             Accept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                            body.len(),
                            if first { "v1" } else { "v2" }
                        ),
                        if first { &body[..BREAK_AT] } else { &body[..] },
                    ),
                };
                let _ = stream.write_all(head_out.as_bytes());
                if stream.write_all(slice).is_ok() {
                    sent_.fetch_add(slice.len(), Ordering::SeqCst);
                }
                // Dropping the stream closes it: for the first answer, short of Content-Length.
            }
        });
        RangeServer {
            port,
            heads,
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/artifact.bin", self.port)
    }
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_head_text(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new(require_tool("sha256sum"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Issue 10: a body that breaks after some bytes is resumed with `Range: bytes=N-` and
/// `If-Range`, appended to the same temporary, and `--sha256` still checks the whole file; the
/// server sends each byte once.
#[test]
fn issue_10_a_broken_body_is_resumed_with_range_and_if_range() {
    let server = RangeServer::start(true);
    let out = TempDir::new("fetch-resume");
    let dest = out.join("artifact.bin");
    let body = range_body();
    let sum = sha256_hex(&body);
    let url = server.url();
    initbox([
        "fetch",
        &url,
        "-o",
        dest.to_str().unwrap(),
        "--sha256",
        &sum,
    ])
    .run()
    .success()
    .stderr_has(&format!("resuming at byte {BREAK_AT}"));
    assert!(
        fs::read(&dest).unwrap() == body,
        "the file differs from the body"
    );
    let heads = server.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let first = heads[0].to_ascii_lowercase();
    assert!(!first.contains("range:"), "{first}");
    let second = heads[1].to_ascii_lowercase();
    assert!(
        second.contains(&format!("\r\nrange: bytes={BREAK_AT}-\r\n")),
        "{second}"
    );
    assert!(second.contains("\r\nif-range: \"v1\"\r\n"), "{second}");
    assert_eq!(server.sent.load(Ordering::SeqCst), body.len());
    assert_eq!(out.names(), ["artifact.bin"]);
}

/// Issue 10: a `200` answer to the ranged request (the file changed) starts over cleanly.
#[test]
fn issue_10_a_200_to_a_ranged_request_starts_over() {
    let server = RangeServer::start(false);
    let out = TempDir::new("fetch-restart");
    let dest = out.join("artifact.bin");
    let body = range_body();
    let url = server.url();
    initbox([
        "fetch",
        &url,
        "-o",
        dest.to_str().unwrap(),
        "--sha256",
        &sha256_hex(&body),
    ])
    .run()
    .success();
    assert!(
        fs::read(&dest).unwrap() == body,
        "the file differs from the body"
    );
    let heads = server.heads.lock().unwrap().clone();
    assert!(
        heads[1].to_ascii_lowercase().contains("range: bytes="),
        "{heads:?}"
    );
    assert_eq!(server.sent.load(Ordering::SeqCst), BREAK_AT + body.len());
    assert_eq!(out.names(), ["artifact.bin"]);
}

/// Issue 10: several downloads in one run, all or nothing. When all succeed every DEST is in
/// place; when one fails (404), no DEST is replaced, no temporary is left, and the failure
/// decides the exit code.
#[test]
fn issue_10_several_downloads_are_all_or_nothing() {
    let nginx = Nginx::start();
    let out = TempDir::new("fetch-several");
    let (a, b, c) = (out.join("a.txt"), out.join("b.bin"), out.join("c.txt"));
    let (hello, zeros) = (nginx.url("/hello.txt"), nginx.url("/zeros.bin"));
    let text = nginx.url("/text.txt");
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();
    initbox([
        "fetch",
        &hello,
        "-o",
        &path(&a),
        &zeros,
        "-o",
        &path(&b),
        &text,
        "-o",
        &path(&c),
    ])
    .run()
    .success();
    assert_eq!(fs::read_to_string(&a).unwrap(), HELLO);
    assert_eq!(fs::read(&b).unwrap(), vec![0u8; 65536]);
    assert_eq!(
        fs::read(&c).unwrap(),
        fs::read(nginx.www("text.txt")).unwrap()
    );
    for file in [&a, &b, &c] {
        fs::write(file, "old\n").unwrap();
    }
    let missing = nginx.url("/missing.txt");
    initbox([
        "fetch",
        &hello,
        "-o",
        &path(&a),
        &missing,
        "-o",
        &path(&b),
        &text,
        "-o",
        &path(&c),
    ])
    .run()
    .code(76)
    .stderr_has("404");
    for file in [&a, &b, &c] {
        assert_eq!(
            fs::read_to_string(file).unwrap(),
            "old\n",
            "{}",
            file.display()
        );
    }
    assert_eq!(out.names(), ["a.txt", "b.bin", "c.txt"]);
    // Pairs must match up.
    initbox(["fetch", &hello, "-o", &path(&a), &zeros])
        .run()
        .code(64);
    initbox(["fetch", &hello, "-o", &path(&a), &zeros, "-o", &path(&a)])
        .run()
        .code(64);
}
