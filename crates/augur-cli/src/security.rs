//! Security flags of `augur coordinator` and `augur worker`: tokens, TLS,
//! etcd credentials. Secrets come from files (or one environment variable
//! each), never from command-line values, which other users can read in `ps`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use augur_coordinator::AuthConfig;
use augur_store::EtcdSecurity;
use augur_tls::{ClientTlsFiles, ServerTlsFiles};
use clap::Args;

/// Reads a secret from a file: trimmed, non-empty, printable ASCII.
pub fn read_secret(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what}: cannot read {}", path.display()))?;
    check_secret(text.trim(), &format!("{what} ({})", path.display()))
}

fn check_secret(secret: &str, what: &str) -> anyhow::Result<String> {
    if secret.is_empty() {
        bail!("{what} is empty");
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{what} must be printable ASCII without spaces");
    }
    Ok(secret.to_string())
}

/// A secret from `--X-file`, else from the environment variable `env`.
fn secret_from(file: &Option<PathBuf>, env: &str, what: &str) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        return read_secret(path, what).map(Some);
    }
    match std::env::var(env) {
        Ok(value) if !value.trim().is_empty() => check_secret(value.trim(), env).map(Some),
        _ => Ok(None),
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct EtcdSecurityArgs {
    /// CA certificate of the etcd cluster (turns on TLS to etcd).
    #[arg(long, env = "AUGUR_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd (with --etcd-key).
    #[arg(long, env = "AUGUR_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, env = "AUGUR_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (with --etcd-password-file or AUGUR_ETCD_PASSWORD).
    #[arg(long, env = "AUGUR_ETCD_USER")]
    pub etcd_user: Option<String>,
    #[arg(long, env = "AUGUR_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdSecurityArgs {
    pub fn security(&self) -> anyhow::Result<EtcdSecurity> {
        Ok(EtcdSecurity {
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user: self.etcd_user.clone(),
            password: secret_from(
                &self.etcd_password_file,
                "AUGUR_ETCD_PASSWORD",
                "--etcd-password-file",
            )?,
        })
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct CoordinatorSecurityArgs {
    /// Run without authentication where none is configured (trusted networks only).
    /// AUGUR_INSECURE accepts 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "AUGUR_INSECURE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// File with the bootstrap admin token (or AUGUR_ADMIN_TOKEN); turns on API authentication.
    #[arg(long, env = "AUGUR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File with the cluster's join token (or AUGUR_JOIN_TOKEN) that workers must present.
    #[arg(long, env = "AUGUR_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Serve TLS with this certificate (PEM, with --tls-key). Reloaded on SIGHUP or change.
    #[arg(long, env = "AUGUR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "AUGUR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS); workers may then attach by certificate.
    #[arg(long, env = "AUGUR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// CA that peer coordinators' certificates chain to (default: --tls-client-ca).
    #[arg(long, env = "AUGUR_TLS_PEER_CA")]
    pub tls_peer_ca: Option<PathBuf>,
    /// API requests per second per token (0: unlimited).
    #[arg(long, default_value_t = 1000.0)]
    pub rate_limit: f64,
    /// Requests a token may burst above its rate.
    #[arg(long, default_value_t = 2000.0)]
    pub rate_burst: f64,
    /// API requests in flight on this coordinator before it answers ResourceExhausted (0: unlimited).
    #[arg(long, default_value_t = 1024)]
    pub max_inflight_requests: usize,
}

impl CoordinatorSecurityArgs {
    pub fn auth(&self) -> anyhow::Result<AuthConfig> {
        if !(self.rate_limit >= 0.0 && self.rate_limit.is_finite()) {
            bail!(
                "--rate-limit must be 0 or a positive number, got {}",
                self.rate_limit
            );
        }
        if !(self.rate_burst >= 1.0 && self.rate_burst.is_finite()) {
            bail!("--rate-burst must be at least 1, got {}", self.rate_burst);
        }
        Ok(AuthConfig {
            insecure: self.insecure,
            admin_token: secret_from(
                &self.admin_token_file,
                "AUGUR_ADMIN_TOKEN",
                "--admin-token-file",
            )?,
            join_token: secret_from(
                &self.join_token_file,
                "AUGUR_JOIN_TOKEN",
                "--join-token-file",
            )?,
            worker_certificates: self.tls_client_ca.is_some(),
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
            max_inflight: self.max_inflight_requests,
        })
    }

    pub fn server_tls(&self) -> Option<ServerTlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }

    /// How this coordinator reaches a peer: the peer CA (or the client CA),
    /// and under mTLS its own certificate as client identity.
    pub fn peer_tls(&self) -> Option<ClientTlsFiles> {
        let server = self.server_tls()?;
        let ca = self.tls_peer_ca.clone().or(self.tls_client_ca.clone())?;
        let mtls = server.client_ca.is_some();
        Some(ClientTlsFiles {
            ca: Some(ca),
            cert: mtls.then(|| server.cert.clone()),
            key: mtls.then(|| server.key.clone()),
        })
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct WorkerSecurityArgs {
    /// File with the cluster's join token (or AUGUR_JOIN_TOKEN).
    #[arg(long, env = "AUGUR_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// CA the coordinators' certificates chain to (needed for https:// coordinators).
    #[arg(long, env = "AUGUR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This worker's certificate (PEM) for coordinators that require mTLS.
    #[arg(long, env = "AUGUR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "AUGUR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl WorkerSecurityArgs {
    pub fn join_token(&self) -> anyhow::Result<Option<String>> {
        secret_from(
            &self.join_token_file,
            "AUGUR_JOIN_TOKEN",
            "--join-token-file",
        )
    }

    pub fn tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        if self.tls_ca.is_none() {
            if self.tls_cert.is_some() {
                bail!("--tls-cert needs --tls-ca (the CA the coordinators' certificates chain to)");
            }
            return Ok(None);
        }
        let files = ClientTlsFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        };
        augur_tls::client_tls_config(&files, None)
            .map(Some)
            .context("worker TLS (--tls-ca, --tls-cert, --tls-key)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        std::fs::write(&path, "  abc123\n").expect("write");
        assert_eq!(read_secret(&path, "x").expect("read"), "abc123");
        std::fs::write(&path, "\n").expect("write");
        assert!(read_secret(&path, "x").is_err());
        std::fs::write(&path, "a b").expect("write");
        assert!(read_secret(&path, "x").is_err());
        assert!(read_secret(&dir.path().join("missing"), "x").is_err());
    }
}
