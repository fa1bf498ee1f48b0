//! Reading certificates, keys and CAs from PEM files, with errors that name the file.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// The one crypto provider Augur uses (ring), passed explicitly so nothing depends on a
/// process-wide default being installed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses every `CERTIFICATE` block of `pem`; there must be at least one and each must be
/// a well-formed X.509 certificate.
pub(crate) fn parse_certs(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::InvalidPem {
            path: path.to_path_buf(),
            reason: format!("not valid PEM: {error}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::InvalidPem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block found (expected PEM)".to_string(),
        });
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert).map_err(|error| {
            TlsError::InvalidCertificate {
                path: path.to_path_buf(),
                reason: error.to_string(),
            }
        })?;
    }
    Ok(certs)
}

pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(path, &read_file(path)?)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file's contents.
pub(crate) fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| TlsError::InvalidPem {
        path: path.to_path_buf(),
        reason: match error {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY block found (expected PEM)".to_string()
            }
            other => format!("not valid PEM: {other}"),
        },
    })
}

/// Loads a certificate chain and its key, checking that the key is usable and belongs to
/// the chain's first certificate.
pub(crate) fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    certified_key(
        cert_path,
        &read_file(cert_path)?,
        key_path,
        &read_file(key_path)?,
    )
}

/// Like [`load_certified_key`] on contents already read.
pub(crate) fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(cert_path, cert_pem)?;
    let key = parse_key(key_path, key_pem)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::InvalidKey {
            path: key_path.to_path_buf(),
            reason: error.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::InvalidKey {
                path: key_path.to_path_buf(),
                reason: format!("does not match the certificate in {}", cert_path.display()),
            })
        }
        Err(error) => Err(TlsError::InvalidCertificate {
            path: cert_path.to_path_buf(),
            reason: error.to_string(),
        }),
    }
}

/// Loads every certificate of a CA file into a root store.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = load_certs(path)?;
    roots_from(path, certs)
}

pub(crate) fn roots_from(
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|error| TlsError::InvalidCa {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    }
    Ok(roots)
}
