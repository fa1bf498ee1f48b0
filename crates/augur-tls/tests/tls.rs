//! End-to-end TLS over real loopback sockets: tonic server fed by
//! `ReloadingServerTls::incoming`, clients built by `client_tls_config`.

mod common;

use std::time::Duration;

use augur_tls::{ClientTlsFiles, ReloadingServerTls, TlsError};
use common::{call, connect, dev_pki, eventually, health_check, TestServer, CLIENT_NAME};

#[tokio::test]
async fn mtls_call_sees_peer_name_and_remote_addr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let worker = augur_tls::generate_client_cert(dir.path(), "worker-1").expect("worker cert");
    let tls = ReloadingServerTls::load(pki.server_files(true)).expect("load");
    assert!(tls.requires_client_cert());
    let server = TestServer::start(&tls).await;

    call(server.addr, &pki.client_files(), None)
        .await
        .expect("call as the dev client over the IP SAN");
    let worker_files = ClientTlsFiles {
        ca: Some(pki.ca_cert.clone()),
        cert: Some(worker.cert),
        key: Some(worker.key),
    };
    call(server.addr, &worker_files, Some("localhost"))
        .await
        .expect("call as the worker over the DNS SAN");

    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0.as_deref(), Some(CLIENT_NAME));
    assert_eq!(seen[1].0.as_deref(), Some("worker-1"));
    for (_, addr) in &seen {
        let addr = addr.expect("remote_addr available through the TLS stream");
        assert!(addr.ip().is_loopback(), "{addr}");
    }
    assert_eq!(tls.handshake_failures(), 0);
    server.stop().await;
}

#[tokio::test]
async fn without_client_ca_clients_need_no_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let tls = ReloadingServerTls::load(pki.server_files(false)).expect("load");
    assert!(!tls.requires_client_cert());
    let server = TestServer::start(&tls).await;

    let anonymous = ClientTlsFiles {
        ca: Some(pki.ca_cert.clone()),
        ..ClientTlsFiles::default()
    };
    call(server.addr, &anonymous, None)
        .await
        .expect("anonymous call");
    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, None, "no client certificate, no peer name");
    server.stop().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let other = dev_pki(other_dir.path());
    let tls = ReloadingServerTls::load(pki.server_files(true)).expect("load");
    let server = TestServer::start(&tls).await;

    let untrusted_identity = ClientTlsFiles {
        ca: Some(pki.ca_cert.clone()),
        cert: Some(other.client_cert.clone()),
        key: Some(other.client_key.clone()),
    };
    let error = call(server.addr, &untrusted_identity, None)
        .await
        .expect_err("a client cert from another CA must be refused");
    eprintln!("untrusted client cert: {error}");
    eventually("first handshake failure counted", || {
        tls.handshake_failures() >= 1
    })
    .await;

    let no_identity = ClientTlsFiles {
        ca: Some(pki.ca_cert.clone()),
        ..ClientTlsFiles::default()
    };
    call(server.addr, &no_identity, None)
        .await
        .expect_err("a client without a certificate must be refused under mTLS");
    eventually("second handshake failure counted", || {
        tls.handshake_failures() >= 2
    })
    .await;

    assert!(
        server.seen.lock().expect("lock").is_empty(),
        "no call got through"
    );
    call(server.addr, &pki.client_files(), None)
        .await
        .expect("the trusted client still gets in");
    server.stop().await;
}

#[tokio::test]
async fn client_trusting_another_ca_rejects_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let other = dev_pki(other_dir.path());
    let tls = ReloadingServerTls::load(pki.server_files(false)).expect("load");
    let server = TestServer::start(&tls).await;

    let wrong_ca = ClientTlsFiles {
        ca: Some(other.ca_cert.clone()),
        ..ClientTlsFiles::default()
    };
    let error = connect(server.addr, &wrong_ca, None)
        .await
        .expect_err("server cert is not from the client's CA");
    assert!(error.contains("UnknownIssuer"), "{error}");
    eventually("server counts the aborted handshake", || {
        tls.handshake_failures() >= 1
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn reload_serves_new_certificate_to_new_connections_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let next_dir = tempfile::tempdir().expect("tempdir");
    let served_dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let next = dev_pki(next_dir.path());
    let files = common::own_server_files(&pki, served_dir.path(), false);
    let tls = ReloadingServerTls::load(files.clone()).expect("load");
    let server = TestServer::start(&tls).await;
    let trusts_old = ClientTlsFiles {
        ca: Some(pki.ca_cert.clone()),
        ..ClientTlsFiles::default()
    };
    let trusts_new = ClientTlsFiles {
        ca: Some(next.ca_cert.clone()),
        ..ClientTlsFiles::default()
    };

    let old_connection = connect(server.addr, &trusts_old, None)
        .await
        .expect("connect before reload");
    health_check(old_connection.clone())
        .await
        .expect("call before reload");
    call(server.addr, &trusts_new, None)
        .await
        .expect_err("new CA not served yet");

    common::replace_server_files(&next, &files);
    tls.reload().expect("reload");
    assert_eq!(tls.reloads(), 1);

    call(server.addr, &trusts_new, None)
        .await
        .expect("new connection sees the new certificate");
    call(server.addr, &trusts_old, None)
        .await
        .expect_err("new connection no longer sees the old certificate");
    // A reconnect would fail verification (see above), so success here means the
    // connection opened before the reload is still the one in use.
    health_check(old_connection)
        .await
        .expect("connection opened before the reload keeps working");
    server.stop().await;
}

#[tokio::test]
async fn reload_swaps_the_client_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let next_dir = tempfile::tempdir().expect("tempdir");
    let served_dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let next = dev_pki(next_dir.path());
    let files = common::own_server_files(&pki, served_dir.path(), true);
    let tls = ReloadingServerTls::load(files.clone()).expect("load");
    let server = TestServer::start(&tls).await;
    let next_identity = ClientTlsFiles {
        ca: Some(pki.ca_cert.clone()),
        cert: Some(next.client_cert.clone()),
        key: Some(next.client_key.clone()),
    };
    call(server.addr, &next_identity, None)
        .await
        .expect_err("client CA not trusted yet");

    let client_ca = files.client_ca.as_ref().expect("mtls files");
    std::fs::copy(&next.ca_cert, client_ca).expect("replace client ca");
    tls.reload().expect("reload");

    call(server.addr, &next_identity, None)
        .await
        .expect("client cert from the new client CA accepted");
    call(server.addr, &pki.client_files(), None)
        .await
        .expect_err("client cert from the old client CA refused");
    server.stop().await;
}

#[tokio::test]
async fn broken_files_on_reload_keep_the_old_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let served_dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let other = dev_pki(other_dir.path());
    let files = common::own_server_files(&pki, served_dir.path(), false);
    let tls = ReloadingServerTls::load(files.clone()).expect("load");
    let server = TestServer::start(&tls).await;
    let trusts_pki = ClientTlsFiles {
        ca: Some(pki.ca_cert.clone()),
        ..ClientTlsFiles::default()
    };

    std::fs::write(&files.key, "not a key\n").expect("break key");
    let error = tls.reload().expect_err("garbage key");
    assert!(matches!(error, TlsError::InvalidPem { ref path, .. } if *path == files.key));
    assert!(error.to_string().contains("served-key.pem"), "{error}");

    // A valid key that belongs to another certificate.
    std::fs::copy(&other.server_key, &files.key).expect("mismatched key");
    let error = tls.reload().expect_err("mismatched key");
    assert!(error.to_string().contains("does not match"), "{error}");
    assert!(error.to_string().contains("served-key.pem"), "{error}");

    std::fs::remove_file(&files.cert).expect("remove cert");
    let error = tls.reload().expect_err("missing cert");
    assert!(matches!(error, TlsError::Read { ref path, .. } if *path == files.cert));

    assert_eq!(tls.reloads(), 0);
    call(server.addr, &trusts_pki, None)
        .await
        .expect("old material still served after failed reloads");
    server.stop().await;
}

#[tokio::test]
async fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());

    let mut files = pki.server_files(true);
    files.cert = dir.path().join("missing.pem");
    let error = ReloadingServerTls::load(files).expect_err("missing cert");
    assert!(error.to_string().contains("missing.pem"), "{error}");

    let mut files = pki.server_files(true);
    files.cert = pki.server_key.clone();
    let error = ReloadingServerTls::load(files).expect_err("key where the cert should be");
    assert!(error.to_string().contains("no CERTIFICATE"), "{error}");
    assert!(error.to_string().contains("server-key.pem"), "{error}");

    let mut files = pki.server_files(true);
    files.client_ca = Some(dir.path().join("no-ca.pem"));
    let error = ReloadingServerTls::load(files).expect_err("missing client CA");
    assert!(error.to_string().contains("no-ca.pem"), "{error}");
}

#[tokio::test]
async fn slow_handshake_does_not_block_other_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let tls = ReloadingServerTls::load(pki.server_files(true)).expect("load");
    let server = TestServer::start_with_timeout(&tls, Duration::from_secs(4)).await;

    // Opens TCP and never says a word.
    let silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("tcp connect");
    call(server.addr, &pki.client_files(), None)
        .await
        .expect("a good client gets through while another handshake hangs");
    assert_eq!(
        tls.handshake_failures(),
        0,
        "the silent client has not timed out yet"
    );
    eventually("silent client's handshake times out", || {
        tls.handshake_failures() == 1
    })
    .await;
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn reloader_picks_up_changed_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let next_dir = tempfile::tempdir().expect("tempdir");
    let served_dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let next = dev_pki(next_dir.path());
    let files = common::own_server_files(&pki, served_dir.path(), false);
    let tls = ReloadingServerTls::load(files.clone()).expect("load");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let reloader = tls.spawn_reloader(shutdown.clone());
    let server = TestServer::start(&tls).await;

    common::replace_server_files(&next, &files);
    eventually("reloader notices the new files", || tls.reloads() >= 1).await;
    let trusts_new = ClientTlsFiles {
        ca: Some(next.ca_cert.clone()),
        ..ClientTlsFiles::default()
    };
    call(server.addr, &trusts_new, None)
        .await
        .expect("new certificate served");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), reloader)
        .await
        .expect("reloader stops on shutdown")
        .expect("reloader task");
    server.stop().await;
}

#[test]
fn client_tls_config_validates_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let other = dev_pki(other_dir.path());

    let error = augur_tls::client_tls_config(&ClientTlsFiles::default(), None).expect_err("no CA");
    assert!(error.to_string().contains("CA file is required"), "{error}");

    let cert_only = ClientTlsFiles {
        ca: Some(pki.ca_cert.clone()),
        cert: Some(pki.client_cert.clone()),
        key: None,
    };
    let error = augur_tls::client_tls_config(&cert_only, None).expect_err("cert without key");
    assert!(error.to_string().contains("without its key"), "{error}");

    let mismatched = ClientTlsFiles {
        key: Some(other.client_key.clone()),
        ..cert_only
    };
    let error = augur_tls::client_tls_config(&mismatched, None).expect_err("mismatched key");
    assert!(error.to_string().contains("does not match"), "{error}");

    let garbage_ca = ClientTlsFiles {
        ca: Some(pki.client_key.clone()),
        ..ClientTlsFiles::default()
    };
    let error = augur_tls::client_tls_config(&garbage_ca, None).expect_err("key as CA");
    assert!(error.to_string().contains("client-key.pem"), "{error}");

    let error =
        augur_tls::client_tls_config(&pki.client_files(), Some("not a name")).expect_err("domain");
    assert!(error.to_string().contains("not a name"), "{error}");

    augur_tls::client_tls_config(&pki.client_files(), Some("localhost")).expect("valid files");
}

#[tokio::test]
async fn sighup_reloads_without_waiting_for_the_poll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let next_dir = tempfile::tempdir().expect("tempdir");
    let served_dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let next = dev_pki(next_dir.path());
    let files = common::own_server_files(&pki, served_dir.path(), false);
    let tls = ReloadingServerTls::load(files.clone()).expect("load");
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Polling effectively off: only the signal can trigger the reload.
    let reloader = tls.spawn_reloader_with_interval(shutdown.clone(), Duration::from_secs(3600));

    common::replace_server_files(&next, &files);
    // SAFETY: kill(2) on our own pid; the SIGHUP handler is installed by
    // spawn_reloader_with_interval before it returns, so the process is not terminated.
    let sent = unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    assert_eq!(sent, 0, "kill failed");
    eventually("SIGHUP reload", || tls.reloads() >= 1).await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), reloader)
        .await
        .expect("reloader stops on shutdown")
        .expect("reloader task");
}
