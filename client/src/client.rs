use std::time::Duration;

use raftq_api::limits::MAX_MESSAGE_BYTES;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use raftq_api::v1::queue_admin_client::QueueAdminClient;
use raftq_api::v1::queue_client::QueueClient;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, Producer};

/// A connection to a raftq node. Cheap to clone; clones share the
/// connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to `addr` (`http://host:port`, or `host:port`).
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| Error::BadAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| Error::Connect { addr: uri, source })?;
        Ok(Client { channel })
    }

    /// The raw generated client of the `Queue` service.
    pub fn queue(&self) -> QueueClient<Channel> {
        QueueClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The raw generated client of the `QueueAdmin` service.
    pub fn admin(&self) -> QueueAdminClient<Channel> {
        QueueAdminClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The raw generated client of the `ClusterAdmin` service.
    pub fn cluster(&self) -> ClusterAdminClient<Channel> {
        ClusterAdminClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn producer(&self) -> Producer {
        Producer::new(self.clone())
    }
}
