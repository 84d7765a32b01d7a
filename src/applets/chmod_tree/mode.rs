//! Mode and owner arguments of `chmod-tree`: octal or symbolic modes as chmod(1) reads them, and
//! numeric or (where /etc/passwd and /etc/group exist) named owners.

use std::fs;

/// A mode to apply: octal, or chmod's symbolic clauses (`u=rwX,g=rX,o=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeSpec {
    /// `digits_explicit`: more than four digits were written (`00755`). As GNU chmod, a shorter
    /// octal mode keeps a directory's set-user-ID and set-group-ID bits (Kubernetes' fsGroup sets
    /// set-group-ID on volume directories), a longer one sets them as written.
    Octal {
        mode: u32,
        digits_explicit: bool,
    },
    Symbolic(Vec<Clause>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// Bits of the `ugo` classes this clause affects (`a` or none: all).
    who: u32,
    actions: Vec<(u8, Perms)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Perms {
    read: bool,
    write: bool,
    execute: bool,
    /// `X`: execute for directories and for files that have some execute bit already.
    search: bool,
    set_id: bool,
    sticky: bool,
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;
const SET_IDS: u32 = 0o6000;

impl ModeSpec {
    pub fn parse(text: &str) -> Result<ModeSpec, String> {
        let invalid =
            |why: &str| format!("invalid mode '{text}': {why} (use e.g. 0750 or u=rwX,g=rX,o=)");
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return match u32::from_str_radix(text, 8) {
                Ok(mode) if mode <= 0o7777 => Ok(ModeSpec::Octal {
                    mode,
                    digits_explicit: text.len() > 4,
                }),
                _ => Err(invalid("octal digits 0-7, at most 7777")),
            };
        }
        let mut clauses = Vec::new();
        for part in text.split(',') {
            let bytes = part.as_bytes();
            let who_len = bytes
                .iter()
                .position(|b| !b"ugoa".contains(b))
                .unwrap_or(bytes.len());
            let mut who = 0;
            for &b in &bytes[..who_len] {
                who |= match b {
                    b'u' => USER,
                    b'g' => GROUP,
                    b'o' => OTHER,
                    _ => USER | GROUP | OTHER,
                };
            }
            if who == 0 {
                who = USER | GROUP | OTHER;
            }
            let mut actions = Vec::new();
            let mut rest = &bytes[who_len..];
            if rest.is_empty() {
                return Err(invalid("each clause needs an operator + - or ="));
            }
            while let Some((&op, tail)) = rest.split_first() {
                if !b"+-=".contains(&op) {
                    return Err(invalid(&format!("unexpected '{}'", op as char)));
                }
                let perm_len = tail
                    .iter()
                    .position(|b| b"+-=".contains(b))
                    .unwrap_or(tail.len());
                let mut perms = Perms {
                    read: false,
                    write: false,
                    execute: false,
                    search: false,
                    set_id: false,
                    sticky: false,
                };
                for &p in &tail[..perm_len] {
                    match p {
                        b'r' => perms.read = true,
                        b'w' => perms.write = true,
                        b'x' => perms.execute = true,
                        b'X' => perms.search = true,
                        b's' => perms.set_id = true,
                        b't' => perms.sticky = true,
                        other => {
                            return Err(invalid(&format!(
                                "unknown permission '{}' (use r w x X s t)",
                                other as char
                            )))
                        }
                    }
                }
                actions.push((op, perms));
                rest = &tail[perm_len..];
            }
            clauses.push(Clause { who, actions });
        }
        Ok(ModeSpec::Symbolic(clauses))
    }

    /// The mode (permission bits only) an entry with mode `current` should have.
    pub fn apply(&self, current: u32, is_dir: bool) -> u32 {
        let current = current & 0o7777;
        match self {
            ModeSpec::Octal {
                mode,
                digits_explicit,
            } => {
                if is_dir && !digits_explicit {
                    mode | (current & SET_IDS)
                } else {
                    *mode
                }
            }
            ModeSpec::Symbolic(clauses) => {
                let had_execute = current & 0o111 != 0;
                let mut mode = current;
                for clause in clauses {
                    for (op, perms) in &clause.actions {
                        let mut bits = 0;
                        if perms.read {
                            bits |= 0o444;
                        }
                        if perms.write {
                            bits |= 0o222;
                        }
                        if perms.execute || (perms.search && (is_dir || had_execute)) {
                            bits |= 0o111;
                        }
                        if perms.set_id {
                            bits |= SET_IDS;
                        }
                        if perms.sticky {
                            bits |= 0o1000;
                        }
                        let mask = clause.who;
                        match op {
                            b'+' => mode |= bits & mask,
                            b'-' => mode &= !(bits & mask),
                            _ => {
                                // `=` clears the class's rwx, but (as GNU chmod) keeps a
                                // directory's set-ID bits unless they are named.
                                let mut cleared = mask & 0o777;
                                if !is_dir {
                                    cleared |= mask & SET_IDS;
                                }
                                cleared |= mask & 0o1000;
                                mode = (mode & !cleared) | (bits & mask);
                            }
                        }
                    }
                }
                mode
            }
        }
    }
}

/// `--owner USER[:GROUP]` / `--group GROUP`: numbers, or names when the image has the files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

const PASSWD: &str = "/etc/passwd";
const GROUP_FILE: &str = "/etc/group";

pub fn parse_owner(text: &str) -> Result<Ownership, String> {
    let (user, group) = text.split_once(':').unwrap_or((text, ""));
    let owner = Ownership {
        uid: resolve(user, PASSWD)?,
        gid: resolve(group, GROUP_FILE)?,
    };
    if owner == Ownership::default() {
        return Err(format!("invalid owner '{text}' (use UID, UID:GID or :GID)"));
    }
    Ok(owner)
}

pub fn parse_group(text: &str) -> Result<u32, String> {
    resolve(text, GROUP_FILE)?.ok_or_else(|| "invalid group '' (use a GID)".to_string())
}

/// A number, or a name looked up in `file` (`name:x:ID:...`, as /etc/passwd and /etc/group).
fn resolve(name: &str, file: &str) -> Result<Option<u32>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    if let Ok(id) = name.parse::<u32>() {
        return usable(id);
    }
    let text = fs::read_to_string(file).map_err(|_| {
        format!("'{name}' is not a number and {file} cannot be read: scratch images have none, use numeric IDs")
    })?;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let entry = fields.next()?;
            let id = fields.nth(1)?.parse::<u32>().ok()?;
            (entry == name).then_some(id)
        })
        .next()
        .ok_or_else(|| format!("'{name}' is not in {file}"))
        .and_then(usable)
}

/// 4294967295 is -1 to chown(2), "leave unchanged": as an owner it would change nothing while
/// the walk reported changes.
fn usable(id: u32) -> Result<Option<u32>, String> {
    if id == u32::MAX {
        return Err(format!("invalid ID {id}: it means \"unchanged\" to chown"));
    }
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(text: &str, current: u32, is_dir: bool) -> u32 {
        ModeSpec::parse(text).unwrap().apply(current, is_dir)
    }

    #[test]
    fn octal_modes_keep_directory_set_ids_unless_five_digits() {
        let short = ModeSpec::parse("0770").unwrap();
        assert_eq!(short.apply(0o2755, true), 0o2770);
        assert_eq!(short.apply(0o2755, false), 0o770);
        assert_eq!(ModeSpec::parse("00770").unwrap().apply(0o2755, true), 0o770);
        assert!(ModeSpec::parse("0999").is_err());
        assert!(ModeSpec::parse("17777").is_err());
    }

    #[test]
    fn symbolic_modes_as_chmod() {
        assert_eq!(sym("u=rwX,g=rX,o=", 0o666, false), 0o640);
        assert_eq!(sym("u=rwX,g=rX,o=", 0o744, false), 0o750);
        assert_eq!(sym("u=rwX,g=rX,o=", 0o600, true), 0o750);
        assert_eq!(sym("go-w", 0o777, false), 0o755);
        assert_eq!(sym("a+x", 0o644, false), 0o755);
        assert_eq!(sym("+X", 0o644, false), 0o644);
        assert_eq!(sym("g+s", 0o755, true), 0o2755);
        assert_eq!(sym("g=rwx", 0o2700, true), 0o2770);
        assert_eq!(sym("o+t", 0o777, true), 0o1777);
        assert_eq!(sym("u+r-w", 0o600, false), 0o400);
        for bad in ["", "u", "u=q", "z+r", "u+r,", "8"] {
            assert!(ModeSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn owners_are_numbers_without_passwd() {
        assert_eq!(
            parse_owner("65532"),
            Ok(Ownership {
                uid: Some(65532),
                gid: None
            })
        );
        assert_eq!(
            parse_owner("1:2"),
            Ok(Ownership {
                uid: Some(1),
                gid: Some(2)
            })
        );
        assert_eq!(parse_owner(":7").unwrap().gid, Some(7));
        assert!(parse_owner(":").is_err());
        // Issue 9 #20: -1 is chown's "unchanged".
        assert!(parse_owner("4294967295").is_err());
        assert!(parse_owner("1:4294967295").is_err());
        assert!(parse_group("4294967295").is_err());
        assert_eq!(parse_group("5"), Ok(5));
    }
}
