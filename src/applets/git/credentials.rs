//! Which credentials go to which repository (issue 13). A superproject and its submodules may
//! live on different hosts, each with its own secret: `--credential URL_PREFIX=ENV_VAR` and
//! `--credential-file URL_PREFIX=PATH` hold `user:password`, sent as HTTP basic auth, as git's
//! credential helpers do (a GitHub token is `x-access-token:TOKEN`).
//!
//! A credential is sent only to URLs its prefix matches: same scheme, host and port, and a path
//! that continues the prefix's at a `/` (so `https://git.example/org` never matches
//! `https://git.example/organisation` nor `https://git.example.evil/`). The longest prefix wins.
//! The other credential options (`--username` with `--password-*`, the URL's userinfo,
//! `--bearer-file`, `--header`...) belong to the repository URL given on the command line and
//! reach only its origin, the rule fetch follows for redirects.

use std::path::PathBuf;

use crate::error::Error;
use crate::http::{self, Header, Url};

/// Where the `user:password` of one URL prefix comes from; read when the job runs.
pub struct Rule {
    prefix: Url,
    /// The option and its argument, for messages.
    option: &'static str,
    source: Source,
}

enum Source {
    Env(String),
    File(PathBuf),
}

impl Rule {
    /// `URL_PREFIX=ENV_VAR` (`--credential`) or `URL_PREFIX=PATH` (`--credential-file`).
    pub fn parse(option: &'static str, text: &str) -> Result<Rule, String> {
        let (prefix, source) = text.split_once('=').ok_or_else(|| {
            format!("invalid {option} '{text}': expected URL_PREFIX=VALUE, e.g. https://git.example/org=GIT_TOKEN")
        })?;
        let prefix = Url::parse(prefix).map_err(|why| format!("invalid {option}: {why}"))?;
        if prefix.credentials().is_some() || prefix.path().contains('?') {
            return Err(format!(
                "invalid {option} {prefix}: a prefix holds no user, password or query"
            ));
        }
        if source.is_empty() {
            return Err(format!("invalid {option} {prefix}=: the value is empty"));
        }
        let source = match option {
            "--credential-file" => Source::File(PathBuf::from(source)),
            _ => Source::Env(source.to_string()),
        };
        Ok(Rule {
            prefix,
            option,
            source,
        })
    }

    fn header(&self) -> Result<Header, Error> {
        let what = format!("{} {}", self.option, self.prefix);
        let secret = match &self.source {
            Source::Env(var) => http::env_value(&what, var)?,
            Source::File(path) => http::read_secret_file(path, &what)?,
        };
        let (user, password) = secret.trim_end().split_once(':').ok_or_else(|| {
            Error::Data(format!(
                "{what}: the secret must be user:password (a GitHub token is \
                 x-access-token:TOKEN)"
            ))
        })?;
        Ok(http::basic_auth(user, password))
    }
}

/// Whether `url` is under `prefix`: same origin, and a path continuing the prefix's at a `/`.
fn prefix_matches(prefix: &Url, url: &Url) -> bool {
    let (prefix_path, path) = (prefix.path(), url.path());
    url.same_origin(prefix)
        && path.starts_with(prefix_path)
        && (prefix_path.ends_with('/')
            || path.len() == prefix_path.len()
            || path[prefix_path.len()..].starts_with(['/', '?']))
}

/// The credentials of one run, secrets read.
pub struct Credentials {
    /// Each prefix with its header, longest prefix first.
    rules: Vec<(Url, Header)>,
    /// The repository URL of the command line and its credential headers.
    main_url: Url,
    main: Vec<Header>,
}

impl Credentials {
    /// Reads every secret now, so a missing one fails before anything is fetched.
    pub fn load(rules: &[Rule], main_url: &Url, mut main: Vec<Header>) -> Result<Self, Error> {
        let mut loaded = Vec::with_capacity(rules.len());
        for rule in rules {
            loaded.push((rule.prefix.clone(), rule.header()?));
        }
        loaded.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.path().len()));
        if let Some((user, password)) = main_url.credentials() {
            // Relative submodule URLs do not carry the userinfo along; their origin is the same.
            if !main
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("authorization"))
            {
                main.push(http::basic_auth(user, password));
            }
        }
        Ok(Credentials {
            rules: loaded,
            main_url: main_url.clone(),
            main,
        })
    }

    /// The headers to send to `url`: its prefix's credential, else the command line's when
    /// `url` has the origin of the command line's repository, else none.
    pub fn for_url(&self, url: &Url) -> Vec<Header> {
        match self
            .rules
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, url))
        {
            Some((_, header)) => vec![header.clone()],
            None if url.same_origin(&self.main_url) => self.main.clone(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn authorization(headers: &[Header]) -> Option<String> {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
            .map(|h| h.value.clone())
    }

    #[test]
    fn prefixes_match_whole_path_segments_on_the_same_origin() {
        let rule = Rule::parse("--credential", "https://git.example/org=T").unwrap();
        for yes in [
            "https://git.example/org",
            "https://git.example/org/repo.git",
            "https://GIT.example:443/org/a/b.git",
        ] {
            assert!(prefix_matches(&rule.prefix, &url(yes)), "{yes}");
        }
        for no in [
            "https://git.example/organisation/repo.git",
            "http://git.example/org/repo.git",
            "https://git.example:8443/org/repo.git",
            "https://git.example.evil/org/repo.git",
            "https://evil.example/git.example/org/repo.git",
            "https://git.example/",
        ] {
            assert!(!prefix_matches(&rule.prefix, &url(no)), "{no}");
        }
        let root = Rule::parse("--credential", "https://git.example=T").unwrap();
        assert!(prefix_matches(
            &root.prefix,
            &url("https://git.example/any/repo.git")
        ));
    }

    #[test]
    fn bad_rules_are_usage_errors() {
        for bad in [
            "https://git.example/org",
            "https://git.example/org=",
            "ssh://git.example/org=T",
            "https://u:p@git.example/org=T",
            "https://git.example/org?x=1=T",
        ] {
            assert!(Rule::parse("--credential", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_url_gets_its_own_credential_and_no_other() {
        std::env::set_var("INITBOX_TEST_VENDOR", "vendor:v-secret");
        std::env::set_var("INITBOX_TEST_ORG", "x-access-token:o-secret");
        let rules = vec![
            Rule::parse("--credential", "https://vendor.example=INITBOX_TEST_VENDOR").unwrap(),
            Rule::parse(
                "--credential",
                "https://git.example/org/private=INITBOX_TEST_ORG",
            )
            .unwrap(),
        ];
        let main = url("https://deploy:main-secret@git.example/org/app.git");
        let credentials = Credentials::load(&rules, &main, Vec::new()).unwrap();
        let basic = |user: &str, password: &str| http::basic_auth(user, password).value;
        let sent = |text: &str| authorization(&credentials.for_url(&url(text)));
        assert_eq!(
            sent("https://git.example/org/lib.git"),
            Some(basic("deploy", "main-secret"))
        );
        assert_eq!(
            sent("https://git.example/org/private/x.git"),
            Some(basic("x-access-token", "o-secret"))
        );
        assert_eq!(
            sent("https://vendor.example/v.git"),
            Some(basic("vendor", "v-secret"))
        );
        assert_eq!(sent("https://other.example/org/app.git"), None);
    }

    #[test]
    fn a_secret_without_a_colon_is_refused_without_echoing_it() {
        std::env::set_var("INITBOX_TEST_BARE", "just-a-token");
        let rule = Rule::parse("--credential", "https://h.example=INITBOX_TEST_BARE").unwrap();
        let err = Credentials::load(&[rule], &url("https://h.example/r.git"), Vec::new())
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 65);
        assert!(!err.to_string().contains("just-a-token"), "{err}");
        assert!(err.to_string().contains("x-access-token:TOKEN"), "{err}");
    }
}
