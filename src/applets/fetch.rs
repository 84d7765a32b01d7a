//! `fetch`: download a file over HTTP(S) into a volume, atomically.
//!
//! The body streams through one fixed buffer into a temporary file beside the destination (its
//! SHA-256 computed on the way only when `--sha256` or `--print-sha256` asks), so memory stays
//! constant whatever the size. Only a complete body
//! with the right size and checksum is given its mode and owner, synced and renamed over the
//! destination; any failure, timeout or signal removes the temporary and leaves the old file.
//! Connect errors, timeouts (including a server that stalls mid-body), 5xx and 429 are retried
//! with backoff and jitter, honouring `Retry-After` as long as the deadline allows. The client
//! itself (trust, proxies, redirects, error mapping) lives in `src/http/`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::atomic::{parse_mode, AtomicFile, Owner};
use crate::cli::{format_duration, human_size, parse_size, rate, Args};
use crate::error::Error;
use crate::hex::encode as hex;
use crate::http::{self, Client, Failure, Header, Retries, Url};
use crate::log;
use crate::supervisor::{Deadline, Job};

pub const USAGE: &str = "\
Usage: initbox fetch [OPTIONS] URL -o PATH [URL -o PATH]...

Download URL (http:// or https://) to PATH atomically: the body goes to a
temporary file beside PATH, is checked, synced, and renamed over PATH. On any
failure, timeout or signal, PATH keeps its old content. '-o -' writes to stdout.
Several URL -o PATH pairs are fetched concurrently (4 at once), all or nothing:
every PATH is replaced only when every download and check succeeded.

OPTIONS
    -o, --output PATH         destination file, or - for stdout (required; one
                              per URL, in the same order)
    --sha256 HEX              expected SHA-256 of the body; mismatch exits 79
    --print-sha256            print the body's SHA-256 as sha256sum does (on
                              stdout; on stderr with -o -)
    --max-size SIZE           fail beyond this many bytes, e.g. 100M (exit 76)
    --mode MODE               file mode of PATH (default 0644)
    --owner UID[:GID]         numeric owner of PATH
    --timeout DURATION        overall deadline, retries included (default 5m)

Gzip content-encoding is decoded. The HTTP OPTIONS below apply as well.

EXAMPLES
    initbox fetch https://config.example/app.yaml -o /config/app.yaml
    initbox fetch https://dl.example/tool.tgz -o /work/tool.tgz \\
        --sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    initbox fetch https://vault.internal/v1/cfg -o /config/cfg.json \\
        --bearer-file /var/run/secrets/token --ca-file /etc/ca/ca.pem";

const DEFAULT_MODE: u32 = 0o644;
/// One progress line per this long while a body is being received.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The read buffer; the only per-download memory besides ureq's and rustls's own buffers.
const BUFFER_SIZE: usize = 256 * 1024;

/// Downloads run at once when several are given.
const CONCURRENT_DOWNLOADS: usize = 4;

#[derive(Clone)]
enum Destination {
    Stdout,
    File(PathBuf),
}

#[derive(Clone)]
struct Request {
    url: Url,
    /// Filled when the job starts from `http`'s credential options.
    headers: Vec<Header>,
    destination: Destination,
    sha256: Option<[u8; 32]>,
    print_sha256: bool,
    max_size: Option<u64>,
    mode: u32,
    owner: Option<Owner>,
    http: http::Options,
}

pub fn parse(mut args: Args) -> Result<Job, Error> {
    let outputs = args.values(["-o", "--output"])?;
    let sha256 = args.value("--sha256", parse_sha256)?;
    let print_sha256 = args.flag("--print-sha256");
    let max_size = args.value("--max-size", parse_size)?;
    let mode = args.value("--mode", parse_mode)?.unwrap_or(DEFAULT_MODE);
    let owner = args.value("--owner", Owner::parse)?;
    let http = http::Options::parse(&mut args)?;
    let urls = args.positionals()?;
    if urls.is_empty() {
        return Err(Error::usage("no URL given"));
    }
    if outputs.len() != urls.len() {
        return Err(Error::usage(format!(
            "give one -o PATH (or -o - for stdout) per URL: {} URL(s), {} -o",
            urls.len(),
            outputs.len()
        )));
    }
    let several = urls.len() > 1;
    if several && (sha256.is_some() || outputs.iter().any(|o| o == "-")) {
        return Err(Error::usage(
            "--sha256 and -o - take a single download (one URL)",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut requests = Vec::with_capacity(urls.len());
    for (url, output) in urls.iter().zip(outputs) {
        if several && !seen.insert(output.clone()) {
            return Err(Error::usage(format!("-o {output} is given twice")));
        }
        requests.push(Request {
            url: Url::parse(url).map_err(Error::Usage)?,
            headers: Vec::new(),
            destination: match output.as_str() {
                "-" => Destination::Stdout,
                path => Destination::File(PathBuf::from(path)),
            },
            sha256,
            print_sha256,
            max_size,
            mode,
            owner,
            http: http.clone(),
        });
    }
    Ok(Box::new(move |deadline| run(requests, deadline)))
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let digits = text.strip_prefix("sha256:").unwrap_or(text);
    crate::hex::decode(digits)
        .ok_or_else(|| format!("invalid --sha256 '{text}' (use 64 hex digits)"))
}

/// Downloads every request (several at once), then commits them all, or none when one failed:
/// the first error decides the exit code.
fn run(mut requests: Vec<Request>, deadline: &Deadline) -> Result<(), Error> {
    let headers = requests[0].http.credential_headers()?;
    let client = Client::new(&requests[0].http, deadline)?;
    for request in &mut requests {
        request.headers = headers.clone();
    }
    let finished = if let [request] = requests.as_slice() {
        vec![download(&client, request, deadline)?]
    } else {
        download_all(&client, &requests, deadline)?
    };
    for (request, done) in requests.iter().zip(finished) {
        done.commit(request)?;
    }
    Ok(())
}

/// Up to [`CONCURRENT_DOWNLOADS`] at a time; after the first failure no new one starts, and
/// the bodies already downloaded are dropped (their temporaries removed).
fn download_all(
    client: &Client,
    requests: &[Request],
    deadline: &Deadline,
) -> Result<Vec<Finished>, Error> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let results: Mutex<Vec<Option<Finished>>> = Mutex::new(requests.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENT_DOWNLOADS.min(requests.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let failed = first_error.lock().map_or(true, |e| e.is_some());
                let Some(request) = requests.get(index).filter(|_| !failed) else {
                    return;
                };
                match download(client, request, deadline) {
                    Ok(done) => {
                        if let Ok(mut results) = results.lock() {
                            results[index] = Some(done);
                        }
                    }
                    Err(error) => {
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(error);
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = first_error.into_inner().ok().flatten() {
        return Err(error);
    }
    results
        .into_inner()
        .map_err(|_| Error::Internal("a download thread failed".into()))?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::Internal("a download thread failed".into()))
}

/// One download with its retries, up to a checked body that is not committed yet.
fn download(client: &Client, request: &Request, deadline: &Deadline) -> Result<Finished, Error> {
    let mut retries = Retries::new(client.retries());
    let what = format!("GET {}", request.url);
    let mut partial = None;
    loop {
        match attempt_once(client, request, deadline, &mut partial) {
            Ok(done) => return Ok(done),
            Err(failure) => retries.pause(failure, &what, deadline)?,
        }
    }
}

/// A downloaded and checked body, not in place yet.
struct Finished {
    sink: Sink,
    url: Url,
    received: u64,
    elapsed: Duration,
    digest: Option<[u8; 32]>,
}

impl Finished {
    /// Syncs and renames the file into place (or flushes stdout), then reports.
    fn commit(self, request: &Request) -> Result<(), Error> {
        let label = self.sink.label();
        match self.sink {
            Sink::Stdout(mut out) => out.flush().map_err(|e| Error::io("stdout", &e))?,
            Sink::File(file, _) => file.commit(request.mode, request.owner)?,
        }
        report(
            request,
            &self.url,
            &label,
            self.received,
            self.elapsed,
            self.digest,
        )
    }
}

/// Where the body goes during one attempt. Stdout is written through a duplicate of its
/// descriptor: std's `Stdout` is line-buffered and would scan every chunk for newlines.
enum Sink {
    Stdout(std::fs::File),
    File(AtomicFile, PathBuf),
}

/// The SHA-256 of the body, computed only when `--sha256` or `--print-sha256` uses it: on a
/// node without SHA extensions it costs more CPU than the rest of the download together.
type Digest = Option<ring::digest::Context>;

impl Sink {
    fn label(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".into(),
            Sink::File(_, path) => path.display().to_string(),
        }
    }
}

/// A body cut off part-way by a transient failure, kept so the next attempt asks only for the
/// rest (issue 10: a 5 GB artifact dying at 90% must not start from zero). Only for a file
/// destination and a server that offered `Accept-Ranges: bytes` with a validator.
struct Partial {
    sink: Sink,
    received: u64,
    digest: Digest,
    /// A strong `ETag` or `Last-Modified`, sent as `If-Range`: a changed file comes back whole.
    validator: String,
}

/// The `If-Range` validator a response allows a resume with: a strong `ETag` (a weak one may
/// not be used for ranges, RFC 9110 section 13.1.5), else `Last-Modified`; `None` when the
/// server does not take byte ranges or the body is content-encoded or of unknown length.
fn resume_validator(response: &http::Response) -> Option<String> {
    // Ranges count encoded bytes, the sink decoded ones.
    response.content_length()?;
    let ranges = response.header("accept-ranges")?;
    if !ranges
        .split(',')
        .any(|unit| unit.trim().eq_ignore_ascii_case("bytes"))
    {
        return None;
    }
    let etag = response.header("etag").filter(|tag| !tag.starts_with("W/"));
    etag.or_else(|| response.header("last-modified"))
        .map(|v| v.trim().to_string())
}

/// Whether a `206` continues at `offset`: `Content-Range: bytes OFFSET-...`.
fn continues_at(response: &http::Response, offset: u64) -> bool {
    response
        .header("content-range")
        .and_then(|range| range.trim().strip_prefix("bytes "))
        .and_then(|range| range.split('-').next())
        .and_then(|first| first.trim().parse::<u64>().ok())
        == Some(offset)
}

fn attempt_once(
    client: &Client,
    request: &Request,
    deadline: &Deadline,
    partial: &mut Option<Partial>,
) -> Result<Finished, Failure> {
    let started = Instant::now();
    let mut headers = request.headers.clone();
    if let Some(partial) = partial.as_ref() {
        headers.push(Header::new("Range", format!("bytes={}-", partial.received)));
        headers.push(Header::new("If-Range", partial.validator.clone()));
    }
    let response = client
        .get(&request.url, &headers)
        .map_err(Failure::classified)?;
    if !response.is_success() {
        return Err(Failure::status(&response));
    }
    let url = response.url.clone();
    let resumed = match partial.take() {
        Some(kept) if response.status == 206 && continues_at(&response, kept.received) => {
            Some(kept)
        }
        // A 200 to a ranged request: the file changed (or ranges are off); the temporary of
        // the broken attempt is dropped, and the body starts over.
        Some(_) if response.status == 200 => None,
        _ if response.status == 206 => {
            return Err(Failure::fatal(Error::Remote(format!(
                "GET {url}: unexpected partial content ({})",
                response
                    .header("content-range")
                    .unwrap_or("no Content-Range")
            ))))
        }
        _ => None,
    };
    let validator = resume_validator(&response).or(resumed.as_ref().map(|p| p.validator.clone()));
    let (mut sink, mut received, mut digest) = match resumed {
        Some(kept) => {
            log::info(
                &format!("{url}: resuming at byte {}", kept.received),
                &[
                    ("url", json!(url.to_string())),
                    ("offset", json!(kept.received)),
                ],
            );
            (kept.sink, kept.received, kept.digest)
        }
        None => (
            open_sink(&request.destination).map_err(Failure::fatal)?,
            0,
            (request.sha256.is_some() || request.print_sha256)
                .then(|| ring::digest::Context::new(&ring::digest::SHA256)),
        ),
    };
    let total = response.content_length().map(|rest| rest + received);
    if let (Some(limit), Some(total)) = (request.max_size, total) {
        if total > limit {
            return Err(Failure::fatal(too_large(&url, total, limit)));
        }
    }
    let streamed = stream(
        response.into_body(),
        &mut sink,
        &mut digest,
        &mut received,
        request,
        deadline,
        total,
    );
    if let Err(failure) = streamed {
        if let (true, Some(validator), Sink::File(..)) = (failure.retry, validator, &sink) {
            *partial = Some(Partial {
                sink,
                received,
                digest,
                validator,
            });
        }
        return Err(failure);
    }
    let digest = digest.map(|context| {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(context.finish().as_ref());
        bytes
    });
    verify(request, &url, &sink, digest).map_err(Failure::fatal)?;
    Ok(Finished {
        sink,
        url,
        received,
        elapsed: started.elapsed(),
        digest,
    })
}

fn open_sink(destination: &Destination) -> Result<Sink, Error> {
    Ok(match destination {
        Destination::Stdout => Sink::Stdout(
            std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map(std::fs::File::from)
                .map_err(|e| Error::io("stdout", &e))?,
        ),
        Destination::File(path) => {
            refuse_special_file(path)?;
            Sink::File(AtomicFile::create(path)?, path.clone())
        }
    })
}

/// Copies the body into the sink through one large buffer, hashing it when asked, counting
/// into `received` (which a resumed body starts above zero). Large reads keep the per-byte cost down: each read is a syscall and a pass of
/// ureq's and rustls's bookkeeping.
fn stream(
    mut body: http::BodyReader,
    sink: &mut Sink,
    digest: &mut Digest,
    received: &mut u64,
    request: &Request,
    deadline: &Deadline,
    total: Option<u64>,
) -> Result<(), Failure> {
    let started = Instant::now();
    let label = sink.label();
    let mut buffer = vec![0u8; BUFFER_SIZE];
    let mut last_progress = Instant::now();
    loop {
        let count = match body.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let error = body.error(e);
                // Bytes already on stdout cannot be taken back: no retry there.
                let retry = http::is_transient(&error)
                    && !(matches!(sink, Sink::Stdout(_)) && *received > 0);
                return Err(Failure {
                    retry,
                    ..Failure::fatal(error)
                });
            }
        };
        let chunk = &buffer[..count];
        *received += count as u64;
        if let Some(limit) = request.max_size {
            if *received > limit {
                return Err(Failure::fatal(too_large(&request.url, *received, limit)));
            }
        }
        let written = match sink {
            Sink::Stdout(out) => out.write_all(chunk),
            Sink::File(file, _) => file.write_all(chunk),
        };
        written.map_err(|e| Failure::fatal(Error::io(&label, &e)))?;
        if let Some(context) = digest {
            context.update(chunk);
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            progress(&label, *received, total, started.elapsed());
            if deadline.expired() {
                return Err(Failure::fatal(
                    deadline.timeout_error(format!("GET {}", request.url)),
                ));
            }
        }
    }
}

/// `--sha256`: the whole body must have the expected digest.
fn verify(
    request: &Request,
    url: &Url,
    sink: &Sink,
    digest: Option<[u8; 32]>,
) -> Result<(), Error> {
    let (Some(expected), Some(digest)) = (request.sha256, digest) else {
        return Ok(());
    };
    if digest == expected {
        return Ok(());
    }
    let kept = match sink {
        Sink::Stdout(_) => "",
        Sink::File(..) => " (destination left unchanged)",
    };
    Err(Error::Integrity(format!(
        "GET {url}: SHA-256 mismatch: expected {}, got {}{kept}",
        hex(&expected),
        hex(&digest)
    )))
}

/// The final log line, and with `--print-sha256` the digest as `sha256sum` prints it: on stdout,
/// or on stderr when the body went to stdout.
fn report(
    request: &Request,
    url: &Url,
    label: &str,
    received: u64,
    elapsed: Duration,
    digest: Option<[u8; 32]>,
) -> Result<(), Error> {
    let digest = digest.map(|d| hex(&d));
    let shown = digest
        .as_ref()
        .map(|d| format!(", sha256 {d}"))
        .unwrap_or_default();
    log::info(
        &format!(
            "{url} -> {label}: {} in {} ({}){shown}",
            human_size(received),
            format_duration(elapsed),
            rate(received, elapsed),
        ),
        &[
            ("url", json!(url.to_string())),
            ("output", json!(label)),
            ("bytes", json!(received)),
            ("elapsed_ms", json!(elapsed.as_millis() as u64)),
            ("sha256", json!(digest)),
        ],
    );
    match (&digest, &request.destination) {
        (Some(digest), _) if request.print_sha256 => {
            let line = format!("{digest}  {label}\n");
            let written = match request.destination {
                Destination::Stdout => std::io::stderr().write_all(line.as_bytes()),
                Destination::File(_) => std::io::stdout().write_all(line.as_bytes()),
            };
            written.map_err(|e| Error::io("--print-sha256", &e))
        }
        _ => Ok(()),
    }
}

/// The rename into place would replace whatever PATH names (through a symlink, what it points
/// to stays, but the link goes): only a regular file or a missing path may be replaced, so
/// `-o /dev/null`, a FIFO or a socket is refused rather than turned into a file.
fn refuse_special_file(path: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let file_type = match std::fs::metadata(path) {
        Ok(metadata) => metadata.file_type(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path.display(), &e)),
    };
    let kind = if file_type.is_file() {
        return Ok(());
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "special file"
    };
    Err(Error::Io(format!(
        "{}: is a {kind}, not a regular file: refusing to replace it (-o names a file to create \
         or replace, or - for stdout)",
        path.display()
    )))
}

fn too_large(url: &Url, size: u64, limit: u64) -> Error {
    Error::Remote(format!(
        "GET {url}: body larger than --max-size {} ({} or more)",
        human_size(limit),
        human_size(size)
    ))
}

fn progress(label: &str, received: u64, total: Option<u64>, elapsed: Duration) {
    let of = total
        .map(|t| format!(" of {}", human_size(t)))
        .unwrap_or_default();
    log::info(
        &format!(
            "{label}: {}{of}, {}",
            human_size(received),
            rate(received, elapsed)
        ),
        &[
            ("output", json!(label)),
            ("bytes", json!(received)),
            ("total", json!(total)),
            ("elapsed_ms", json!(elapsed.as_millis() as u64)),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_values_are_64_hex_digits() {
        let text = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let digest = parse_sha256(text).unwrap();
        assert_eq!(hex(&digest), text);
        assert_eq!(parse_sha256(&format!("sha256:{text}")).unwrap(), digest);
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
        // Regression: 64 bytes of mixed-width characters panicked instead of failing to parse.
        assert!(parse_sha256(&format!("a\u{20ac}{}", "b".repeat(60))).is_err());
    }
}
