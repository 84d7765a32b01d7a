//! Test harness: run the built binary as a user would, and the scratch harness that runs it alone
//! in an empty root as PID 1 of fresh namespaces, as in a `FROM scratch` container.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The binary under test: `INITBOX_BIN` when set (scripts/test sets it to the musl release
/// binary, the one the image ships), else the one cargo built beside these tests.
pub fn bin() -> PathBuf {
    std::env::var_os("INITBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_initbox")))
}

/// The target triple `bin()` was built for, as `--version` should report it.
pub fn bin_target() -> String {
    std::env::var("INITBOX_BIN_TARGET").unwrap_or_else(|_| env!("INITBOX_TARGET").to_string())
}

/// A directory removed at the end of the test.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "initbox-test-{name}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }

    /// File names in the directory, sorted: to assert that no temporary was left behind.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a finished command did.
pub struct Outcome {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    fn describe(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "command: {}", self.command);
        let _ = writeln!(text, "exit code: {:?} after {:?}", self.code, self.elapsed);
        let _ = writeln!(text, "stdout:\n{}", self.stdout);
        let _ = writeln!(text, "stderr:\n{}", self.stderr);
        text
    }

    #[track_caller]
    pub fn code(&self, expected: i32) -> &Outcome {
        assert_eq!(self.code, Some(expected), "\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Outcome {
        self.code(0)
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Outcome {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Outcome {
        assert!(
            !self.stderr.contains(needle),
            "stderr has {needle:?}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Outcome {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn within(&self, limit: Duration) -> &Outcome {
        assert!(
            self.elapsed <= limit,
            "took longer than {limit:?}\n{}",
            self.describe()
        );
        self
    }
}

/// A command under test, spawned with piped output and a safety limit so no test hangs.
pub struct Cmd {
    command: Command,
    limit: Duration,
}

/// `initbox ARGS...`, run directly.
pub fn initbox<I, S>(args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(bin());
    command.args(args);
    Cmd::from(command)
}

impl From<Command> for Cmd {
    fn from(mut command: Command) -> Cmd {
        command.env_remove("INITBOX_LOG_FORMAT");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Cmd {
            command,
            limit: Duration::from_secs(60),
        }
    }
}

impl Cmd {
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.command.env(key, value);
        self
    }

    /// Sends stdout to `file` instead of capturing it, e.g. /dev/full to make writes fail.
    pub fn stdout_file(mut self, file: fs::File) -> Cmd {
        self.command.stdout(file);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Cmd {
        self.command.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.command.current_dir(dir);
        self
    }

    pub fn stdin_file(mut self, file: fs::File) -> Cmd {
        self.command.stdin(file);
        self
    }

    pub fn limit(mut self, limit: Duration) -> Cmd {
        self.limit = limit;
        self
    }

    pub fn spawn(mut self) -> Running {
        let command = format!("{:?}", self.command);
        let child = self.command.spawn().unwrap();
        Running {
            child,
            command,
            started: Instant::now(),
            limit: self.limit,
        }
    }

    pub fn run(self) -> Outcome {
        self.spawn().finish()
    }
}

pub struct Running {
    pub child: Child,
    command: String,
    started: Instant,
    limit: Duration,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the process, or, for the scratch harness, to PID 1 of its namespace.
    pub fn signal(&self, signal: i32, target: i32) {
        // SAFETY: kill has no memory effects; the pid belongs to a child of this test.
        let status = unsafe { libc::kill(target, signal) };
        assert_eq!(status, 0, "kill({target}, {signal}) failed");
    }

    /// Waits for the command (killing it past its limit, which fails the test) and collects it.
    pub fn finish(mut self) -> Outcome {
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            if self.started.elapsed() > self.limit {
                let _ = self.child.kill();
                let output = self.child.wait_with_output().unwrap();
                panic!(
                    "{} did not finish within {:?}\nstdout:\n{}\nstderr:\n{}",
                    self.command,
                    self.limit,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let elapsed = self.started.elapsed();
        let output = self.child.wait_with_output().unwrap();
        Outcome {
            command: self.command,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }
}

/// Whether root-only tests can run. Elsewhere they skip with a reason, except under CI=true,
/// where a skip is a failure, so CI always runs them.
#[track_caller]
pub fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root (namespaces, chroot) and CI must run it"
    );
    eprintln!("SKIP {test}: needs root for namespaces and chroot");
    false
}

/// Fails with a clear reason when a tool a test needs is missing; `.ci/run` installs them all.
#[track_caller]
pub fn require_tool(tool: &str) -> PathBuf {
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let path = Path::new(dir).join(tool);
        if path.exists() {
            return path;
        }
    }
    panic!("{tool} is not installed: run .ci/run, which installs the test dependencies");
}

/// A free TCP port on loopback (bound and released; the test binds it again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An empty root holding only the static binary (at `/initbox`) and the files a test adds, run
/// in new pid and mount namespaces (initbox is PID 1) and optionally a new network namespace.
pub struct Scratch {
    pub root: TempDir,
    new_net: bool,
    loopback_up: bool,
    proc: Option<ProcMount>,
}

/// How `Scratch::with_proc` mounts a procfs of the new pid namespace at `/proc` in the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcMount {
    ReadWrite,
    /// As in an unprivileged container, where /proc/sys is read-only.
    ReadOnly,
}

impl Scratch {
    pub fn new() -> Scratch {
        let binary = fs::read(bin()).unwrap();
        assert!(
            !binary[..binary.len().min(4096)]
                .windows(12)
                .any(|w| w == b"/lib64/ld-li"),
            "the binary under test is dynamically linked; run the tests as README says \
             (scripts/test) so that it is the static musl binary"
        );
        let root = TempDir::new("scratch");
        let path = root.join("initbox");
        fs::write(&path, binary).unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Scratch {
            root,
            new_net: false,
            loopback_up: false,
            proc: None,
        }
    }

    /// Adds a file to the root, e.g. `etc/hosts`.
    pub fn file(self, rel: &str, content: &str) -> Scratch {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        self
    }

    /// Runs in a fresh network namespace (no route anywhere); `loopback_up` brings `lo` up in it.
    pub fn isolated_network(mut self, loopback_up: bool) -> Scratch {
        self.new_net = true;
        self.loopback_up = loopback_up;
        self
    }

    /// Mounts a procfs at `/proc` in the root (private to the run's mount namespace), for applets
    /// that need /proc/sys of the run's network namespace.
    pub fn with_proc(mut self, mount: ProcMount) -> Scratch {
        fs::create_dir_all(self.root.join("proc")).unwrap();
        self.proc = Some(mount);
        self
    }

    /// `initbox ARGS...` as PID 1 inside the scratch root.
    pub fn initbox<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(require_tool("unshare"));
        command.args(["--pid", "--mount", "--fork", "--kill-child"]);
        if self.new_net {
            command.arg("--net");
        }
        command.arg("--");
        if let Some(mount) = self.proc {
            // Like the loopback case: the set-up runs before the chroot, which execs initbox.
            let options = match mount {
                ProcMount::ReadWrite => "rw",
                ProcMount::ReadOnly => "ro",
            };
            let lo = if self.loopback_up {
                "ip link set lo up && "
            } else {
                ""
            };
            command.args([
                "sh".to_string(),
                "-c".to_string(),
                format!(
                    "{lo}mount -t proc -o {options} proc \"$0/proc\" && \
                     exec chroot \"$0\" /initbox \"$@\""
                ),
            ]);
            command.arg(self.root.path());
        } else if self.loopback_up {
            // `ip` runs before the chroot and execs it, so initbox is still PID 1.
            command.args([
                "sh",
                "-c",
                "ip link set lo up && exec chroot \"$0\" /initbox \"$@\"",
            ]);
            command.arg(self.root.path());
        } else {
            command
                .arg(require_tool("chroot"))
                .arg(self.root.path())
                .arg("/initbox");
        }
        command.args(args);
        command.env_clear();
        Cmd::from(command)
    }
}

/// The pid (in this namespace) of PID 1 of a scratch run: the child of `unshare`. Waits for it.
pub fn scratch_pid1(running: &Running) -> i32 {
    let unshare = running.pid();
    let started = Instant::now();
    loop {
        let children = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let pid: i32 = pid.parse().unwrap();
            // Past the exec into initbox (unshare forks, then sh/chroot exec initbox).
            let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe.file_name() == Some(OsStr::new("initbox")) {
                return pid;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "scratch PID 1 never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until stderr of a process would show progress: polls a condition with a limit.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A CA and a server certificate for 127.0.0.1 (IP SAN only, so `localhost` is a name mismatch).
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Runs the openssl CLI in `dir`; fails the test when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(require_tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Made with the openssl CLI in `dir` (ca.pem, server.pem, server.key), valid for two days.
pub fn make_pki(dir: &Path) -> Pki {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=initbox test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=initbox test server",
    ]);
    openssl(dir, &csr);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// A tiny authoritative DNS server on `ADDRESS:53` (UDP), for what the resolver of the binary
/// under test does with real answers: A records for the names given, an empty answer for other
/// types of those names, NXDOMAIN for every other name. It records the names asked, so a test can
/// tell which search suffixes were tried. Stops when dropped.
pub struct DnsServer {
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// `address` is a loopback address of its own (127.0.0.N) so tests can run in parallel.
    pub fn start(address: &str, records: &[(&str, std::net::Ipv4Addr)]) -> DnsServer {
        let socket = std::net::UdpSocket::bind((address, 53)).expect("bind the test DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let records: Vec<(String, std::net::Ipv4Addr)> = records
            .iter()
            .map(|(name, ip)| (name.to_ascii_lowercase(), *ip))
            .collect();
        let asked: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (asked, stop) = (std::sync::Arc::clone(&asked), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut query = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, peer)) = socket.recv_from(&mut query) else {
                        continue;
                    };
                    if let Some((name, reply)) = dns_reply(&query[..len], &records) {
                        asked.lock().unwrap().push(name);
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
        };
        DnsServer {
            asked,
            stop,
            thread: Some(thread),
        }
    }

    /// The names asked so far, in order (one per query: A and AAAA each count).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer to one query (RFC 1035 section 4.1), or `None` for anything that is not one.
fn dns_reply(query: &[u8], records: &[(String, std::net::Ipv4Addr)]) -> Option<(String, Vec<u8>)> {
    const TYPE_A: u16 = 1;
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let question_end = at + 4;
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let name = labels.join(".");
    let address = records
        .iter()
        .find(|(known, _)| *known == name)
        .map(|r| r.1);
    let rcode = if address.is_some() { 0 } else { 3 };
    let answer = address.filter(|_| qtype == TYPE_A);
    let mut reply = query.get(..question_end)?.to_vec();
    reply[2] = 0x84 | (query[2] & 0x01); // response, authoritative, RD copied
    reply[3] = 0x80 | rcode; // recursion available
    reply[4..12].copy_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    if let Some(ip) = answer {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some((name, reply))
}

/// Whether `path` carries the extended attribute `name` (for our temporaries' marker).
pub fn has_xattr(path: &Path, name: &str) -> bool {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call; a zero-size query
    // writes nothing.
    unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

/// An nginx of a test, run in the foreground from `dir` (its pid, logs and temporary files stay
/// there) with `http_body` inside its `http { }` block; stopped when dropped.
pub struct NginxProcess {
    child: Child,
}

impl NginxProcess {
    /// Starts it and waits until every port in `ports` accepts connections; a failed start
    /// panics with nginx's error log.
    pub fn start(dir: &Path, http_body: &str, ports: &[u16]) -> NginxProcess {
        let d = dir.display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/tmp-body;\n\
             proxy_temp_path {d}/tmp-proxy;\nfastcgi_temp_path {d}/tmp-fastcgi;\n\
             uwsgi_temp_path {d}/tmp-uwsgi;\nscgi_temp_path {d}/tmp-scgi;\n{http_body}\n}}\n"
        );
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config).unwrap();
        let child = Command::new(require_tool("nginx"))
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = NginxProcess { child };
        for &port in ports {
            wait_until("nginx to listen", Duration::from_secs(10), || {
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    panic!("nginx exited with {status}: {log}");
                }
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        nginx
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
