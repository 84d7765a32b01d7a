//! `file:///path`: ready once the path exists (`--non-empty`: and has a size above 0), e.g. a
//! token or config that a sidecar or another init container writes.

use std::path::PathBuf;
use std::time::Duration;

use crate::applets::wait_tcp::{NotReady, Probe};
use crate::error::describe_io;
use crate::supervisor::Deadline;

pub struct File {
    path: PathBuf,
    non_empty: bool,
    label: String,
}

impl File {
    pub fn parse(text: &str, non_empty: bool) -> Result<File, String> {
        let rest = &text["file://".len()..];
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(format!(
                "invalid target '{text}': use file:///absolute/path"
            ));
        }
        Ok(File {
            path: PathBuf::from(path),
            non_empty,
            label: text.to_string(),
        })
    }
}

impl Probe for File {
    fn label(&self) -> &str {
        &self.label
    }

    fn attempt(&self, _: &Deadline, _: Duration) -> Result<String, NotReady> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if self.non_empty && meta.len() == 0 => {
                Err(NotReady::Waiting("file: exists but is empty".into()))
            }
            Ok(meta) if meta.is_dir() => Ok("directory".into()),
            Ok(meta) => Ok(format!("{} bytes", meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(NotReady::Waiting("file: does not exist yet".into()))
            }
            Err(e) => Err(NotReady::Waiting(format!(
                "file: {}",
                describe_io(&e).to_lowercase()
            ))),
        }
    }
}
