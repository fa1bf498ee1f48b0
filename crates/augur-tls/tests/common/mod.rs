//! Test helpers: dev PKIs, a TLS-served gRPC health service that records who called it,
//! and tonic clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_tls::{client_tls_config, ClientTlsFiles, DevPki, ReloadingServerTls};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub const CLIENT_NAME: &str = "alice";

pub fn dev_pki(dir: &Path) -> DevPki {
    augur_tls::generate_dev_pki(
        dir,
        &["localhost".to_string(), "127.0.0.1".to_string()],
        CLIENT_NAME,
    )
    .expect("generate dev pki")
}

/// What the server saw of each call: the peer name and remote address.
pub type Seen = Arc<Mutex<Vec<(Option<String>, Option<SocketAddr>)>>>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Seen,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    pub async fn start(tls: &ReloadingServerTls) -> Self {
        Self::start_with_timeout(tls, augur_tls::DEFAULT_HANDSHAKE_TIMEOUT).await
    }

    pub async fn start_with_timeout(tls: &ReloadingServerTls, timeout: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen = Seen::default();
        let recorder = seen.clone();
        let layer = tonic::service::InterceptorLayer::new(move |request: tonic::Request<()>| {
            let entry = (augur_tls::peer_name(&request), request.remote_addr());
            recorder.lock().expect("lock").push(entry);
            Ok(request)
        });
        let (_reporter, health) = tonic_health::server::health_reporter();
        let shutdown = CancellationToken::new();
        let incoming = tls.incoming_with_timeout(listener, timeout);
        let router = Server::builder().layer(layer).add_service(health);
        let task = tokio::spawn(
            router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        );
        Self {
            addr,
            seen,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("server ran cleanly");
    }
}

/// Connects over TLS; any error (configuration, TCP, TLS, HTTP/2) as a string.
pub async fn connect(
    addr: SocketAddr,
    files: &ClientTlsFiles,
    domain: Option<&str>,
) -> Result<Channel, String> {
    let tls = client_tls_config(files, domain).map_err(|error| error.to_string())?;
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|error| error.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))
}

pub async fn health_check(channel: Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    tokio::time::timeout(
        Duration::from_secs(10),
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .map_err(|_| "health check timed out".to_string())?
    .map(drop)
    .map_err(|status| status.to_string())
}

/// Connects and makes one call; errors from either step.
pub async fn call(
    addr: SocketAddr,
    files: &ClientTlsFiles,
    domain: Option<&str>,
) -> Result<(), String> {
    health_check(connect(addr, files, domain).await?).await
}

/// Waits (bounded) until `condition` holds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies a server cert and key over `to`'s server files.
pub fn replace_server_files(from: &DevPki, to: &augur_tls::ServerTlsFiles) {
    std::fs::copy(&from.server_cert, &to.cert).expect("copy cert");
    std::fs::copy(&from.server_key, &to.key).expect("copy key");
}

/// Server files copied from `pki` into `dir`, so tests can overwrite them.
pub fn own_server_files(pki: &DevPki, dir: &Path, mtls: bool) -> augur_tls::ServerTlsFiles {
    let files = augur_tls::ServerTlsFiles {
        cert: dir.join("served.pem"),
        key: dir.join("served-key.pem"),
        client_ca: mtls.then(|| dir.join("served-client-ca.pem")),
    };
    std::fs::copy(&pki.server_cert, &files.cert).expect("copy cert");
    std::fs::copy(&pki.server_key, &files.key).expect("copy key");
    if let Some(ca) = &files.client_ca {
        std::fs::copy(&pki.ca_cert, ca).expect("copy ca");
    }
    files
}
