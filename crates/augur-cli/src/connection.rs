//! How the CLI reaches a coordinator: TLS when the endpoint is `https://`,
//! and the API token on every call. Set once from the global flags
//! ([`configure`]); every subcommand's client comes from here.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use augur_proto::v1::job_service_client::JobServiceClient;
use augur_proto::v1::placement_service_client::PlacementServiceClient;
use augur_proto::v1::token_service_client::TokenServiceClient;
use augur_tls::ClientTlsFiles;
use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

/// The global connection flags.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectionArgs {
    /// API token (sent as `authorization: Bearer …`).
    #[arg(long, global = true, env = "AUGUR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) the coordinator's certificate must chain to; needed for https:// endpoints.
    #[arg(long, global = true, env = "AUGUR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for coordinators that require mTLS.
    #[arg(long, global = true, env = "AUGUR_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Key of --client-cert.
    #[arg(long, global = true, env = "AUGUR_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
}

impl ConnectionArgs {
    pub fn tls_files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.ca_cert.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
        }
    }
}

static SETTINGS: RwLock<Option<ConnectionArgs>> = RwLock::new(None);

/// Sets how every later client connects.
pub fn configure(args: ConnectionArgs) {
    *SETTINGS.write().unwrap_or_else(|e| e.into_inner()) = Some(args);
}

fn settings() -> ConnectionArgs {
    SETTINGS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Adds the API token to every request.
#[derive(Clone)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel with credentials.
pub type Conn = InterceptedService<Channel, Credentials>;

/// The endpoint with TLS applied when it is `https://`.
pub fn endpoint(url: &str, tls: &ClientTlsFiles) -> anyhow::Result<Endpoint> {
    if tls.ca.is_some() && url.trim().starts_with("http://") {
        anyhow::bail!(
            "--ca-cert is set but the endpoint {url} is plain http://; use https:// to connect with TLS"
        );
    }
    // A bare HOST:PORT is https:// when a CA is given; a URL keeps its scheme.
    let url = &crate::urls::any_scheme_url("--endpoint", url, tls.ca.is_some())?;
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("--endpoint {url:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(5));
    if url.starts_with("https://") {
        let config = augur_tls::client_tls_config(tls, None)
            .context("TLS settings (--ca-cert, --client-cert, --client-key)")?;
        endpoint = endpoint
            .tls_config(config)
            .context("TLS settings (--ca-cert, --client-cert, --client-key)")?;
    }
    Ok(endpoint)
}

/// A connected channel to `url` with the configured credentials.
pub async fn channel(url: &str) -> anyhow::Result<Conn> {
    let args = settings();
    let bearer = match &args.token {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse::<MetadataValue<Ascii>>()
                .context("--token: not a valid token (it must be printable ASCII)")?,
        ),
        None => None,
    };
    let channel = endpoint(url, &args.tls_files())?
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot reach the coordinator at {url} (is `augur dev` or a coordinator running?)"
            )
        })?;
    Ok(InterceptedService::new(channel, Credentials { bearer }))
}

pub async fn jobs(url: &str) -> anyhow::Result<JobServiceClient<Conn>> {
    Ok(JobServiceClient::new(channel(url).await?))
}

pub async fn placement(url: &str) -> anyhow::Result<PlacementServiceClient<Conn>> {
    Ok(PlacementServiceClient::new(channel(url).await?))
}

pub async fn tokens(url: &str) -> anyhow::Result<TokenServiceClient<Conn>> {
    Ok(TokenServiceClient::new(channel(url).await?))
}
