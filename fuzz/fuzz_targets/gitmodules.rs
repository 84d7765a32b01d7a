//! The `.gitmodules` parser and submodule URL resolution: never panic; every accepted submodule
//! has a name, path and URL that keep git's rules (checked here by their own reading of the
//! rules, not by calling the parser's checks); paths are distinct; every error names a line of
//! the input; a resolved URL is http(s), and a relative one stays on the parent's host without
//! the parent's credentials.
#![no_main]

use initbox::applets::git::checkout::is_dot_git;
use initbox::applets::git::gitmodules::{parse, resolve_url, MAX_PATH_BYTES, MAX_SUBMODULES};
use initbox::http::Url;
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "pw-parent-only";

fn check_resolved(parent: &Url, url: &str) {
    let resolved = match resolve_url(parent, url) {
        Ok(resolved) => resolved,
        Err(message) => {
            assert!(!message.chars().any(char::is_control), "{message:?}");
            if !url.contains(PASSWORD) {
                assert!(!message.contains(PASSWORD), "{url:?}: {message:?}");
            }
            return;
        }
    };
    let wire = resolved.without_credentials();
    assert!(
        wire.starts_with("http://") || wire.starts_with("https://"),
        "{url:?} -> {wire}"
    );
    assert!(!wire.chars().any(char::is_control), "{url:?} -> {wire:?}");
    if url.starts_with("./") || url.starts_with("../") {
        assert_eq!(resolved.host(), parent.host(), "{url:?} -> {wire}");
        assert_eq!(resolved.port(), parent.port(), "{url:?} -> {wire}");
        assert_eq!(resolved.is_https(), parent.is_https(), "{url:?} -> {wire}");
        assert_eq!(resolved.credentials(), None, "{url:?} -> {wire}");
    } else {
        assert!(
            url.to_ascii_lowercase().starts_with("http"),
            "{url:?} -> {wire}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let parent = Url::parse(&format!(
        "https://user:{PASSWORD}@git.example/group/app.git"
    ))
    .unwrap();
    if let Ok(text) = std::str::from_utf8(data) {
        check_resolved(&parent, text);
    }
    let lines = data.split(|&b| b == b'\n').count();
    match parse(data) {
        Ok(submodules) => {
            assert!(submodules.len() <= MAX_SUBMODULES);
            let mut paths = std::collections::HashSet::new();
            for submodule in &submodules {
                let name = &submodule.name;
                assert!(!name.is_empty() && !name.starts_with('-'), "{submodule:?}");
                assert!(!name.split(['/', '\\']).any(|c| c == ".."), "{submodule:?}");
                let path = &submodule.path;
                assert!(
                    !path.is_empty() && path.len() <= MAX_PATH_BYTES,
                    "{submodule:?}"
                );
                assert!(!path.starts_with('-'), "{submodule:?}");
                for component in path.split('/') {
                    assert!(!matches!(component, "" | "." | ".."), "{submodule:?}");
                    assert!(!is_dot_git(component.as_bytes()), "{submodule:?}");
                }
                let url = &submodule.url;
                assert!(!url.is_empty() && !url.starts_with('-'), "{submodule:?}");
                for text in [name, path, url] {
                    assert!(!text.chars().any(char::is_control), "{submodule:?}");
                }
                assert!(paths.insert(path.clone()), "two submodules at {path:?}");
                check_resolved(&parent, url);
            }
        }
        Err(message) => {
            let line: usize = message
                .strip_prefix("line ")
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or_else(|| panic!("error without a line: {message:?}"));
            assert!((1..=lines).contains(&line), "{message:?} of {lines} lines");
            assert!(!message.chars().any(char::is_control), "{message:?}");
        }
    }
});
