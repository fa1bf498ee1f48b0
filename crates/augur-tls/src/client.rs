//! Client-side TLS for tonic channels, and naming the peer of a request served over mTLS.

use std::path::PathBuf;

use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use x509_parser::extensions::GeneralName;

use crate::material::{certified_key, parse_certs, read_file, roots_from};
use crate::TlsError;

/// Where a client's TLS material lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM CA bundle the server's certificate must chain to. Required: system roots are
    /// never used.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain presented for mTLS (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Builds the TLS settings for `tonic::transport::Endpoint::tls_config`: trust only `ca`,
/// present `cert` + `key` as the client identity when both are given, and verify the
/// server as `domain` (default: the endpoint URI's host).
///
/// Validates the files now, so a bad path or a key that does not match its certificate
/// is reported at startup with the file's name rather than at the first connection.
///
/// The endpoint URI must use the `https` scheme: tonic ignores the TLS settings on an
/// `http` URI and connects in plaintext.
pub fn client_tls_config(
    files: &ClientTlsFiles,
    domain: Option<&str>,
) -> Result<ClientTlsConfig, TlsError> {
    let ca_path = files.ca.as_ref().ok_or_else(|| {
        TlsError::Config("a CA file is required for TLS (system roots are not used)".into())
    })?;
    let ca_pem = read_file(ca_path)?;
    roots_from(ca_path, parse_certs(ca_path, &ca_pem)?)?;
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));

    match (&files.cert, &files.key) {
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read_file(cert_path)?;
            let key_pem = read_file(key_path)?;
            certified_key(cert_path, &cert_pem, key_path, &key_pem)?;
            config = config.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (None, None) => {}
        (Some(cert_path), None) => {
            return Err(TlsError::Config(format!(
                "client certificate {} given without its key",
                cert_path.display()
            )))
        }
        (None, Some(key_path)) => {
            return Err(TlsError::Config(format!(
                "client key {} given without its certificate",
                key_path.display()
            )))
        }
    }

    if let Some(domain) = domain {
        ServerName::try_from(domain).map_err(|error| {
            TlsError::Config(format!("invalid TLS server name {domain:?}: {error}"))
        })?;
        config = config.domain_name(domain);
    }
    Ok(config)
}

/// The verified client certificate's name for a request served over mTLS: its subject
/// common name, or else its first DNS subject alternative name.
///
/// `None` when the connection is not TLS, the client presented no certificate (server
/// without `client_ca`), or the certificate has neither name. The request must come from
/// a server fed by [`crate::ReloadingServerTls::incoming`] (or another
/// `tokio_rustls::server::TlsStream<TcpStream>` stream): tonic puts the peer certificates
/// into the request extensions only for that stream type.
pub fn peer_name<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    certificate_name(certs.first()?)
}

/// A certificate's subject common name, or else its first DNS subject alternative name.
pub fn certificate_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    if let Some(common_name) = cert
        .subject()
        .iter_common_name()
        .find_map(|attribute| attribute.as_str().ok())
    {
        return Some(common_name.to_string());
    }
    let alt_names = cert.subject_alternative_name().ok()??;
    alt_names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_string()),
            _ => None,
        })
}
