//! A throwaway development PKI: one CA, a server certificate and client certificates,
//! written as PEM files. For `augur dev` and tests only — the CA key sits next to the
//! certificates it signed.
//!
//! Files in the directory: `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`,
//! `client.pem`, `client-key.pem`, and `client-<name>.pem` / `client-<name>-key.pem` for
//! each extra client from [`generate_client_cert`]. Keys are written mode 0600, every
//! file atomically (write to a temporary file, then rename), so a reloader polling them
//! never reads half a file.
//!
//! An independent PKI generated into another directory is "untrusted" by this one; tests
//! use that for wrong-CA cases.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Days, NaiveDate, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tracing::info;

use crate::client::certificate_name;
use crate::material::{load_certified_key, load_certs, provider, read_file, roots_from};
use crate::{ClientTlsFiles, ServerTlsFiles, TlsError};

const CA_VALIDITY_DAYS: u64 = 3650;
const LEAF_VALIDITY_DAYS: u64 = 825;
/// Existing certificates expiring sooner than this are replaced rather than reused.
const RENEW_BEFORE_SECONDS: i64 = 7 * 24 * 3600;

/// The files of a dev PKI, as written by [`generate_dev_pki`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl DevPki {
    /// Server files for this PKI; with `mtls`, clients must present a certificate from
    /// this CA.
    pub fn server_files(&self, mtls: bool) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: mtls.then(|| self.ca_cert.clone()),
        }
    }

    /// Client files trusting this CA and presenting the default client certificate.
    pub fn client_files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: Some(self.ca_cert.clone()),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
        }
    }
}

/// A certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a throwaway CA, a server certificate for `hosts` (DNS names and IP addresses,
/// e.g. `"localhost"`, `"127.0.0.1"`) and a client certificate with common name
/// `client_name` into `dir` (created if missing; keys mode 0600).
///
/// Valid existing files are reused: the CA if it is a CA with a matching key and not
/// about to expire; the server certificate if it chains to that CA and covers every host;
/// the client certificate if it chains to that CA and carries `client_name`. Anything
/// else is regenerated (a new CA also renews both leaves). The server certificate is
/// usable as a client identity too (coordinator to coordinator); its name is the first
/// host.
///
/// Blocking file I/O and key generation: call it from `spawn_blocking` in async code.
pub fn generate_dev_pki(
    dir: &Path,
    hosts: &[String],
    client_name: &str,
) -> Result<DevPki, TlsError> {
    if hosts.is_empty() {
        return Err(TlsError::Config(
            "a dev server certificate needs at least one host".into(),
        ));
    }
    for host in hosts {
        ServerName::try_from(host.as_str()).map_err(|error| {
            TlsError::Config(format!("invalid host {host:?} for a certificate: {error}"))
        })?;
    }
    check_client_name(client_name)?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let ca_files = ca_files(dir);
    let (ca, ca_renewed) = match load_ca(&ca_files) {
        Ok(ca) => (ca, false),
        Err(reason) => {
            info!(dir = %dir.display(), %reason, "generating dev CA");
            (new_ca(&ca_files)?, true)
        }
    };

    let server = CertKeyFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    let reuse_server = if ca_renewed {
        Err("new CA".to_string())
    } else {
        server_reusable(&ca.roots, &server, hosts)
    };
    if let Err(reason) = reuse_server {
        info!(cert = %server.cert.display(), %reason, "generating dev server certificate");
        let sans = hosts
            .iter()
            .map(|host| san(host))
            .collect::<Result<_, _>>()?;
        let ekus = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        new_leaf(&ca.issuer, &hosts[0], sans, ekus, &server)?;
    }

    let client = CertKeyFiles {
        cert: dir.join("client.pem"),
        key: dir.join("client-key.pem"),
    };
    ensure_client(&ca, &client, client_name, ca_renewed)?;

    Ok(DevPki {
        ca_cert: ca_files.cert,
        ca_key: ca_files.key,
        server_cert: server.cert,
        server_key: server.key,
        client_cert: client.cert,
        client_key: client.key,
    })
}

/// Writes (or reuses, if valid) a client certificate with common name `name`, signed by
/// the CA of the dev PKI in `dir`, as `client-<name>.pem` / `client-<name>-key.pem`.
/// `name` may contain ASCII letters, digits, `.`, `_` and `-`. Fails if `dir` holds no
/// valid dev CA (run [`generate_dev_pki`] first).
pub fn generate_client_cert(dir: &Path, name: &str) -> Result<CertKeyFiles, TlsError> {
    check_client_name(name)?;
    let ca_files = ca_files(dir);
    let ca = load_ca(&ca_files).map_err(|reason| TlsError::InvalidCa {
        path: ca_files.cert.clone(),
        reason,
    })?;
    let client = CertKeyFiles {
        cert: dir.join(format!("client-{name}.pem")),
        key: dir.join(format!("client-{name}-key.pem")),
    };
    ensure_client(&ca, &client, name, false)?;
    Ok(client)
}

struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    roots: Arc<RootCertStore>,
}

fn ca_files(dir: &Path) -> CertKeyFiles {
    CertKeyFiles {
        cert: dir.join("ca.pem"),
        key: dir.join("ca-key.pem"),
    }
}

fn check_client_name(name: &str) -> Result<(), TlsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(TlsError::Config(format!(
            "invalid client name {name:?}: use 1-64 ASCII letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

fn ensure_client(
    ca: &DevCa,
    client: &CertKeyFiles,
    name: &str,
    ca_renewed: bool,
) -> Result<(), TlsError> {
    let reuse = if ca_renewed {
        Err("new CA".to_string())
    } else {
        client_reusable(&ca.roots, client, name)
    };
    if let Err(reason) = reuse {
        info!(cert = %client.cert.display(), %reason, "generating dev client certificate");
        new_leaf(
            &ca.issuer,
            name,
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            client,
        )?;
    }
    Ok(())
}

/// Loads an existing CA if it is fit to sign with; the error is why not.
fn load_ca(files: &CertKeyFiles) -> Result<DevCa, String> {
    load_certified_key(&files.cert, &files.key).map_err(|error| error.to_string())?;
    let certs = load_certs(&files.cert).map_err(|error| error.to_string())?;
    let ca_cert = certs.into_iter().next().ok_or("no certificate")?;
    {
        let (_, parsed) = x509_parser::parse_x509_certificate(&ca_cert)
            .map_err(|error| format!("{}: {error}", files.cert.display()))?;
        if !parsed.is_ca() {
            return Err(format!("{} is not a CA certificate", files.cert.display()));
        }
    }
    check_not_expiring(&files.cert, &ca_cert)?;
    let key_pem = read_file(&files.key).map_err(|error| error.to_string())?;
    let key_pem = String::from_utf8(key_pem)
        .map_err(|_| format!("{} is not PEM text", files.key.display()))?;
    let key =
        KeyPair::from_pem(&key_pem).map_err(|error| format!("{}: {error}", files.key.display()))?;
    let issuer = Issuer::from_ca_cert_der(&ca_cert, key)
        .map_err(|error| format!("{}: {error}", files.cert.display()))?;
    let roots = roots_from(&files.cert, vec![ca_cert]).map_err(|error| error.to_string())?;
    Ok(DevCa {
        issuer,
        roots: Arc::new(roots),
    })
}

fn check_not_expiring(path: &Path, cert: &CertificateDer<'_>) -> Result<(), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let not_after = parsed.validity().not_after.timestamp();
    if not_after < Utc::now().timestamp() + RENEW_BEFORE_SECONDS {
        return Err(format!("{} expires within 7 days", path.display()));
    }
    Ok(())
}

fn server_reusable(
    roots: &Arc<RootCertStore>,
    files: &CertKeyFiles,
    hosts: &[String],
) -> Result<(), String> {
    let leaf = reusable_leaf(files)?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|error| error.to_string())?;
    for host in hosts {
        let name = ServerName::try_from(host.clone()).map_err(|error| error.to_string())?;
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .map_err(|error| format!("{} for {host}: {error}", files.cert.display()))?;
    }
    Ok(())
}

fn client_reusable(
    roots: &Arc<RootCertStore>,
    files: &CertKeyFiles,
    name: &str,
) -> Result<(), String> {
    let leaf = reusable_leaf(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|error| error.to_string())?;
    verifier
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .map_err(|error| format!("{}: {error}", files.cert.display()))?;
    match certificate_name(&leaf) {
        Some(found) if found == name => Ok(()),
        found => Err(format!("{} is for {found:?}", files.cert.display())),
    }
}

/// The leaf of an existing pair if the key matches and it is not about to expire.
fn reusable_leaf(files: &CertKeyFiles) -> Result<CertificateDer<'static>, String> {
    let certified =
        load_certified_key(&files.cert, &files.key).map_err(|error| error.to_string())?;
    let leaf = certified
        .cert
        .into_iter()
        .next()
        .ok_or_else(|| format!("{} holds no certificate", files.cert.display()))?;
    check_not_expiring(&files.cert, &leaf)?;
    Ok(leaf)
}

fn generation_error(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |source| TlsError::Generate {
        what: what.to_string(),
        source,
    }
}

fn validity(params: &mut CertificateParams, days: u64) {
    let today = Utc::now().date_naive();
    // A day of slack before now tolerates clock skew between machines.
    let start = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    let end = today.checked_add_days(Days::new(days)).unwrap_or(today);
    // Month and day are at most 12 and 31, so the narrowing is lossless.
    let to_time =
        |date: NaiveDate| rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8);
    params.not_before = to_time(start);
    params.not_after = to_time(end);
}

fn new_ca(files: &CertKeyFiles) -> Result<DevCa, TlsError> {
    let key = KeyPair::generate().map_err(generation_error("dev CA key"))?;
    // A name unique to this key, so two dev CAs are never confused for one another.
    let tag: String = key
        .public_key_raw()
        .iter()
        .skip(1)
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Augur dev");
    name.push(DnType::CommonName, format!("Augur dev CA {tag}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(generation_error("dev CA certificate"))?;
    write_atomic(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&files.cert, cert.pem().as_bytes(), 0o644)?;
    let roots = roots_from(&files.cert, vec![cert.der().clone()])?;
    Ok(DevCa {
        issuer: Issuer::new(params, key),
        roots: Arc::new(roots),
    })
}

fn san(host: &str) -> Result<SanType, TlsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = host
        .try_into()
        .map_err(generation_error("server certificate name"))?;
    Ok(SanType::DnsName(dns))
}

fn new_leaf(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    subject_alt_names: Vec<SanType>,
    extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    files: &CertKeyFiles,
) -> Result<(), TlsError> {
    let key = KeyPair::generate().map_err(generation_error("dev certificate key"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Augur dev");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.subject_alt_names = subject_alt_names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = extended_key_usages;
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(generation_error("dev certificate"))?;
    write_atomic(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Writes `contents` to a temporary file beside `path` with `mode`, then renames it
/// over `path`.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| TlsError::Config(format!("{} is not a file path", path.display())))?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".tmp{}", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    // A leftover from a crash may have other permissions; mode applies only on creation.
    let _ = std::fs::remove_file(&temporary);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(write_error)
}
