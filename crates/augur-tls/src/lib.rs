//! rustls TLS for Augur's gRPC API and worker stream.
//!
//! - [`ReloadingServerTls`]: server certificate, key and optional client CA (mTLS) loaded
//!   from PEM files and reloadable while serving — on [`ReloadingServerTls::reload`], on
//!   SIGHUP, or when a file changes ([`ReloadingServerTls::spawn_reloader`]). Open
//!   connections keep their session; new handshakes use the new material; a broken file
//!   leaves the old material in place.
//! - [`ReloadingServerTls::incoming`]: a stream of completed TLS connections for
//!   `tonic::transport::Server::serve_with_incoming_shutdown`. Handshakes run
//!   concurrently with a timeout; failures are logged and counted.
//! - [`client_tls_config`]: a `tonic::transport::ClientTlsConfig` that trusts one CA file
//!   and optionally presents a client certificate.
//! - [`peer_name`]: the verified client certificate's name on the server side.
//! - [`generate_dev_pki`] / [`generate_client_cert`]: a throwaway CA with server and
//!   client certificates for development and tests.
//!
//! # Serving
//!
//! ```no_run
//! # async fn serve(router: tonic::transport::server::Router) -> Result<(), Box<dyn std::error::Error>> {
//! use augur_tls::{ReloadingServerTls, ServerTlsFiles};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let tls = ReloadingServerTls::load(ServerTlsFiles {
//!     cert: "server.pem".into(),
//!     key: "server-key.pem".into(),
//!     client_ca: Some("ca.pem".into()),
//! })?;
//! let reloader = tls.spawn_reloader(shutdown.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! router
//!     .serve_with_incoming_shutdown(tls.incoming(listener), shutdown.clone().cancelled_owned())
//!     .await?;
//! reloader.await?;
//! # Ok(()) }
//! ```
//!
//! Do not also set `Server::builder().tls_config(..)`: the stream is already TLS. Because
//! the stream yields `tokio_rustls::server::TlsStream<tokio::net::TcpStream>` — from the
//! same tokio-rustls tonic links — tonic's `Connected` impl applies, so in handlers
//! `request.remote_addr()` and `request.peer_certs()` work, and so does [`peer_name`].
//!
//! # Connecting
//!
//! ```no_run
//! # async fn connect() -> Result<(), Box<dyn std::error::Error>> {
//! use augur_tls::{client_tls_config, ClientTlsFiles};
//! let tls = client_tls_config(
//!     &ClientTlsFiles {
//!         ca: Some("ca.pem".into()),
//!         cert: Some("client.pem".into()),
//!         key: Some("client-key.pem".into()),
//!     },
//!     None,
//! )?;
//! // The scheme must be https: tonic ignores TLS settings on http URIs.
//! let channel = tonic::transport::Endpoint::from_static("https://127.0.0.1:7000")
//!     .tls_config(tls)?
//!     .connect()
//!     .await?;
//! # drop(channel); Ok(()) }
//! ```
//!
//! All cryptography uses rustls' ring provider, passed explicitly; no process-wide
//! default provider needs installing.

mod client;
mod error;
mod incoming;
mod material;
mod pki;
mod server;

pub use client::{certificate_name, client_tls_config, peer_name, ClientTlsFiles};
pub use error::TlsError;
pub use incoming::{is_per_connection_error, DEFAULT_HANDSHAKE_TIMEOUT};
pub use pki::{generate_client_cert, generate_dev_pki, CertKeyFiles, DevPki};
pub use server::{ReloadingServerTls, ServerTlsFiles, RELOAD_POLL_INTERVAL};
