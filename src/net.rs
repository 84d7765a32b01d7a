//! Name resolution that a deadline can interrupt.
//!
//! getaddrinfo cannot be cancelled and, against a resolver that does not answer, blocks for the
//! resolver's whole retry cycle (`timeout` x `attempts` per nameserver). It therefore runs on its
//! own thread, and the caller waits only as long as its deadline allows; an abandoned lookup ends
//! with the process. It is called directly (not through std) to tell a name that does not exist,
//! which is final, from a resolver that failed this time, which is worth retrying.

use std::ffi::CString;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::mpsc;
use std::thread;

use crate::supervisor::Deadline;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The name does not exist (NXDOMAIN or no address): retrying will not help soon.
    NotFound(String),
    /// The resolver failed this time (no answer, SERVFAIL, no network): worth retrying.
    Temporary(String),
    /// The deadline passed before the resolver answered.
    TimedOut,
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::NotFound(why) | ResolveError::Temporary(why) => f.write_str(why),
            ResolveError::TimedOut => f.write_str("name resolution did not answer in time"),
        }
    }
}

/// The addresses of `host` (a name or an IP literal) for `port`, within `deadline`.
pub fn resolve(
    host: &str,
    port: u16,
    deadline: &Deadline,
) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (sender, receiver) = mpsc::channel();
    let name = host.to_string();
    thread::Builder::new()
        .name("resolver".into())
        .spawn(move || {
            let _ = sender.send(getaddrinfo(&name, port));
        })
        .map_err(|e| ResolveError::Temporary(format!("cannot start a resolver thread: {e}")))?;
    let answer = match deadline.remaining() {
        None => receiver.recv().map_err(|_| ResolveError::TimedOut),
        Some(left) => receiver
            .recv_timeout(left)
            .map_err(|_| ResolveError::TimedOut),
    };
    answer?
}

fn getaddrinfo(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let c_host = CString::new(host)
        .map_err(|_| ResolveError::NotFound(format!("invalid host name '{host}'")))?;
    // SAFETY: an all-zero addrinfo is the documented way to start hints (every field unset).
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_family = libc::AF_UNSPEC;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: c_host is a valid NUL-terminated string, hints is initialised, and `list` receives
    // a list we own and free below.
    let status = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if status != 0 {
        return Err(classify(status, host));
    }
    let mut addresses = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is a non-null element of the list getaddrinfo returned, not yet freed.
        let entry = unsafe { &*node };
        if let Some(address) = socket_addr(entry, port) {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        node = entry.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed exactly once.
    unsafe { libc::freeaddrinfo(list) };
    if addresses.is_empty() {
        return Err(ResolveError::NotFound(format!(
            "{host}: no IPv4 or IPv6 address"
        )));
    }
    Ok(addresses)
}

fn socket_addr(entry: &libc::addrinfo, port: u16) -> Option<SocketAddr> {
    if entry.ai_addr.is_null() {
        return None;
    }
    match entry.ai_family {
        libc::AF_INET => {
            // SAFETY: for AF_INET entries ai_addr points to a sockaddr_in.
            let raw = unsafe { &*entry.ai_addr.cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 => {
            // SAFETY: for AF_INET6 entries ai_addr points to a sockaddr_in6.
            let raw = unsafe { &*entry.ai_addr.cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(raw.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                0,
                raw.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn classify(status: i32, host: &str) -> ResolveError {
    match status {
        libc::EAI_NONAME | libc::EAI_NODATA => {
            ResolveError::NotFound(format!("{host}: name not known"))
        }
        libc::EAI_AGAIN => ResolveError::Temporary(format!(
            "{host}: temporary DNS failure (no answer from the resolver)"
        )),
        libc::EAI_FAIL => ResolveError::Temporary(format!("{host}: DNS server failure")),
        libc::EAI_SYSTEM => ResolveError::Temporary(format!(
            "{host}: name resolution failed: {}",
            crate::error::describe_io(&std::io::Error::last_os_error())
        )),
        other => {
            // SAFETY: gai_strerror returns a pointer to a static NUL-terminated message.
            let text = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(other)) };
            ResolveError::Temporary(format!("{host}: {}", text.to_string_lossy()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_resolver() {
        let forever = Deadline::after(None);
        let v6 = resolve("::1", 80, &forever).unwrap();
        assert_eq!(v6, vec!["[::1]:80".parse().unwrap()]);
    }

    #[test]
    fn localhost_resolves_through_getaddrinfo() {
        let addresses = getaddrinfo("localhost", 5432).unwrap();
        assert!(addresses
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 5432));
    }

    #[test]
    fn a_name_with_nul_is_not_found() {
        assert!(matches!(
            getaddrinfo("a\0b", 1),
            Err(ResolveError::NotFound(_))
        ));
    }
}
