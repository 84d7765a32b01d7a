//! Embeds the build facts that `initbox --version` prints: git commit, target triple, and the
//! applets compiled in (one cargo feature per applet). Also relinks when the musl build's
//! linker script changes.

use std::process::Command;

/// In the order of the applet table, so `--version` lists them as `--help` does.
const APPLETS: &[&str] = &[
    "wait",
    "wait-tcp",
    "fetch",
    "render-template",
    "chmod-tree",
    "sysctl",
    "git-shallow",
    "init",
    "sleep",
];

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=INITBOX_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=INITBOX_TARGET={target}");
    let enabled: Vec<&str> = APPLETS
        .iter()
        .copied()
        .filter(|name| {
            let feature = format!("CARGO_FEATURE_{}", name.to_uppercase().replace('-', "_"));
            std::env::var_os(feature).is_some()
        })
        .collect();
    println!("cargo:rustc-env=INITBOX_APPLETS={}", enabled.join(" "));
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    // scripts/build-musl links with this linker script; cargo does not see it as an input, so a
    // regenerated layout would otherwise not be relinked.
    println!("cargo:rerun-if-changed=scripts/musl/init-hot.ld");
}
