//! `--max-size` values: never panic; a plain number is taken as bytes, exactly.
#![no_main]

use initbox::cli::parse_size;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(size) = parse_size(text) {
        if let Ok(plain) = text.parse::<u64>() {
            assert_eq!(size, plain);
        }
        assert!(!text.is_empty());
    }
});
