//! The crate's error type. Every variant that concerns a file names it, so an operator
//! reading a log line knows which file to fix.

use std::path::PathBuf;

/// Errors from loading, validating or generating TLS material.
///
/// All of these are terminal for the operation that returned them (retrying with the same
/// files gives the same answer); a reload that fails keeps the previous material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written (dev PKI generation).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM, or holds no item of the expected kind.
    #[error("{}: {reason}", path.display())]
    InvalidPem { path: PathBuf, reason: String },
    /// A certificate parsed as PEM but is not a usable X.509 certificate.
    #[error("{}: invalid certificate: {reason}", path.display())]
    InvalidCertificate { path: PathBuf, reason: String },
    /// A private key is unusable, or does not belong to its certificate.
    #[error("{}: invalid private key: {reason}", path.display())]
    InvalidKey { path: PathBuf, reason: String },
    /// A CA file cannot serve as a trust anchor or client verifier.
    #[error("{}: invalid CA: {reason}", path.display())]
    InvalidCa { path: PathBuf, reason: String },
    /// The combination of settings is not usable (e.g. a client cert without its key).
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// rustls rejected the assembled configuration.
    #[error("building TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a dev certificate failed.
    #[error("generating {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}
