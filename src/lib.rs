//! The library half of initbox: every applet and the pieces they share. `main.rs` dispatches to
//! it; the fuzz targets (`fuzz/`) reach the parsers through it.
//!
//! Raw system calls live in two modules only: `sys` (everything but name resolution) and `net`
//! (getaddrinfo, on a thread the deadline can abandon). The rest of the crate cannot use `unsafe`.

#![deny(unsafe_code)]

pub mod applets;
pub mod atomic;
pub mod cli;
pub mod error;
pub mod exec;
pub mod hex;
#[cfg(feature = "http")]
pub mod http;
pub mod log;
#[allow(unsafe_code)]
pub mod net;
pub mod retry;
pub mod supervisor;
#[allow(unsafe_code)]
pub mod sys;
