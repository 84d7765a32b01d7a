//! The `sysctl` conf-file parser and key validation: never panics; every accepted key maps to a
//! path below /proc/sys with only normal segments (no `..`, `.` or empty one); every problem,
//! including a byte that is not UTF-8, names a line of the input; the settings come in line order.
#![no_main]

use std::path::{Component, Path};

use initbox::applets::sysctl::{parse_conf, parse_setting, Key};
use libfuzzer_sys::fuzz_target;

fn check_key(key: &Key) {
    let path = key.path();
    let rest = path
        .strip_prefix("/proc/sys")
        .unwrap_or_else(|_| panic!("{key:?} -> {path:?}: not below /proc/sys"));
    let normal: Vec<_> = rest
        .components()
        .map(|c| match c {
            Component::Normal(name) => name.to_os_string(),
            other => panic!("{key:?} -> {path:?}: segment {other:?}"),
        })
        .collect();
    assert_eq!(normal.len(), key.segments.len(), "{key:?} -> {path:?}");
    for (name, segment) in normal.iter().zip(&key.segments) {
        assert_eq!(Path::new(name), Path::new(segment), "{key:?} -> {path:?}");
        assert!(!segment.is_empty() && segment != "." && segment != "..");
        assert!(!segment.contains('/') && !segment.contains('\0'), "{key:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = Key::parse(text) {
            check_key(&key);
        }
        if let Ok(setting) = parse_setting(text) {
            check_key(&setting.key);
        }
    }
    // Any bytes: a line that is not UTF-8 is a problem on that line, not a failure of the file.
    let lines = data.split(|&b| b == b'\n').count();
    match parse_conf("f", data) {
        Ok(settings) => {
            let mut previous = 0;
            for setting in &settings {
                check_key(&setting.key);
                let origin = setting.origin.as_deref().expect("a file setting has an origin");
                let line: usize = origin
                    .strip_prefix("f:")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("origin {origin:?}"));
                assert!(line > previous && line <= lines, "{origin} of {lines} lines");
                previous = line;
            }
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            for problem in &problems {
                let line: usize = problem
                    .strip_prefix("f:")
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(n, _)| n.parse().ok())
                    .unwrap_or_else(|| panic!("problem without a line: {problem:?}"));
                assert!((1..=lines).contains(&line), "{problem:?} of {lines} lines");
            }
        }
    }
});
