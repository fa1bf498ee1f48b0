//! Leader election through the etcd Election API, and the fencing token that
//! guards every leader write.
//!
//! The leader's **epoch** is the create revision of its election key. It only
//! grows from one leader to the next, and a transaction guarded by
//! "my election key still has create revision = epoch" fails as soon as the key is
//! gone (lease expired, resigned) — even if the old leader does not know yet.

use etcd_client::{Client, Compare, CompareOp};

use crate::codec::{decode, encode, LeaderValue};
use crate::keys::Keys;
use crate::lease::LeaseHandle;
use crate::Result;

/// Who leads, as seen by anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    pub node_id: String,
    /// gRPC address workers and clients use to reach it.
    pub address: String,
    pub epoch: i64,
}

/// Proof of leadership carried by every leader write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    key: Vec<u8>,
    epoch: i64,
}

impl Fence {
    /// A fence on `key` at `epoch`, for stores other than etcd (the
    /// in-memory store) and tests; etcd fences come from a won campaign.
    pub fn for_epoch(key: Vec<u8>, epoch: i64) -> Self {
        Fence { key, epoch }
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The election key this fence guards on.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The etcd comparison that holds only while this leadership lasts.
    pub fn guard(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.epoch)
    }
}

/// Campaigns for and observes leadership of one Augur cluster.
#[derive(Clone)]
pub struct Leadership {
    client: Client,
    /// For the campaign, which blocks until this node leads (no request timeout).
    campaign_client: Client,
    keys: Keys,
}

impl Leadership {
    pub fn new(client: Client, keys: Keys) -> Self {
        Leadership {
            campaign_client: client.clone(),
            client,
            keys,
        }
    }

    /// Campaigns through `client` (one without a request timeout, see
    /// [`crate::connect_blocking`]); other calls keep their timeout.
    pub fn with_campaign_client(mut self, client: Client) -> Self {
        self.campaign_client = client;
        self
    }

    /// Waits until this node leads, campaigning under `lease`. Returns the fence
    /// for its writes. Cancel the future (e.g. on `lease.lost()`) to give up.
    pub async fn campaign(
        &self,
        lease: &LeaseHandle,
        node_id: &str,
        address: &str,
    ) -> Result<Fence> {
        let value = encode(&LeaderValue {
            v: 1,
            node_id: node_id.to_string(),
            address: address.to_string(),
        });
        let mut c = self.campaign_client.clone();
        let resp = c.campaign(self.keys.election(), value, lease.id()).await?;
        let leader = resp.leader().ok_or_else(|| {
            etcd_client::Error::ElectError("campaign answered without a leader key".into())
        })?;
        Ok(Fence {
            key: leader.key().to_vec(),
            epoch: leader.rev(),
        })
    }

    /// The current leader, if any.
    pub async fn current(&self) -> Result<Option<LeaderInfo>> {
        let mut c = self.client.clone();
        match c.leader(self.keys.election()).await {
            Ok(resp) => {
                let Some(kv) = resp.kv() else { return Ok(None) };
                let value: LeaderValue = decode(kv.key(), kv.value())?;
                Ok(Some(LeaderInfo {
                    node_id: value.node_id,
                    address: value.address,
                    epoch: kv.create_revision(),
                }))
            }
            // etcd answers "election: no leader" as an error status.
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("no leader") =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives leadership up at once so another candidate takes over without waiting
    /// for the lease to expire.
    pub async fn resign(&self, fence: &Fence) -> Result<()> {
        let mut c = self.client.clone();
        let txn = etcd_client::Txn::new()
            .when(vec![fence.guard()])
            .and_then(vec![etcd_client::TxnOp::delete(fence.key.clone(), None)]);
        c.txn(txn).await?;
        Ok(())
    }
}
