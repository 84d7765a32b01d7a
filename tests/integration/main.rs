//! The integration tests: the real binary against real sockets, servers, files and namespaces.
//! One test binary, one module per applet, plus the cross-cutting contracts.

mod util;

mod dispatch;
mod git_server;
mod git_shallow;
