//! End-to-end with a real Docker engine: the `prebuilt` image of Dockerfile.scratch holding the
//! static binary under test. Skipped, with the reason printed, only where `docker info` fails.
//! Every image, container and network made here carries the test's unique name and is removed.

use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{bin, TempDir};

/// Runs docker, returning (success, stdout, stderr).
fn docker(args: &[&str]) -> (bool, String, String) {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

#[track_caller]
fn docker_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = docker(args);
    assert!(ok, "docker {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// A lab with the initbox image built, or `None` (test skipped, reason printed) without Docker.
fn lab_with_image(test: &str) -> Option<(Lab, String)> {
    let (ok, _, stderr) = docker(&["info", "--format", "{{.ServerVersion}}"]);
    if !ok {
        eprintln!("SKIP {test}: no Docker engine here (docker info: {stderr})");
        return None;
    }
    let mut lab = Lab::new(test);
    let image = lab.initbox_image();
    Some((lab, image))
}

/// Names the objects of one test and removes them when dropped.
struct Lab {
    prefix: String,
    images: Vec<String>,
    containers: Vec<String>,
    networks: Vec<String>,
}

impl Lab {
    fn new(test: &str) -> Lab {
        Lab {
            prefix: format!(
                "initbox-test-{}-{}",
                test.replace('_', "-"),
                std::process::id()
            ),
            images: Vec::new(),
            containers: Vec::new(),
            networks: Vec::new(),
        }
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// The `prebuilt` target of Dockerfile.scratch with the binary under test.
    fn initbox_image(&mut self) -> String {
        let context = TempDir::new("docker-context");
        std::fs::copy(bin(), context.join("initbox")).unwrap();
        let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile.scratch");
        std::fs::copy(dockerfile, context.join("Dockerfile")).unwrap();
        let tag = self.name("initbox");
        let dir = context.path().to_str().unwrap();
        docker_ok(&[
            "build",
            "-q",
            "--target",
            "prebuilt",
            "--build-arg",
            "BINARY=initbox",
            "-t",
            &tag,
            dir,
        ]);
        self.images.push(tag.clone());
        tag
    }

    /// A scratch image holding Debian's static busybox, listening like a database on 5432.
    fn listener_image(&mut self) -> String {
        let context = TempDir::new("docker-busybox");
        let busybox = crate::util::require_tool("busybox");
        std::fs::copy(busybox, context.join("busybox")).unwrap();
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /busybox\nENTRYPOINT [\"/busybox\", \"nc\", \"-l\", \"-p\", \"5432\"]\n",
        )
        .unwrap();
        let tag = self.name("db");
        docker_ok(&["build", "-q", "-t", &tag, context.path().to_str().unwrap()]);
        self.images.push(tag.clone());
        tag
    }

    fn network(&mut self) -> String {
        let name = self.name("net");
        docker_ok(&["network", "create", &name]);
        self.networks.push(name.clone());
        name
    }

    fn container(&mut self, what: &str) -> String {
        let name = self.name(what);
        self.containers.push(name.clone());
        name
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = docker(&["rm", "-f", container]);
        }
        for network in &self.networks {
            let _ = docker(&["network", "rm", network]);
        }
        for image in &self.images {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

#[test]
fn image_runs_version_and_is_the_binary() {
    let Some((_lab, image)) = lab_with_image("image_runs_version_and_is_the_binary") else {
        return;
    };
    let out = docker_ok(&["run", "--rm", &image, "--version"]);
    assert!(
        out.lines()
            .any(|line| line.starts_with("applets: ") && line.contains(" wait-tcp")),
        "{out}"
    );
    let size: u64 = docker_ok(&["image", "inspect", "--format", "{{.Size}}", &image])
        .parse()
        .unwrap();
    let binary = std::fs::metadata(bin()).unwrap().len();
    // The image is the binary and nothing else: no shell, no CA bundle.
    assert!(
        size <= binary + 4096,
        "image {size} bytes, binary {binary} bytes"
    );
    let user = docker_ok(&["image", "inspect", "--format", "{{.Config.User}}", &image]);
    assert_eq!(user, "65532:65532");
}

#[test]
fn wait_tcp_finds_a_late_database_through_docker_dns() {
    let Some((mut lab, image)) =
        lab_with_image("wait_tcp_finds_a_late_database_through_docker_dns")
    else {
        return;
    };
    let db_image = lab.listener_image();
    let network = lab.network();
    let waiter = lab.container("waiter");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &waiter,
        "--network",
        &network,
        &image,
        "wait-tcp",
        "db:5432",
        "--timeout",
        "60s",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let db = lab.container("db");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &db,
        "--network-alias",
        "db",
        "--network",
        &network,
        &db_image,
    ]);
    let code = docker_ok(&["wait", &waiter]);
    let logs = docker(&["logs", &waiter]).2;
    assert_eq!(code, "0", "{logs}");
    assert!(logs.contains("db:5432 ready after"), "{logs}");
}

#[test]
fn docker_stop_is_obeyed_at_once_with_143() {
    let Some((mut lab, image)) = lab_with_image("docker_stop_is_obeyed_at_once_with_143") else {
        return;
    };
    let waiter = lab.container("waiter");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &waiter,
        &image,
        "wait-tcp",
        "127.0.0.1:1",
        "--timeout",
        "1h",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    docker_ok(&["stop", "--time", "10", &waiter]);
    let stopped_after = started.elapsed();
    let code = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &waiter]);
    assert_eq!(code, "143");
    // Far from the 10 s after which docker would have used SIGKILL.
    assert!(stopped_after < Duration::from_secs(3), "{stopped_after:?}");
}

#[test]
fn fetch_in_a_container_trusts_a_mounted_ca_file() {
    let Some((_lab, image)) = lab_with_image("fetch_in_a_container_trusts_a_mounted_ca_file")
    else {
        return;
    };
    let nginx = crate::fetch::Nginx::start();
    let volume = TempDir::new("docker-fetch");
    // The image runs as 65532: let it write into the mounted directory.
    std::fs::set_permissions(
        volume.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    std::fs::copy(nginx.ca_file(), volume.join("ca.pem")).unwrap();
    let mount = format!("{}:/work", volume.path().display());
    // Host networking keeps the traffic on loopback, where the test's nginx listens.
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        &mount,
        &image,
        "fetch",
        &nginx.tls_url("/hello.txt"),
        "-o",
        "/work/hello.txt",
        "--ca-file",
        "/work/ca.pem",
    ]);
    assert_eq!(
        std::fs::read_to_string(volume.join("hello.txt")).unwrap(),
        std::fs::read_to_string(nginx.www("hello.txt")).unwrap()
    );
    // Without the CA file only the embedded roots are trusted: 78, nothing written.
    let (ok, _, stderr) = docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        &mount,
        &image,
        "fetch",
        &nginx.tls_url("/hello.txt"),
        "-o",
        "/work/again.txt",
        "--retries",
        "0",
    ]);
    assert!(!ok, "an untrusted certificate was accepted");
    assert!(
        stderr.contains("certificate not trusted (unknown issuer)"),
        "{stderr}"
    );
    assert!(!volume.join("again.txt").exists());
}

#[test]
fn git_shallow_in_a_container_checks_out_a_commit() {
    let Some((_lab, image)) = lab_with_image("git_shallow_in_a_container_checks_out_a_commit")
    else {
        return;
    };
    use crate::git_server::{Behaviour, GitServer, Repo};
    let repo = Repo::new("docker-git");
    std::fs::write(repo.work.join("index.html"), "<h1>site</h1>\n").unwrap();
    std::fs::create_dir(repo.work.join("css")).unwrap();
    std::fs::write(repo.work.join("css/site.css"), "h1 { color: teal }\n").unwrap();
    let commit = repo.commit("site");
    repo.publish();
    let server = GitServer::start(repo.root.path(), Behaviour::default());
    let volume = TempDir::new("docker-git-out");
    std::fs::set_permissions(
        volume.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mount = format!("{}:/site", volume.path().display());
    let out = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        &mount,
        &image,
        "git-shallow",
        &server.url("repo.git"),
        "/site/html",
        "--revision-file",
        "/site/REVISION",
    ]);
    assert!(out.contains(&commit), "{out}");
    assert_eq!(
        std::fs::read_to_string(volume.join("html/css/site.css")).unwrap(),
        "h1 { color: teal }\n"
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("REVISION"))
            .unwrap()
            .trim(),
        commit
    );
}

/// Runs the image with the volume `dir` mounted at /data; `options` go before the image.
fn run_on_volume(image: &str, dir: &std::path::Path, options: &[&str], args: &[&str]) -> String {
    let mount = format!("{}:/data", dir.display());
    let mut all = vec!["run", "--rm", "-v", &mount];
    all.extend_from_slice(options);
    all.push(image);
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = docker(&all);
    assert!(ok, "docker {all:?} failed:\n{stdout}\n{stderr}");
    stderr
}

/// Issue 9 #2: the README's initContainer, securityContext and all (root with only CHOWN and
/// FOWNER), on a volume owned 65532: 77 on the first run and on every restart.
#[test]
fn issue_9_2_chmod_tree_with_only_chown_and_fowner_in_a_container() {
    let Some((_lab, image)) =
        lab_with_image("issue_9_2_chmod_tree_with_only_chown_and_fowner_in_a_container")
    else {
        return;
    };
    let dir = TempDir::new("docker-chmod-caps");
    let app = crate::chmod_tree::volume(&dir);
    let security = [
        "--user",
        "0",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CHOWN",
        "--cap-add",
        "FOWNER",
    ];
    let args = [
        "chmod-tree",
        "--mkdir",
        "--if-root-mismatch",
        "--owner",
        "65532:65532",
        "--dir-mode",
        "0750",
        "--file-mode",
        "u=rwX,g=rX,o=",
        "/data/app",
    ];
    let first = run_on_volume(&image, &dir.join("data"), &security, &args);
    assert!(first.contains("changed 4; 0 errors"), "{first}");
    for (path, wanted) in [("", 0o750), ("sub", 0o750), ("f", 0o640), ("sub/g", 0o640)] {
        let meta = std::fs::metadata(app.join(path)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, wanted, "{path}");
        assert_eq!((meta.uid(), meta.gid()), (65532, 65532), "{path}");
    }
    let restart = run_on_volume(&image, &dir.join("data"), &security, &args);
    assert!(
        restart.contains("walk skipped (--if-root-mismatch)"),
        "{restart}"
    );
}

/// Issue 9 #14: under Docker 20.10's default seccomp profile `fchmodat2` is ENOSYS, and the
/// fallback opened every entry: a mode-000 file of the caller's failed (77), a socket 74, and a
/// character device was opened. Nothing but directories may be opened.
#[test]
fn issue_9_14_chmod_tree_without_fchmodat2_opens_no_entry() {
    let Some((_lab, image)) =
        lab_with_image("issue_9_14_chmod_tree_without_fchmodat2_opens_no_entry")
    else {
        return;
    };
    let dir = TempDir::new("docker-chmod-seccomp");
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("secret"), "x").unwrap();
    std::fs::set_permissions(data.join("secret"), PermissionsExt::from_mode(0o000)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(data.join("sock")).unwrap());
    let c =
        |name: &str| std::ffi::CString::new(data.join(name).into_os_string().into_vec()).unwrap();
    // SAFETY: the paths are NUL-terminated.
    assert_eq!(unsafe { libc::mkfifo(c("fifo").as_ptr(), 0o644) }, 0);
    // An unassigned major number (local/experimental range): opening it fails with ENXIO.
    let device = libc::makedev(240, 77);
    // SAFETY: as above.
    let made = unsafe { libc::mknod(c("device").as_ptr(), libc::S_IFCHR | 0o644, device) };
    assert_eq!(made, 0);
    for name in ["", "secret", "sock", "fifo", "device"] {
        std::os::unix::fs::lchown(data.join(name), Some(65532), Some(65532)).unwrap();
    }
    // The image's own user (65532), the default seccomp profile.
    let out = run_on_volume(
        &image,
        &data,
        &[],
        &[
            "chmod-tree",
            "--dir-mode",
            "0750",
            "--file-mode",
            "0640",
            "/data",
        ],
    );
    assert!(out.contains("changed 5; 0 errors"), "{out}");
    for name in ["secret", "sock", "fifo", "device"] {
        let meta = std::fs::symlink_metadata(data.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "{name}");
    }
}

/// Issue 12: `docker stop` of `init -- app` whose app traps SIGTERM and exits 0: the container
/// exits 0 at once, not 137 after docker's 10 s.
#[test]
fn issue_12_docker_stop_of_init_forwards_sigterm_and_passes_exit_0() {
    let Some((mut lab, image)) =
        lab_with_image("issue_12_docker_stop_of_init_forwards_sigterm_and_passes_exit_0")
    else {
        return;
    };
    let busybox = crate::util::require_tool("busybox");
    let mount = format!("{}:/busybox:ro", busybox.display());
    let app = lab.container("app");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &app,
        "-v",
        &mount,
        &image,
        "init",
        "--",
        "/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do /busybox sleep 1 </busybox & wait $!; done",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    docker_ok(&["stop", "--time", "10", &app]);
    let stopped_after = started.elapsed();
    let code = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &app]);
    let logs = docker(&["logs", &app]).2;
    assert_eq!(code, "0", "{logs}");
    assert!(stopped_after < Duration::from_secs(1), "{stopped_after:?}");
}
