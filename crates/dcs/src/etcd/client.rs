//! The gRPC calls pgherd makes to etcd, over one tonic [`Channel`] to one endpoint.
//!
//! Every request carries `hasleader: true` metadata, so that a member cut off from the quorum
//! fails the request (or cancels the watch) instead of serving stale data, and, once
//! authenticated, the `token` metadata etcd's `Auth.Authenticate` returned.

use super::wire::{self, path};
use futures::stream::{self, Stream, StreamExt};
use http::uri::PathAndQuery;
use std::fmt;
use tonic::client::Grpc;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use tonic_prost::ProstCodec;

/// Metadata etcd reads to refuse requests when the member it reaches has no leader.
const REQUIRE_LEADER: (&str, &str) = ("hasleader", "true");
/// Metadata that carries the authentication token.
const TOKEN: &str = "token";

/// A cheap-to-clone handle: the channel plus the token it was authenticated with.
#[derive(Clone)]
pub(super) struct Client {
    channel: Channel,
    token: Option<AsciiMetadataValue>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("Client")
            .field("authenticated", &self.token.is_some())
            .finish()
    }
}

impl Client {
    pub fn new(channel: Channel) -> Client {
        Client {
            channel,
            token: None,
        }
    }

    /// The same channel, sending `token` from now on.
    pub fn with_token(&self, token: AsciiMetadataValue) -> Client {
        Client {
            channel: self.channel.clone(),
            token: Some(token),
        }
    }

    pub fn token(&self) -> Option<&AsciiMetadataValue> {
        self.token.as_ref()
    }

    pub async fn range(&self, req: wire::RangeRequest) -> Result<wire::RangeResponse, Status> {
        self.unary(path::RANGE, req).await
    }

    pub async fn put(&self, req: wire::PutRequest) -> Result<wire::PutResponse, Status> {
        self.unary(path::PUT, req).await
    }

    pub async fn delete_range(
        &self,
        req: wire::DeleteRangeRequest,
    ) -> Result<wire::DeleteRangeResponse, Status> {
        self.unary(path::DELETE_RANGE, req).await
    }

    pub async fn txn(&self, req: wire::TxnRequest) -> Result<wire::TxnResponse, Status> {
        self.unary(path::TXN, req).await
    }

    pub async fn lease_grant(&self, ttl: i64) -> Result<wire::LeaseGrantResponse, Status> {
        self.unary(path::LEASE_GRANT, wire::LeaseGrantRequest { ttl, id: 0 })
            .await
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<wire::LeaseRevokeResponse, Status> {
        self.unary(path::LEASE_REVOKE, wire::LeaseRevokeRequest { id })
            .await
    }

    /// One keepalive: opens a `LeaseKeepAlive` stream, sends one request and returns the
    /// first answer (the stream is closed when it is dropped).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<wire::LeaseKeepAliveResponse, Status> {
        let mut answers = self
            .streaming(
                path::LEASE_KEEP_ALIVE,
                open_ended(wire::LeaseKeepAliveRequest { id }),
            )
            .await?;
        answers
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("etcd closed the lease keepalive stream unanswered"))
    }

    /// Opens a `Watch` stream with one create request; the watch lives as long as the returned
    /// stream.
    pub async fn watch(
        &self,
        create: wire::WatchCreateRequest,
    ) -> Result<Streaming<wire::WatchResponse>, Status> {
        let request = wire::WatchRequest {
            request_union: Some(wire::WatchRequestUnion::CreateRequest(create)),
        };
        self.streaming(path::WATCH, open_ended(request)).await
    }

    /// `Auth.Authenticate`: the token to send with later requests.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, Status> {
        let req = wire::AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        };
        // Without the old token: etcd checks a token it is sent even on this call.
        let anonymous = Client::new(self.channel.clone());
        let resp: wire::AuthenticateResponse = anonymous.unary(path::AUTHENTICATE, req).await?;
        Ok(resp.token)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(
            REQUIRE_LEADER.0,
            AsciiMetadataValue::from_static(REQUIRE_LEADER.1),
        );
        if let Some(token) = &self.token {
            metadata.insert(TOKEN, token.clone());
        }
        request
    }

    async fn ready(&self) -> Result<Grpc<Channel>, Status> {
        let mut grpc = Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        Ok(grpc)
    }

    async fn unary<Req, Resp>(&self, path: &'static str, message: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.ready().await?;
        let codec = ProstCodec::<Req, Resp>::default();
        let response = grpc
            .unary(
                self.request(message),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(response.into_inner())
    }

    async fn streaming<Req, Resp, S>(
        &self,
        path: &'static str,
        messages: S,
    ) -> Result<Streaming<Resp>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
        S: Stream<Item = Req> + Send + 'static,
    {
        let mut grpc = self.ready().await?;
        let codec = ProstCodec::<Req, Resp>::default();
        let response = grpc
            .streaming(
                self.request(messages),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(response.into_inner())
    }
}

/// A request stream of one message that stays open (it never ends by itself), so that etcd
/// keeps the call alive until we drop the response stream.
fn open_ended<T: Send + 'static>(message: T) -> impl Stream<Item = T> + Send + 'static {
    stream::once(async move { message }).chain(stream::pending())
}
