//! Dev PKI generation: file layout, permissions, reuse and regeneration.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use augur_tls::{certificate_name, generate_client_cert, generate_dev_pki, TlsError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_string()).collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

fn name_of(path: &Path) -> Option<String> {
    let cert = CertificateDer::from_pem_file(path).expect("pem cert");
    certificate_name(&cert)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn writes_keys_private_and_names_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki =
        generate_dev_pki(dir.path(), &hosts(&["localhost", "127.0.0.1"]), "cli").expect("generate");
    for key in [&pki.ca_key, &pki.server_key, &pki.client_key] {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    assert_eq!(name_of(&pki.client_cert).as_deref(), Some("cli"));
    assert_eq!(name_of(&pki.server_cert).as_deref(), Some("localhost"));
    assert!(name_of(&pki.ca_cert).is_some_and(|name| name.starts_with("Augur dev CA")));

    let worker = generate_client_cert(dir.path(), "worker-1").expect("worker cert");
    assert_eq!(name_of(&worker.cert).as_deref(), Some("worker-1"));
    assert_eq!(mode(&worker.key), 0o600);
    assert!(worker.cert.ends_with("client-worker-1.pem"));
}

#[test]
fn reuses_valid_files_and_regenerates_what_no_longer_fits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = generate_dev_pki(dir.path(), &hosts(&["localhost"]), "cli").expect("first");
    let snapshot = |pki: &augur_tls::DevPki| {
        [
            read(&pki.ca_cert),
            read(&pki.server_cert),
            read(&pki.client_cert),
        ]
    };
    let before = snapshot(&first);

    let again = generate_dev_pki(dir.path(), &hosts(&["localhost"]), "cli").expect("again");
    assert_eq!(
        snapshot(&again),
        before,
        "valid files are reused as they are"
    );

    // A host the server certificate does not cover: new server cert, same CA and client.
    let more_hosts = generate_dev_pki(dir.path(), &hosts(&["localhost", "10.1.2.3"]), "cli")
        .expect("more hosts");
    let after = snapshot(&more_hosts);
    assert_eq!(after[0], before[0], "CA kept");
    assert_ne!(after[1], before[1], "server cert regenerated");
    assert_eq!(after[2], before[2], "client cert kept");

    // Another client name: new client cert only.
    let renamed = generate_dev_pki(dir.path(), &hosts(&["localhost", "10.1.2.3"]), "bob")
        .expect("renamed client");
    assert_eq!(read(&renamed.ca_cert), before[0]);
    assert_eq!(name_of(&renamed.client_cert).as_deref(), Some("bob"));

    // A damaged CA key: everything regenerated under a new CA.
    std::fs::write(&renamed.ca_key, "garbage").expect("damage ca key");
    let fresh = generate_dev_pki(dir.path(), &hosts(&["localhost"]), "bob").expect("fresh");
    let fresh_files = snapshot(&fresh);
    assert_ne!(fresh_files[0], before[0], "new CA");
    assert_ne!(fresh_files[1], after[1], "server cert re-signed");
}

#[test]
fn rejects_bad_names_and_missing_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = generate_client_cert(dir.path(), "worker").expect_err("no CA yet");
    assert!(matches!(error, TlsError::InvalidCa { .. }), "{error}");

    let error =
        generate_dev_pki(dir.path(), &hosts(&["localhost"]), "../evil").expect_err("bad name");
    assert!(matches!(error, TlsError::Config(_)), "{error}");
    let error = generate_dev_pki(dir.path(), &[], "cli").expect_err("no hosts");
    assert!(matches!(error, TlsError::Config(_)), "{error}");
    let error = generate_dev_pki(dir.path(), &hosts(&["bad host"]), "cli").expect_err("bad host");
    assert!(error.to_string().contains("bad host"), "{error}");
}
