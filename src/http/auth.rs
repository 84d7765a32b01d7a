//! Request headers and credentials: headers the user supplies, bearer tokens and basic auth
//! from files or variables, all masked when printed and kept from other origins.

use std::fmt;
use std::path::Path;

use super::url::MASK;
use crate::error::Error;

/// A request header. Headers the user supplied and authentication headers are credentials: their
/// values print as `***` and they are never sent to another origin; the protocol headers initbox
/// adds itself (`Git-Protocol`, `Content-Type`) are not.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
    credential: bool,
}

impl Header {
    /// A protocol header of initbox's own.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
            credential: false,
        }
    }

    /// A header the user supplied or an authentication header. Whatever its name (`X-Vault-Pass`,
    /// `X-JFrog-Art-Api`), it may carry a secret, so it is treated as one.
    pub fn credential(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            credential: true,
            ..Header::new(name, value)
        }
    }

    /// Parses `Name: value`, as curl's `-H`; the result is a credential.
    pub fn parse(text: &str) -> Result<Header, String> {
        let (name, value) = text.split_once(':').ok_or_else(|| {
            format!(
                "invalid header '{}': use 'Name: value'",
                redact_header_text(text)
            )
        })?;
        let header = Header::credential(name.trim(), value.trim());
        header.validate()?;
        Ok(header)
    }

    pub fn validate(&self) -> Result<(), String> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        // The name is not quoted: a malformed header (`Authorization Bearer TOKEN: x`) puts the
        // secret in it.
        if self.name.is_empty() {
            return Err("invalid header: the name is empty".to_string());
        }
        if let Some(at) = self.name.bytes().position(|b| !token(b)) {
            return Err(format!(
                "invalid header name: character {} is not allowed in a name (use 'Name: value')",
                at + 1
            ));
        }
        if self
            .value
            .bytes()
            .any(|b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(format!("header {}: value has a line break", self.name));
        }
        Ok(())
    }

    /// Whether the header may carry a credential: never printed, and dropped when a redirect
    /// leaves the original origin.
    pub fn is_credential(&self) -> bool {
        self.credential
    }

    /// `Name: value` for messages, the value masked when it is a credential.
    pub fn redacted(&self) -> String {
        if self.is_credential() {
            format!("{}: {MASK}", self.name)
        } else {
            format!("{}: {}", self.name, self.value)
        }
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn redact_header_text(text: &str) -> String {
    match text.split_once(':') {
        Some((name, _)) => format!("{name}: {MASK}"),
        None => MASK.to_string(),
    }
}

/// A secret from a file (a mounted Secret): trailing line breaks dropped, an empty file refused.
/// Read when the job runs, not while parsing, so `--check-args` needs no Secret mounted.
pub fn read_secret_file(path: &Path, option: &str) -> Result<String, Error> {
    let what = format!("{option} {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(&what, &e))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err(Error::Data(format!("{what}: the file is empty")));
    }
    Ok(text.to_string())
}

/// `Authorization: Bearer` with the token of `--bearer-file PATH`.
pub fn bearer_from_file(path: &Path) -> Result<Header, Error> {
    let token = read_secret_file(path, "--bearer-file")?;
    let header = Header::credential("Authorization", format!("Bearer {}", token.trim()));
    header.validate().map_err(|_| {
        Error::Data(format!(
            "--bearer-file {}: the token has a line break inside",
            path.display()
        ))
    })?;
    Ok(header)
}

/// `Authorization: Basic ...` for a user and password (RFC 7617).
pub fn basic_auth(user: &str, password: &str) -> Header {
    Header::credential(
        "Authorization",
        format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
    )
}

fn base64(bytes: &[u8]) -> String {
    use ::base64::Engine;
    ::base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_masked() {
        let header = Header::parse("Authorization: Bearer abc").unwrap();
        assert!(header.is_credential());
        assert_eq!(header.redacted(), "Authorization: ***");
        assert_eq!(format!("{header:?}"), "Authorization: ***");
        assert!(Header::parse("X-Api-Key: k").unwrap().is_credential());
        // Issue 9 #4: whatever its name, a header the user gave is a credential.
        assert!(Header::parse("X-Vault-Pass: p").unwrap().is_credential());
        assert!(basic_auth("u", "p").is_credential());
        let plain = Header::new("Accept", "text/plain");
        assert!(!plain.is_credential());
        assert_eq!(plain.redacted(), "Accept: text/plain");
        assert!(Header::parse("no colon secret")
            .unwrap_err()
            .contains("***"));
        assert!(Header::parse("Bad Name: v").is_err());
    }

    #[test]
    fn basic_auth_is_rfc_7617() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame").value,
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }
}
