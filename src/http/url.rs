//! `http`/`https` URLs as initbox reads them, and how they print: userinfo is kept apart (it is
//! sent as an `Authorization` header), and passwords and secret-looking query values never reach
//! a message.

use std::fmt;

/// What a masked secret prints as.
pub const MASK: &str = "***";

/// An `http` or `https` URL, split into the parts initbox needs. Userinfo is kept apart from the
/// address, so it is sent as an `Authorization` header and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    https: bool,
    user: Option<String>,
    password: Option<String>,
    /// Without brackets for IPv6.
    host: String,
    port: u16,
    /// `host` or `[v6]`, with `:port` when the URL named one.
    authority: String,
    /// Starts with `/`; includes the query, never a fragment.
    path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let invalid = |why: &str| format!("invalid URL '{}': {why}", redact_url_text(text));
        let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (false, rest)
        } else {
            return Err(invalid("only http:// and https:// are supported"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(invalid(
                "spaces and control characters must be percent-encoded",
            ));
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(percent_decode(password))),
                    None => (info, None),
                };
                (Some(percent_decode(user)), password)
            }
        };
        let (host, port_text) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, tail) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("missing ']'"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid("bad IPv6 address"));
            }
            (host, tail.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b))
        {
            return Err(invalid("bad character in host name"));
        }
        let default_port = if https { 443 } else { 80 };
        let port = match port_text {
            None | Some("") => default_port,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                // `user:pa/ss@host`: the authority ends at the `/`, so the password reads as a port.
                _ if text.contains('@') => {
                    return Err(invalid(
                        "a user name or password holding '/', '?' or '#' must be \
                         percent-encoded (%2F, %3F, %23)",
                    ))
                }
                _ => return Err(invalid("port must be 1-65535")),
            },
        };
        let host = host.to_ascii_lowercase();
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let authority = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(Url {
            https,
            user,
            password,
            host,
            port,
            authority,
            path,
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query, e.g. `/repo.git/info/refs?service=git-upload-pack`.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The URL as sent on the wire: without userinfo, which travels as a header instead.
    pub fn without_credentials(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.path)
    }

    /// `user` and `password` from the userinfo, percent-decoded.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.user
            .as_deref()
            .map(|user| (user, self.password.as_deref().unwrap_or("")))
    }

    /// Same scheme, host and port: where credentials may follow a redirect.
    pub fn same_origin(&self, other: &Url) -> bool {
        self.https == other.https && self.host == other.host && self.port == other.port
    }

    /// A new URL with `path` (and query) replaced, e.g. for git's `info/refs` beside a repo URL.
    pub fn with_path(&self, path: &str) -> Url {
        let mut url = self.clone();
        url.path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        url
    }

    /// Resolves a `Location` header against this URL (RFC 3986 section 5.2, for the forms servers
    /// send: absolute, scheme-relative, absolute-path and relative-path). Userinfo never carries
    /// over.
    pub fn join(&self, location: &str) -> Result<Url, String> {
        let location = location.trim();
        let lower = location.to_ascii_lowercase();
        let mut next = if lower.starts_with("http://") || lower.starts_with("https://") {
            Url::parse(location)?
        } else if let Some(rest) = location.strip_prefix("//") {
            Url::parse(&format!("{}://{rest}", self.scheme()))?
        } else if lower.contains("://") || lower.starts_with("mailto:") {
            return Err(format!(
                "redirect to an unsupported URL '{}'",
                redact_url_text(location)
            ));
        } else {
            let mut next = self.clone();
            let location = location.split('#').next().unwrap_or_default();
            next.path = if location.starts_with('/') {
                location.to_string()
            } else if location.starts_with('?') {
                let base = self.path.split('?').next().unwrap_or("/");
                format!("{base}{location}")
            } else {
                let base = self.path.split('?').next().unwrap_or("/");
                let directory = &base[..=base.rfind('/').unwrap_or(0)];
                format!("{directory}{location}")
            };
            next.path = remove_dot_segments(&next.path);
            next
        };
        next.user = None;
        next.password = None;
        Ok(next)
    }
}

/// Displays without the password and with secret-looking query values masked. A user name
/// without a password is masked too: it is then often a token (`https://TOKEN@github.com/`).
impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        if let Some(user) = &self.user {
            match self.password {
                Some(_) => write!(f, "{user}:{MASK}@")?,
                None => write!(f, "{MASK}@")?,
            }
        }
        write!(f, "{}{}", self.authority, redact_query(&self.path))
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn remove_dot_segments(path: &str) -> String {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Query parameters whose names contain one of these have their values masked when printed:
/// signed-URL signatures, tokens, keys.
const SECRET_QUERY_WORDS: &[&str] = &[
    "sig",
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "credential",
    "auth",
];

fn redact_query(path: &str) -> String {
    let Some((path, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if looks_secret(name) => format!("{name}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", parameters.join("&"))
}

fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_QUERY_WORDS.iter().any(|word| name.contains(word))
}

/// A URL as the user typed it, with any userinfo masked; for messages about text that did not
/// parse as a [`Url`], and for proxy URLs. When what follows a `:` in the authority is no port,
/// the password may hold an unencoded `/`, `?` or `#`: the userinfo then ends at the last `@`.
/// The user name is shown only when a password follows it and it holds none of those.
pub fn redact_url_text(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(at) => text.split_at(at + 3),
        None => ("", text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let cut_short = authority
        .split_once(':')
        .is_some_and(|(_, port)| !port.bytes().all(|b| b.is_ascii_digit()));
    let userinfo_end = match authority.rfind('@') {
        Some(at) => Some(at),
        None if cut_short => rest.rfind('@'),
        None => None,
    };
    let Some(at) = userinfo_end else {
        return format!(
            "{scheme}{authority}{}",
            redact_query(&rest[authority_end..])
        );
    };
    let (userinfo, after) = (&rest[..at], &rest[at + 1..]);
    let shown_user = userinfo
        .split_once(':')
        .map(|(user, _)| user)
        .filter(|user| !user.contains(['/', '?', '#']));
    let tail = match after.find(['?', '#']) {
        Some(query) => format!("{}{}", &after[..query], redact_query(&after[query..])),
        None => after.to_string(),
    };
    match shown_user {
        Some(user) => format!("{scheme}{user}:{MASK}@{tail}"),
        None => format!("{scheme}{MASK}@{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_userinfo_apart_and_never_print_passwords() {
        let url =
            Url::parse("https://bob:s%40cret@Example.com:8443/a/b?x=1&token=abc#frag").unwrap();
        assert_eq!(url.credentials(), Some(("bob", "s@cret")));
        assert_eq!(url.host(), "example.com");
        assert_eq!(url.port(), 8443);
        assert_eq!(
            url.without_credentials(),
            "https://example.com:8443/a/b?x=1&token=abc"
        );
        let shown = url.to_string();
        assert_eq!(shown, "https://bob:***@example.com:8443/a/b?x=1&token=***");
        assert!(!format!("{url:?}").contains("cret"));
        assert_eq!(
            Url::parse("http://[::1]:80").unwrap().without_credentials(),
            "http://[::1]/"
        );
        for bad in [
            "ftp://x/",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://a b/",
            "http://h/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        let err = Url::parse("ftp://u:hunter2@h/").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn redirect_locations_resolve_per_rfc_3986() {
        let base = Url::parse("https://u:p@h.example/a/b/c?q=1").unwrap();
        let join = |location: &str| base.join(location).unwrap().to_string();
        assert_eq!(join("d"), "https://h.example/a/b/d");
        assert_eq!(join("../d?x"), "https://h.example/a/d?x");
        assert_eq!(join("/top"), "https://h.example/top");
        assert_eq!(join("?y=2"), "https://h.example/a/b/c?y=2");
        assert_eq!(join("//other:81/p"), "https://other:81/p");
        assert_eq!(join("http://plain/"), "http://plain/");
        assert!(base.join("file:///etc/passwd").is_err());
        assert_eq!(base.join("d").unwrap().credentials(), None);
        assert!(base.same_origin(&base.join("/x").unwrap()));
        assert!(!base.same_origin(&base.join("//other/").unwrap()));
    }

    #[test]
    fn redacting_raw_url_text() {
        assert_eq!(
            redact_url_text("http://u:pw@h/p?sig=1"),
            "http://u:***@h/p?sig=***"
        );
        assert_eq!(redact_url_text("h:3128"), "h:3128");
        // An `@` in the path or query is no userinfo.
        assert_eq!(
            redact_url_text("http://h:81/@scope/p?mail=a@b"),
            "http://h:81/@scope/p?mail=a@b"
        );
    }
}
