//! The first answers `wait` reads from PostgreSQL, MySQL and Redis, and its target URLs: never
//! panics, and never reads more than each protocol's limit (the reader holds the data, so what
//! is left unread shows how much was consumed).
#![no_main]

use initbox::applets::wait::{mysql, postgres, redis, Endpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let _ = postgres::read_answer(&mut rest);
    assert!(data.len() - rest.len() <= 5 + 8192, "postgres read too much");

    let mut rest = data;
    let _ = mysql::read_answer(&mut rest);
    assert!(data.len() - rest.len() <= 4 + 512, "mysql read too much");

    let mut rest = data;
    if let Ok(redis::Reply::Status(s) | redis::Reply::Error(s) | redis::Reply::Other(s)) =
        redis::read_reply(&mut rest)
    {
        assert!(s.len() <= 3 * 514, "redis line of {} bytes", s.len());
    }
    assert!(data.len() - rest.len() <= 514, "redis read too much");

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(endpoint) = Endpoint::parse(text, 1) {
            assert!(endpoint.port != 0 && !endpoint.host.is_empty());
            // The label, used in every message, parses back to the same place without
            // credentials (a plain "does not contain the password" fails on URLs whose host
            // happens to spell the password).
            let again = Endpoint::parse(&endpoint.label, 1).expect("the label parses");
            assert!(again.user.is_none() && again.password.is_none(), "credentials in label");
            assert!(again.host == endpoint.host && again.port == endpoint.port);
            assert!(again.path == endpoint.path && again.label == endpoint.label);
        }
    }
});
