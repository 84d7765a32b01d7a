//! A tiny HTTP/1.1 server on loopback that runs Debian's real `git http-backend` as a CGI for
//! each request, the way nginx+fcgiwrap would: the `Git-Protocol` header becomes `GIT_PROTOCOL`
//! (unless the server is told to speak only v0), and the CGI's `Status:` header the status line.
//! Test hooks: stall the pack response, slow it down, or replace the upload-pack body.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::util::{require_tool, TempDir};

pub const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

#[derive(Clone, Default)]
pub struct Behaviour {
    /// Do not pass `Git-Protocol` on: the backend speaks v0 only.
    pub v0_only: bool,
    /// After this many bytes of an upload-pack response, send nothing more (until dropped).
    pub stall_after: Option<usize>,
    /// Pause between 4 KiB chunks of upload-pack responses.
    pub chunk_pause: Option<Duration>,
    /// Answer every upload-pack POST with this body instead (a crafted response).
    pub upload_pack_body: Option<Vec<u8>>,
    /// Require this `Authorization` header value, else 401.
    pub require_auth: Option<String>,
}

pub struct GitServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicUsize>,
    pub seen_headers: Arc<Mutex<Vec<String>>>,
}

impl GitServer {
    /// Serves the repositories under `root` (`http://127.0.0.1:PORT/NAME.git`).
    pub fn start(root: &Path, behaviour: Behaviour) -> GitServer {
        assert!(
            Path::new(HTTP_BACKEND).exists(),
            "{HTTP_BACKEND} is missing: install Debian's git"
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let seen_headers = Arc::new(Mutex::new(Vec::new()));
        let root = root.to_path_buf();
        {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            let seen = Arc::clone(&seen_headers);
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            requests.fetch_add(1, Ordering::SeqCst);
                            let (root, behaviour) = (root.clone(), behaviour.clone());
                            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
                            thread::spawn(move || {
                                let _ = serve(stream, &root, &behaviour, &stop, &seen);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        GitServer {
            port,
            stop,
            requests,
            seen_headers,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    stream: TcpStream,
    root: &Path,
    behaviour: &Behaviour,
    stop: &AtomicBool,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    seen.lock().unwrap().extend(headers.iter().cloned());
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut out = stream;
    if let Some(expected) = &behaviour.require_auth {
        if header("authorization").as_deref() != Some(expected.as_str()) {
            out.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
    }
    let upload_pack = path.ends_with("/git-upload-pack");
    if upload_pack {
        let fetch = body.windows(13).any(|w| w == b"command=fetch") || body.starts_with(b"0");
        let ls_refs = body.windows(15).any(|w| w == b"command=ls-refs");
        match &behaviour.upload_pack_body {
            Some(crafted) if fetch && !ls_refs => {
                write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                crafted.len()
            )?;
                return out.write_all(crafted);
            }
            _ => {}
        }
    }
    let mut command = Command::new(HTTP_BACKEND);
    command
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", length.to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(content_type) = header("content-type") {
        command.env("CONTENT_TYPE", content_type);
    }
    if !behaviour.v0_only {
        if let Some(protocol) = header("git-protocol") {
            command.env("GIT_PROTOCOL", protocol);
        }
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut cgi = BufReader::new(child.stdout.take().unwrap());
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    loop {
        let mut line = String::new();
        if cgi.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        match line.strip_prefix("Status:") {
            Some(s) => status = s.trim().to_string(),
            None => response_headers.push_str(&format!("{line}\r\n")),
        }
    }
    write!(
        out,
        "HTTP/1.1 {status}\r\n{response_headers}Connection: close\r\n\r\n"
    )?;
    let mut sent = 0;
    let mut buf = vec![0; 4096];
    loop {
        let n = cgi.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if upload_pack {
            if let Some(limit) = behaviour.stall_after {
                if sent + chunk.len() >= limit {
                    chunk = &chunk[..limit - sent];
                    out.write_all(chunk)?;
                    out.flush()?;
                    while !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                    let _ = child.kill();
                    return Ok(());
                }
            }
            if let Some(pause) = behaviour.chunk_pause {
                thread::sleep(pause);
                if stop.load(Ordering::SeqCst) {
                    let _ = child.kill();
                    return Ok(());
                }
            }
        }
        out.write_all(chunk)?;
        sent += chunk.len();
    }
    let _ = child.wait();
    Ok(())
}

/// A work tree and its bare copy under a served root, built with real git.
pub struct Repo {
    pub root: TempDir,
    pub work: PathBuf,
    pub bare: PathBuf,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(require_tool("git"))
        .current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `git` fed with stdin (for `mktree`, `hash-object --stdin`).
pub fn git_stdin(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new(require_tool("git"))
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Repo {
    pub fn new(name: &str) -> Repo {
        let root = TempDir::new(name);
        let work = root.join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        let bare = root.join("repo.git");
        Repo { root, work, bare }
    }

    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// (Re)publishes the work tree's refs as the bare repository the server serves.
    pub fn publish(&self) {
        let _ = std::fs::remove_dir_all(&self.bare);
        git(
            self.root.path(),
            &["clone", "-q", "--bare", "--no-local", "work", "repo.git"],
        );
        git(
            &self.bare,
            &["config", "uploadpack.allowReachableSHA1InWant", "true"],
        );
    }
}

/// What a hostile server answers: `info/refs`, `ls-refs` and `fetch`, each written to the socket
/// by a function, so a response can be endless or huge without being held in memory.
pub type Answer = Arc<dyn Fn(&mut dyn Write) -> std::io::Result<()> + Send + Sync>;

/// A hand-made hostile git server on loopback (issue 9 #9): it speaks just enough HTTP and
/// pkt-line to reach each parser, then sends what no honest server would.
pub struct HostileServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl HostileServer {
    pub fn start(info_refs: Answer, ls_refs: Answer, fetch: Answer) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let answers = [&info_refs, &ls_refs, &fetch].map(Arc::clone);
                thread::spawn(move || {
                    let _ = answer(stream, &answers);
                });
            }
        });
        HostileServer { port, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/repo.git", self.port)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer(stream: TcpStream, answers: &[Answer; 3]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (content_type, which) = if request_line.contains("/info/refs") {
        ("application/x-git-upload-pack-advertisement", 0)
    } else if body.windows(15).any(|w| w == b"command=ls-refs") {
        (CONTENT_TYPE_RESULT, 1)
    } else {
        (CONTENT_TYPE_RESULT, 2)
    };
    let mut out = std::io::BufWriter::new(stream);
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
    )?;
    answers[which](&mut out)?;
    out.flush()
}

const CONTENT_TYPE_RESULT: &str = "application/x-git-upload-pack-result";

/// One pkt-line.
pub fn pkt(out: &mut dyn Write, payload: &[u8]) -> std::io::Result<()> {
    write!(out, "{:04x}", payload.len() + 4)?;
    out.write_all(payload)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File(u32, Vec<u8>),
    Link(PathBuf),
    Dir(u32),
}

/// Every path under `root` with its type, permission bits and content, without the `.git`
/// directory or file (a submodule's, in git's own clone) at any level.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Node>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let path = entry.path();
            let rel = format!("{prefix}{name}");
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), Node::Dir(mode));
                walk(&path, &format!("{rel}/"), out);
            } else {
                out.insert(rel, Node::File(mode, fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// nginx on loopback in front of a [`GitServer`]: `/private/` needs basic auth (an htpasswd file
/// made by `openssl passwd -apr1`), `/forbidden/` answers 403; stopped on drop.
pub struct AuthProxy {
    _process: crate::util::NginxProcess,
    port: u16,
    _dir: TempDir,
}

impl AuthProxy {
    pub fn start(backend: &GitServer, user: &str, password: &str) -> AuthProxy {
        let dir = TempDir::new("nginx-auth");
        let hash = std::process::Command::new(crate::util::require_tool("openssl"))
            .args(["passwd", "-apr1", password])
            .output()
            .unwrap();
        assert!(hash.status.success(), "openssl passwd failed");
        let hash = String::from_utf8(hash.stdout).unwrap();
        std::fs::write(dir.join("htpasswd"), format!("{user}:{}\n", hash.trim())).unwrap();
        let port = crate::util::free_port();
        let d = dir.path().display();
        let http_body = format!(
            r#"    server {{
        listen 127.0.0.1:{port};
        location /private/ {{
            auth_basic "git";
            auth_basic_user_file {d}/htpasswd;
            proxy_pass http://127.0.0.1:{backend}/;
        }}
        location /forbidden/ {{ return 403; }}
    }}
"#,
            backend = backend.port,
        );
        let process = crate::util::NginxProcess::start(dir.path(), &http_body, &[port]);
        AuthProxy {
            _process: process,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}
