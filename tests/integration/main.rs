//! The integration tests: the real binary against real sockets, servers, files and namespaces.
//! One test binary, one module per applet, plus the cross-cutting contracts.

mod util;

mod chmod_tree;
mod dispatch;
mod docker;
mod examples;
mod exit_codes;
mod fetch;
mod git_server;
mod git_shallow;
mod git_submodules;
mod http_options;
mod init;
mod render_template;
mod signals;
mod sysctl;
mod wait;
mod wait_tcp;
