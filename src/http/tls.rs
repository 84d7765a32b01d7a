//! TLS trust and identity: the embedded Mozilla roots (webpki-root-certs), plus `--ca-file` and
//! `SSL_CERT_FILE` when given, or only the `--ca-file` certificates with `--ca-file-only`; and the
//! client certificate of `--cert`/`--key`. Verification cannot be turned off. A file that cannot
//! be used fails https:// requests only: a plain http:// request checks no certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::options::Options;
use crate::error::Error;

/// The TLS configuration for `options`, or why it cannot be used.
pub(super) fn config(options: &Options) -> Result<TlsConfig, Error> {
    let client_cert = match &options.client_cert {
        Some((cert, key)) => Some(client_cert(cert, key)?),
        None => None,
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(root_certificates(options)?)))
        .client_cert(client_cert)
        .build())
}

/// The same trust and client certificate as https, as a rustls configuration for TLS spoken
/// outside HTTP (wait's `rediss://`).
#[cfg(feature = "wait")]
pub(crate) fn rustls_config(options: &Options) -> Result<Arc<rustls::ClientConfig>, Error> {
    let der = |c: &Certificate<'_>| CertificateDer::from(c.der().to_vec());
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(root_certificates(options)?.iter().map(der));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let config = match &options.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let pair = client_cert(cert, key)?;
            // client_cert has checked that the key parses and matches the chain.
            let key = PrivateKeyDer::try_from(pair.private_key().der().to_vec())
                .map_err(|e| Error::Tls(format!("--key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(pair.certs().iter().map(der).collect(), key)
                .map_err(|e| Error::Tls(format!("--cert and --key: {e}")))?
        }
    };
    Ok(Arc::new(config))
}

/// `--cert` and `--key`, checked against each other here: ureq would abort on a key that does
/// not match. Messages name the files, never what is in them.
fn client_cert(cert: &Path, key: &Path) -> Result<ClientCert, Error> {
    let chain = read_pem_certificates(cert, "--cert")?;
    let what = format!("--key {}", key.display());
    let pem = std::fs::read(key).map_err(|e| Error::io(&what, &e))?;
    let key = ureq::tls::parse_pem(&pem)
        .find_map(|item| match item {
            Ok(PemItem::PrivateKey(key)) => Some(key),
            _ => None,
        })
        .ok_or_else(|| {
            Error::Data(format!(
                "{what}: no private key found (expected a PEM 'PRIVATE KEY', \
                 'RSA PRIVATE KEY' or 'EC PRIVATE KEY' block)"
            ))
        })?;
    check_pair(&chain, &key).map_err(|why| Error::Tls(format!("--cert and {what}: {why}")))?;
    Ok(ClientCert::new_with_certs(&chain, key))
}

/// Whether the key can sign and belongs to the first certificate of the chain.
fn check_pair(chain: &[Certificate<'static>], key: &PrivateKey<'static>) -> Result<(), String> {
    let der = PrivateKeyDer::try_from(key.der().to_vec())
        .map_err(|_| "the private key is not PKCS#8, RSA or EC".to_string())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("the private key cannot be used: {e}"))?;
    let chain = chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    match rustls::sign::CertifiedKey::new(chain, signer).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("the key does not match the certificate".to_string())
        }
        Err(e) => Err(format!("the certificate cannot be used: {e}")),
    }
}

/// The certificates to trust, per [`Options`].
fn root_certificates(settings: &Options) -> Result<Vec<Certificate<'static>>, Error> {
    let mut roots = Vec::new();
    if !settings.ca_file_only {
        roots.extend(
            webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|der| Certificate::from_der(der.as_ref())),
        );
        if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
            roots.extend(read_pem_certificates(Path::new(&path), "SSL_CERT_FILE")?);
        }
    }
    for path in &settings.ca_files {
        roots.extend(read_pem_certificates(path, "--ca-file")?);
    }
    Ok(roots)
}

fn read_pem_certificates(path: &Path, option: &str) -> Result<Vec<Certificate<'static>>, Error> {
    let what = format!("{option} {}", path.display());
    let pem = std::fs::read(path).map_err(|e| Error::io(&what, &e))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(_) => {}
            Err(e) => return Err(Error::Data(format!("{what}: not valid PEM: {e}"))),
        }
    }
    if certificates.is_empty() {
        return Err(Error::Data(format!(
            "{what}: no certificate found (expected PEM 'BEGIN CERTIFICATE' blocks)"
        )));
    }
    Ok(certificates)
}
