//! The `TokenService`: create, list and revoke API tokens (admin only). The
//! secret is generated here, returned once, and only its hash is stored.

use std::sync::Arc;

use augur_core::auth::{validate_token_name, Action, Role, TokenRecord, TOKEN_RECORD_VERSION};
use augur_core::now_ms;
use augur_proto::v1 as pb;
use augur_proto::v1::token_service_server::TokenService;
use augur_store::{TokenChange, TokenStore};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::auth::{generate_secret, hash_secret, BOOTSTRAP_NAME};
use crate::Shared;

/// Longest expiry a token may be given: ten years.
const MAX_EXPIRY_SECONDS: u64 = 10 * 365 * 24 * 3600;

pub struct TokenApi {
    pub(crate) shared: Arc<Shared>,
    pub(crate) store: TokenStore,
}

fn token_to_pb(record: &TokenRecord) -> pb::Token {
    pb::Token {
        name: record.name.clone(),
        role: record.role.to_string(),
        created_at_ms: record.created_at_ms,
        expires_at_ms: record.expires_at_ms.unwrap_or(0),
        created_by: record.created_by.clone(),
    }
}

impl TokenApi {
    fn ready(&self) -> Result<(), Status> {
        if self.shared.auth.config().api_auth() {
            Ok(())
        } else {
            Err(Status::failed_precondition(
                "this coordinator runs without API authentication (--insecure, no \
                 --admin-token-file): tokens would not be checked, so none can be made",
            ))
        }
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let admitted = self.shared.auth.admit(&request, Action::ManageTokens)?;
        self.ready()?;
        let request = request.into_inner();
        validate_token_name(&request.name).map_err(Status::invalid_argument)?;
        if request.name == BOOTSTRAP_NAME {
            return Err(Status::invalid_argument(format!(
                "name: {BOOTSTRAP_NAME:?} is reserved for the bootstrap token"
            )));
        }
        let role: Role = request
            .role
            .parse()
            .map_err(|e: String| Status::invalid_argument(format!("role: {e}")))?;
        if request.expires_in_seconds > MAX_EXPIRY_SECONDS {
            return Err(Status::invalid_argument(format!(
                "expires_in_seconds: {} is more than ten years",
                request.expires_in_seconds
            )));
        }
        let now = now_ms();
        let secret = generate_secret();
        let record = TokenRecord {
            v: TOKEN_RECORD_VERSION,
            name: request.name.clone(),
            role,
            hash: hash_secret(&secret),
            created_at_ms: now,
            expires_at_ms: (request.expires_in_seconds > 0)
                .then(|| now + (request.expires_in_seconds as i64) * 1000),
            created_by: admitted.caller.name.clone(),
        };
        if !self.shared.breaker.call(self.store.create(&record)).await? {
            return Err(Status::already_exists(format!(
                "a token named {:?} exists; revoke it first or choose another name",
                record.name
            )));
        }
        // Usable on this coordinator at once; others learn it from their watch.
        self.shared
            .auth
            .apply(vec![TokenChange::Put(record.clone())]);
        info!(audit = true, caller = %admitted.caller.name, action = "token_create",
              token = %record.name, role = %record.role, result = "ok", "api call");
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token_to_pb(&record)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.shared.auth.admit(&request, Action::ManageTokens)?;
        self.ready()?;
        let (mut records, _) = self.shared.breaker.call(self.store.load()).await?;
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListTokensResponse {
            tokens: records.iter().map(token_to_pb).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let admitted = self.shared.auth.admit(&request, Action::ManageTokens)?;
        self.ready()?;
        let name = request.into_inner().name;
        validate_token_name(&name).map_err(Status::invalid_argument)?;
        if !self.shared.breaker.call(self.store.revoke(&name)).await? {
            return Err(Status::not_found(format!("no token named {name:?}")));
        }
        self.shared
            .auth
            .apply(vec![TokenChange::Removed(name.clone())]);
        info!(audit = true, caller = %admitted.caller.name, action = "token_revoke",
              token = %name, result = "ok", "api call");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}
