//! The one HTTP option set (issue 10): every applet that speaks HTTP accepts and refuses the same
//! values, checked with `--check-args` over one table, so the parsers cannot drift apart again.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{free_port, initbox, make_pki, openssl, NginxProcess, TempDir};

/// Each applet that takes the HTTP options, with the rest of a valid command line.
fn applets(dir: &TempDir) -> Vec<(&'static str, Vec<String>)> {
    let dest = dir.join("dest").display().to_string();
    vec![
        (
            "fetch",
            vec!["http://127.0.0.1:9/f".into(), "-o".into(), dest.clone()],
        ),
        ("git-shallow", vec!["http://127.0.0.1:9/r.git".into(), dest]),
        ("wait", vec!["http://127.0.0.1:9/healthz".into()]),
    ]
}

/// Good option values: accepted by every applet. None of these files exists: `--check-args`
/// reads no file and no variable.
const GOOD: &[&[&str]] = &[
    &["--ca-file", "/nonexistent/ca.pem"],
    &["--ca-file", "a.pem", "--ca-file", "b.pem", "--ca-file-only"],
    &[
        "--cert",
        "/nonexistent/c.pem",
        "--key",
        "/nonexistent/k.pem",
    ],
    &["--connect-timeout", "1"],
    &["--connect-timeout", "500ms"],
    &["--read-timeout", "1m30s"],
    &["--header", "X-Api-Key: k", "--header", "Accept: */*"],
    &["--header-from-env", "Authorization=SOME_VAR"],
    &["--bearer-file", "/nonexistent/token"],
    &["--basic-auth-from-env", "CREDS"],
    &["--retries", "0"],
    &["--retries", "10"],
];

/// Bad option values: refused (64) by every applet.
const BAD: &[&[&str]] = &[
    // Issue 10: git-shallow accepted a zero connect timeout that fetch refused.
    &["--connect-timeout", "0"],
    &["--read-timeout", "0"],
    &["--connect-timeout", "soon"],
    &["--ca-file-only"],
    &["--cert", "c.pem"],
    &["--key", "k.pem"],
    &["--header", "no colon"],
    &["--header", "Bad Name: v"],
    &["--header-from-env", "NoEquals"],
    &["--header-from-env", "=VAR"],
    &["--retries", "-1"],
    &["--retries", "many"],
    &["--bearer-file", "t", "--basic-auth-from-env", "CREDS"],
    &["--ca-file"],
];

/// Issue 10: fetch and git-shallow parsed the HTTP options twice, with rules that had drifted
/// (`--connect-timeout 0`, `--ca-file-only` only in fetch, `--header` only in fetch).
#[test]
fn issue_10_every_http_applet_takes_the_same_options() {
    let dir = TempDir::new("http-options");
    for (applet, rest) in applets(&dir) {
        for options in GOOD {
            let mut args: Vec<String> = vec![applet.into(), "--check-args".into()];
            args.extend(options.iter().map(|s| s.to_string()));
            args.extend(rest.iter().cloned());
            initbox(&args).run().success();
        }
        for options in BAD {
            let mut args: Vec<String> = vec![applet.into(), "--check-args".into()];
            args.extend(options.iter().map(|s| s.to_string()));
            args.extend(rest.iter().cloned());
            initbox(&args).run().code(64);
        }
    }
}

/// Every HTTP applet documents the options in the one shared help block.
#[test]
fn issue_10_every_http_applet_shows_the_http_options_block() {
    let dir = TempDir::new("http-help");
    for (applet, _) in applets(&dir) {
        let out = initbox([applet, "--help"]).run();
        out.success()
            .stdout_has("HTTP OPTIONS")
            .stdout_has("--cert PEM, --key PEM");
    }
}

/// A client certificate signed by the CA in `dir` (from `make_pki`), with a key of `kind`
/// (`ec` or `rsa`), written as `NAME.pem` and `NAME.key` (PKCS#8, as openssl writes it).
pub(crate) fn client_cert(dir: &Path, name: &str, kind: &str) -> (PathBuf, PathBuf) {
    let key = format!("{name}.key");
    let newkey: &[&str] = match kind {
        "rsa" => &["-newkey", "rsa:2048"],
        _ => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    };
    let mut req = vec!["req", "-nodes", "-keyout", &key, "-out", "client.csr"];
    req.extend(newkey);
    req.extend(["-subj", "/CN=initbox test client"]);
    openssl(dir, &req);
    fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "client.cnf",
        ],
    );
    (dir.join(pem), dir.join(key))
}

/// nginx serving HTTPS that requires a client certificate from the test CA
/// (`ssl_verify_client on`), and plain HTTP beside it; stopped on drop.
struct MtlsNginx {
    _process: NginxProcess,
    dir: TempDir,
    port: u16,
    tls_port: u16,
}

impl MtlsNginx {
    fn start() -> MtlsNginx {
        let dir = TempDir::new("nginx-mtls");
        fs::create_dir_all(dir.join("www")).unwrap();
        fs::write(dir.join("www/secret.txt"), SECRET_BODY).unwrap();
        make_pki(dir.path());
        let (port, tls_port) = (free_port(), free_port());
        let d = dir.path().display();
        let http_body = format!(
            r#"    server {{ listen 127.0.0.1:{port}; root {d}/www; }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        ssl_client_certificate {d}/ca.pem;
        ssl_verify_client on;
        root {d}/www;
    }}
"#
        );
        let process = NginxProcess::start(dir.path(), &http_body, &[port, tls_port]);
        MtlsNginx {
            _process: process,
            dir,
            port,
            tls_port,
        }
    }
}

const SECRET_BODY: &str = "for clients with a certificate\n";

/// Issue 10: client certificates (`--cert`, `--key`) for servers with `ssl_verify_client on`,
/// EC and RSA keys; missing files are 66, a key of another certificate is 78 with the reason,
/// and no key material is ever printed.
#[test]
fn issue_10_client_certificates_for_mtls_servers() {
    let server = MtlsNginx::start();
    let dir = server.dir.path();
    let ca = dir.join("ca.pem");
    let url = format!("https://127.0.0.1:{}/secret.txt", server.tls_port);
    let out = TempDir::new("mtls-out");
    let dest = out.join("secret.txt");
    let fetch = |extra: &[&Path]| {
        let mut args: Vec<OsString> = ["fetch", &url, "-o"].map(OsString::from).to_vec();
        args.push(dest.clone().into());
        args.extend(["--ca-file".into(), ca.clone().into_os_string()]);
        for (flag, path) in ["--cert", "--key"].iter().zip(extra) {
            args.extend([OsString::from(flag), path.as_os_str().to_owned()]);
        }
        initbox(args).run()
    };
    // Without a certificate nginx answers 400.
    fetch(&[]).code(76);
    for kind in ["ec", "rsa"] {
        let (cert, key) = client_cert(dir, kind, kind);
        let _ = fs::remove_file(&dest);
        fetch(&[&cert, &key]).success();
        assert_eq!(fs::read_to_string(&dest).unwrap(), SECRET_BODY);
    }
    let (cert, _) = client_cert(dir, "ec", "ec");
    let (_, other_key) = client_cert(dir, "other", "ec");
    let key_text = fs::read_to_string(&other_key).unwrap();
    let key_line = key_text.lines().nth(1).unwrap();
    fetch(&[&cert, &other_key])
        .code(78)
        .stderr_has("does not match")
        .stderr_lacks(key_line);
    fetch(&[&cert, &dir.join("missing.key")]).code(66);
    fetch(&[&dir.join("missing.pem"), &other_key]).code(66);
    // A key file that holds no key is data error, named by its path only.
    fetch(&[&cert, &cert]).code(65).stderr_has("no private key");
}

/// Issue 10: a TLS setting that does not apply is no error. A missing `--cert` or
/// `SSL_CERT_FILE` must not break a plain http:// fetch or clone.
#[test]
fn issue_10_tls_settings_do_not_break_plain_http() {
    let server = MtlsNginx::start();
    let out = TempDir::new("mtls-plain");
    let dest = out.join("secret.txt");
    let url = format!("http://127.0.0.1:{}/secret.txt", server.port);
    initbox([
        "fetch",
        &url,
        "-o",
        dest.to_str().unwrap(),
        "--cert",
        "/nonexistent/c.pem",
        "--key",
        "/nonexistent/k.pem",
    ])
    .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
    .run()
    .success();
    assert_eq!(fs::read_to_string(&dest).unwrap(), SECRET_BODY);
}
