//! The library half of initbox: every applet and the pieces they share. `main.rs` dispatches to
//! it; the fuzz targets (`fuzz/`) reach the parsers through it.

pub mod applets;
pub mod atomic;
pub mod cli;
pub mod error;
pub mod hex;
#[cfg(feature = "http")]
pub mod http;
pub mod log;
pub mod net;
pub mod retry;
pub mod supervisor;
pub mod sys;
