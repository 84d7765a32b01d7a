//! The Kubernetes examples cannot drift from the CLI: every container in examples/kubernetes that
//! runs initbox has its command line checked by the real binary's parser (`--check-args`).

use std::path::Path;

use serde_yaml::Value;

use crate::util::initbox;

/// The initbox command lines (after the binary name) of every container in `node`.
fn initbox_invocations(node: &Value, found: &mut Vec<Vec<String>>) {
    match node {
        Value::Mapping(map) => {
            for key in ["containers", "initContainers"] {
                if let Some(Value::Sequence(containers)) = map.get(key) {
                    found.extend(containers.iter().filter_map(invocation));
                }
            }
            // A lifecycle hook (`preStop: {exec: {command: [...]}}`) runs initbox too.
            if let Some(hook) = map.get("exec") {
                found.extend(invocation(hook));
            }
            for value in map.values() {
                initbox_invocations(value, found);
            }
        }
        Value::Sequence(items) => items
            .iter()
            .for_each(|item| initbox_invocations(item, found)),
        _ => {}
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .expect("command and args are strings")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn invocation(container: &Value) -> Option<Vec<String>> {
    let command = strings(container.get("command"));
    let args = strings(container.get("args"));
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    match command.split_first() {
        Some((program, rest)) if program.ends_with("/initbox") => {
            Some(rest.iter().chain(&args).cloned().collect())
        }
        // The initbox image's entrypoint is /initbox: its args are initbox's.
        None if image.contains("/initbox:") => Some(args),
        _ => None,
    }
}

#[test]
fn every_example_command_line_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes");
    let mut applets_used = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let mut found = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            initbox_invocations(&value, &mut found);
        }
        assert!(!found.is_empty(), "{} runs no initbox", path.display());
        while let Some(argv) = found.pop() {
            // Chain-loading: `-- /initbox APPLET ...` is another invocation to check.
            if let Some(at) = argv
                .windows(2)
                .position(|w| w[0] == "--" && w[1].ends_with("/initbox"))
            {
                found.push(argv[at + 2..].to_vec());
            }
            // Before a `--`: after it, the flag would belong to the command to exec.
            let mut checked = argv.clone();
            let at = checked
                .iter()
                .position(|a| a == "--")
                .unwrap_or(checked.len());
            checked.insert(at, "--check-args".into());
            let out = initbox(&checked).run();
            assert_eq!(
                out.code,
                Some(0),
                "{}: {argv:?}\n{}",
                path.display(),
                out.stderr
            );
            applets_used.push(argv[0].clone());
        }
    }
    assert!(
        files >= 7,
        "expected the seven example manifests, found {files}"
    );
    for applet in crate::dispatch::APPLETS {
        assert!(
            applets_used.iter().any(|a| a == applet),
            "no example uses {applet}"
        );
    }
}
