//! `--timeout` and friends: never panic, and what `format_duration` prints parses back to the
//! same duration, to the precision it prints.
#![no_main]

use initbox::cli::{format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(duration) = parse_duration(text) {
        let printed = format_duration(duration);
        let reparsed = parse_duration(&printed)
            .unwrap_or_else(|e| panic!("{text:?} -> {duration:?} -> {printed:?}: {e}"));
        assert!(reparsed <= duration, "{text:?}: {printed:?} is more than {duration:?}");
        assert!(
            duration - reparsed < Duration::from_secs(1),
            "{text:?}: {printed:?} loses too much of {duration:?}"
        );
    }
});
