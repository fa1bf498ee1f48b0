//! API tokens (`{prefix}/auth/tokens/{name}`): one key per token, holding its
//! hash, role and expiry, never the secret.
//!
//! Coordinators keep every token in memory ([`TokenStore::load`] then
//! [`TokenStore::watch`]), so checking a request costs a hash and a map
//! look-up, and a revocation reaches every coordinator within a watch round
//! trip. Token writes are not fenced: any coordinator serves token management.

use augur_core::auth::TokenRecord;
use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchStream};

use crate::codec::{decode, encode};
use crate::keys::Keys;
use crate::Result;

/// A change seen by a [`TokenWatch`].
#[derive(Clone, Debug, PartialEq)]
pub enum TokenChange {
    /// A token was created (or rewritten).
    Put(TokenRecord),
    /// The token of this name was revoked.
    Removed(String),
}

/// Read and write access to API tokens.
#[derive(Clone)]
pub struct TokenStore {
    client: Client,
    keys: Keys,
}

impl TokenStore {
    pub fn new(client: Client, keys: Keys) -> Self {
        TokenStore { client, keys }
    }

    /// Stores a new token; `false` if a token of that name already exists
    /// (nothing is written then).
    pub async fn create(&self, record: &TokenRecord) -> Result<bool> {
        let key = self.keys.token(&record.name);
        let txn = Txn::new()
            .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key, encode(record), None)]);
        Ok(self.client.clone().txn(txn).await?.succeeded())
    }

    /// Every stored token, and the revision of the read (watch after it).
    /// An undecodable record is an error: a coordinator must not guess who
    /// may do what.
    pub async fn load(&self) -> Result<(Vec<TokenRecord>, i64)> {
        let prefix = self.keys.tokens_prefix();
        let resp = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let tokens = resp
            .kvs()
            .iter()
            .map(|kv| decode(kv.key(), kv.value()))
            .collect::<Result<Vec<TokenRecord>>>()?;
        Ok((tokens, revision))
    }

    /// Deletes the token `name`; `false` if there was none.
    pub async fn revoke(&self, name: &str) -> Result<bool> {
        let resp = self
            .client
            .clone()
            .delete(self.keys.token(name), None)
            .await?;
        Ok(resp.deleted() > 0)
    }

    /// Watches token changes after `after_revision`.
    pub async fn watch(&self, after_revision: i64) -> Result<TokenWatch> {
        let prefix = self.keys.tokens_prefix();
        let stream = crate::watch_prefix(&self.client, &prefix, after_revision).await?;
        Ok(TokenWatch {
            stream,
            prefix,
            keys: self.keys.clone(),
        })
    }
}

/// A watch on the tokens.
pub struct TokenWatch {
    stream: WatchStream,
    prefix: String,
    keys: Keys,
}

impl TokenWatch {
    /// The changes of the next watch response. An undecodable value is
    /// reported as the removal of that name, so a corrupt record never grants
    /// anything. Errors when the watch ends (reload and watch again).
    pub async fn next(&mut self) -> Result<Vec<TokenChange>> {
        let resp = crate::next_watch_response(&mut self.stream, &self.prefix).await?;
        let mut changes = Vec::new();
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let name = String::from_utf8_lossy(kv.key())
                .strip_prefix(&self.keys.tokens_prefix())
                .unwrap_or_default()
                .to_string();
            match event.event_type() {
                EventType::Put => match decode::<TokenRecord>(kv.key(), kv.value()) {
                    Ok(record) => changes.push(TokenChange::Put(record)),
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable token record: treating it as revoked");
                        changes.push(TokenChange::Removed(name));
                    }
                },
                EventType::Delete => changes.push(TokenChange::Removed(name)),
            }
        }
        Ok(changes)
    }
}
