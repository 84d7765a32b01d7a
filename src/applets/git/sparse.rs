//! `--sparse PATH` (issue 13): only the named files and directories, and the directories that
//! lead to them, are written; a path may lead into a submodule (`lib/include`), whose checkout
//! then gets the rest of the path. Paths match whole components, as git's cone mode does. A path
//! that names nothing in the commit is an error, not an empty checkout.

use crate::error::Error;

/// The `--sparse` paths of one repository's checkout, relative to its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sparse {
    paths: Vec<Vec<u8>>,
    /// Whether the checkout met each path (or the submodule that holds it).
    found: Vec<bool>,
}

/// Where an entry stands against the sparse paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Named by a path, or below one: written whole.
    All,
    /// A directory (or submodule) on the way to a path: created, and entered.
    Part,
    /// Not written.
    Outside,
}

/// Whether `path` is `dir` or below it, by whole components.
fn under(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

impl Sparse {
    /// Normalises one `--sparse` argument: no leading or trailing `/`, no empty, `.` or `..`
    /// component (a sparse path selects, it never leaves the tree).
    pub fn parse_path(text: &str) -> Result<Vec<u8>, String> {
        let trimmed = text.trim_matches('/');
        let bad = trimmed.is_empty()
            || trimmed
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'));
        if bad {
            return Err(format!(
                "invalid --sparse '{text}': give a path inside the repository, like docs or \
                 lib/include"
            ));
        }
        Ok(trimmed.as_bytes().to_vec())
    }

    pub fn new(mut paths: Vec<Vec<u8>>) -> Sparse {
        paths.sort();
        paths.dedup();
        let found = vec![false; paths.len()];
        Sparse { paths, found }
    }

    /// How the entry at `path` (from the root) is written. An entry a path names counts as
    /// found.
    pub fn scope(&mut self, path: &[u8]) -> Scope {
        let mut scope = Scope::Outside;
        for (wanted, found) in self.paths.iter().zip(&mut self.found) {
            if under(path, wanted) {
                *found |= path.len() == wanted.len();
                return Scope::All;
            }
            if under(wanted, path) {
                scope = Scope::Part;
            }
        }
        scope
    }

    /// The paths for the submodule at `path`, which its own checkout must find: `None` when the
    /// whole submodule is wanted. Marks them found here.
    pub fn below(&mut self, path: &[u8]) -> Option<Sparse> {
        let mut inside = Vec::new();
        for (wanted, found) in self.paths.iter().zip(&mut self.found) {
            if under(path, wanted) {
                return None;
            }
            if under(wanted, path) {
                *found = true;
                inside.push(wanted[path.len() + 1..].to_vec());
            }
        }
        Some(Sparse::new(inside))
    }

    /// An error naming the paths the checkout of `commit` never met; `within` is the path of
    /// the submodule these paths were handed to (with a trailing `/`), or empty.
    pub fn check_found(&self, commit: &str, within: &str) -> Result<(), Error> {
        let missing: Vec<String> = self
            .missing()
            .iter()
            .map(|p| format!("{within}{p}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::InputMissing(format!(
            "--sparse {}: no such file or directory in commit {commit} (a path into a \
             submodule needs --submodules shallow or recursive)",
            missing.join(", ")
        )))
    }

    /// The paths the checkout never met.
    fn missing(&self) -> Vec<String> {
        self.paths
            .iter()
            .zip(&self.found)
            .filter(|(_, found)| !**found)
            .map(|(path, _)| String::from_utf8_lossy(path).into_owned())
            .collect()
    }

    /// The paths as recorded on DEST with the commit: a changed list is another checkout. They
    /// are joined by NUL, the one byte no argument holds, so two lists never record alike.
    pub fn spec(&self) -> String {
        let paths: Vec<String> = self
            .paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        format!("sparse={}", paths.join("\0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(paths: &[&str]) -> Sparse {
        Sparse::new(
            paths
                .iter()
                .map(|p| Sparse::parse_path(p).unwrap())
                .collect(),
        )
    }

    #[test]
    fn scopes_follow_whole_components() {
        let mut s = sparse(&["docs", "lib/include/"]);
        assert_eq!(s.scope(b"docs"), Scope::All);
        assert_eq!(s.scope(b"docs/a/b.md"), Scope::All);
        assert_eq!(s.scope(b"docsite"), Scope::Outside);
        assert_eq!(s.scope(b"lib"), Scope::Part);
        assert_eq!(s.scope(b"lib/include"), Scope::All);
        assert_eq!(s.scope(b"lib/src"), Scope::Outside);
        assert_eq!(s.scope(b"li"), Scope::Outside);
        assert!(s.missing().is_empty());
    }

    #[test]
    fn paths_not_met_are_reported() {
        let mut s = sparse(&["docs", "gone"]);
        s.scope(b"docs/x");
        assert_eq!(
            s.missing(),
            ["docs", "gone"],
            "below is not the path itself"
        );
        s.scope(b"docs");
        assert_eq!(s.missing(), ["gone"]);
    }

    #[test]
    fn a_submodule_gets_the_rest_of_its_paths() {
        let mut s = sparse(&["lib/include", "lib/docs/api", "other"]);
        assert_eq!(s.below(b"lib"), Some(sparse(&["docs/api", "include"])));
        assert_eq!(s.missing(), ["other"]);
        assert_eq!(sparse(&["lib"]).below(b"lib"), None);
        assert_eq!(sparse(&["lib"]).below(b"lib/deps/x"), None);
    }

    #[test]
    fn paths_never_leave_the_tree() {
        for bad in ["", "/", "..", "a/../b", "./a", "a//b"] {
            assert!(Sparse::parse_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Sparse::parse_path("/lib/include/").unwrap(), b"lib/include");
        assert_eq!(sparse(&["b", "a", "b"]).spec(), "sparse=a\0b");
        assert_ne!(sparse(&["a:b"]).spec(), sparse(&["a", "b"]).spec());
    }
}
