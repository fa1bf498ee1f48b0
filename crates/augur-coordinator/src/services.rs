//! What an HTTP extension served on the API port (the web console) gets:
//! the API's own services, called in-process with the caller's token, so
//! every page and action goes through the same authentication, authorisation,
//! validation and forwarding to the leader as a gRPC call.

use std::fmt;
use std::sync::Arc;

use augur_core::auth::{Action, Role};
use tonic::{Request, Status};

use crate::api::Api;
use crate::placement_api::PlacementApi;
use crate::Shared;

/// Builds the extension's routes from the services; merged with gRPC on the
/// API port (gRPC paths are `/augur.v1.*/…`, everything else is the
/// extension's). Its fallback must answer gRPC requests (content type
/// `application/grpc`) with `grpc-status` 12 (unimplemented).
#[derive(Clone)]
pub struct HttpExtension(pub Arc<dyn Fn(Services) -> axum::Router + Send + Sync>);

impl fmt::Debug for HttpExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpExtension")
    }
}

/// The API's services for in-process callers.
#[derive(Clone)]
pub struct Services {
    pub(crate) api: Arc<Api>,
    pub(crate) placement: Arc<PlacementApi>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) tls: bool,
}

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// A request as a gRPC client would send it, with `token` as its bearer.
pub fn request<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        if let Ok(value) = format!("Bearer {token}").parse() {
            request.metadata_mut().insert("authorization", value);
        }
    }
    request
}

impl Services {
    /// `augur.v1.JobService` (jobs, workflows, schedules, workers, cluster).
    pub fn jobs(&self) -> &impl augur_proto::v1::job_service_server::JobService {
        self.api.as_ref()
    }

    /// `augur.v1.PlacementService` (model, placement configuration, runs).
    pub fn placement(&self) -> &impl augur_proto::v1::placement_service_server::PlacementService {
        self.placement.as_ref()
    }

    /// Who `token` is, checked (and rate-limited, and audited when refused)
    /// as any API call is.
    pub fn identify(&self, token: Option<&str>) -> Result<Identity, Status> {
        let admitted = self.shared.auth.admit(&request(token, ()), Action::Read)?;
        Ok(Identity {
            name: admitted.caller.name.clone(),
            role: admitted.caller.role,
        })
    }

    /// Whether callers must present a token (false without authentication).
    pub fn auth_required(&self) -> bool {
        self.shared.auth.config().api_auth()
    }

    /// Whether some protection was turned off with `--insecure`.
    pub fn insecure(&self) -> bool {
        self.shared.auth.config().insecure
    }

    /// Whether the API port serves TLS (cookies are then `Secure`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }
}
