//! The etcd v3 API messages pgherd sends and reads, written by hand as prost messages.
//!
//! Each struct mirrors the message of the same name in etcd's published protocol files:
//! package `etcdserverpb` (`api/etcdserverpb/rpc.proto` in the etcd repository, services `KV`,
//! `Lease`, `Watch` and `Auth`) and package `mvccpb` (`api/mvccpb/kv.proto`). Field numbers
//! and types are etcd's; only the fields pgherd uses are declared. Protobuf decoders skip
//! fields they do not know, so the messages etcd sends with more fields decode fine, and the
//! fields we leave out are sent as their defaults, exactly as if a full client left them unset.
//! The unit tests at the bottom pin the encoding of a few messages byte by byte.

// prost's derive generates the `Debug` impls, and the field attributes document the wire.
#![allow(clippy::derive_partial_eq_without_eq)]

/// gRPC method paths: `/<package>.<service>/<method>`.
pub(super) mod path {
    pub const RANGE: &str = "/etcdserverpb.KV/Range";
    pub const PUT: &str = "/etcdserverpb.KV/Put";
    pub const DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
    pub const TXN: &str = "/etcdserverpb.KV/Txn";
    pub const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
    pub const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
    pub const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
    pub const WATCH: &str = "/etcdserverpb.Watch/Watch";
    pub const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";
}

/// `etcdserverpb.ResponseHeader`: the store revision a response was served at.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    /// The lease the key is attached to, 0 for none.
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// `mvccpb.Event.EventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EventType {
    Put = 0,
    Delete = 1,
}

/// `mvccpb.Event`: one change seen by a watch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(enumeration = "EventType", tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

/// `etcdserverpb.RangeRequest` (`KV.Range`): `[key, range_end)`, or `key` alone when
/// `range_end` is empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Served by the member we talk to without a quorum read.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

/// `etcdserverpb.PutRequest` (`KV.Put`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// 0: no lease.
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

/// `etcdserverpb.PutResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.DeleteRangeRequest` (`KV.DeleteRange`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
}

/// `etcdserverpb.DeleteRangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub deleted: i64,
}

/// `etcdserverpb.Compare.CompareResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CompareResult {
    Equal = 0,
    Greater = 1,
    Less = 2,
    NotEqual = 3,
}

/// `etcdserverpb.Compare.CompareTarget`: which field of the key `target_union` is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CompareTarget {
    Version = 0,
    Create = 1,
    Mod = 2,
    Value = 3,
    Lease = 4,
}

/// `etcdserverpb.Compare`: one condition of a transaction.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    #[prost(enumeration = "CompareResult", tag = "1")]
    pub result: i32,
    #[prost(enumeration = "CompareTarget", tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(oneof = "TargetUnion", tags = "5, 6, 7")]
    pub target_union: Option<TargetUnion>,
}

/// `oneof target_union` of `etcdserverpb.Compare` (the members pgherd compares).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TargetUnion {
    /// 0 means "the key does not exist".
    #[prost(int64, tag = "5")]
    CreateRevision(i64),
    #[prost(int64, tag = "6")]
    ModRevision(i64),
    #[prost(bytes = "vec", tag = "7")]
    Value(Vec<u8>),
}

/// `etcdserverpb.RequestOp`: one operation of a transaction branch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(oneof = "Request", tags = "1, 2, 3")]
    pub request: Option<Request>,
}

/// `oneof request` of `etcdserverpb.RequestOp`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    #[prost(message, tag = "1")]
    Range(RangeRequest),
    #[prost(message, tag = "2")]
    Put(PutRequest),
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeRequest),
}

/// `etcdserverpb.ResponseOp`: the result of one [`RequestOp`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseOp {
    #[prost(oneof = "Response", tags = "1, 2, 3")]
    pub response: Option<Response>,
}

/// `oneof response` of `etcdserverpb.ResponseOp`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Response {
    #[prost(message, tag = "1")]
    Range(RangeResponse),
    #[prost(message, tag = "2")]
    Put(PutResponse),
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeResponse),
}

/// `etcdserverpb.TxnRequest` (`KV.Txn`): if every `compare` holds, run `success`, else
/// `failure`, atomically.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// `etcdserverpb.TxnResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

/// `etcdserverpb.LeaseGrantRequest` (`Lease.LeaseGrant`). `ID` 0 lets etcd choose the id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// `etcdserverpb.LeaseGrantResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// `etcdserverpb.LeaseRevokeRequest` (`Lease.LeaseRevoke`): deletes the lease and its keys.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeRequest {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// `etcdserverpb.LeaseRevokeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.LeaseKeepAliveRequest` (one message of the `Lease.LeaseKeepAlive` stream).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveRequest {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// `etcdserverpb.LeaseKeepAliveResponse`. etcd answers `TTL` 0 (not an error) when the lease
/// does not exist any more.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
}

/// `etcdserverpb.WatchRequest` (client messages of the `Watch.Watch` stream).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    #[prost(oneof = "WatchRequestUnion", tags = "1")]
    pub request_union: Option<WatchRequestUnion>,
}

/// `oneof request_union` of `etcdserverpb.WatchRequest` (pgherd only creates watches; it
/// cancels one by closing the stream).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum WatchRequestUnion {
    #[prost(message, tag = "1")]
    CreateRequest(WatchCreateRequest),
}

/// `etcdserverpb.WatchCreateRequest`: watch `[key, range_end)` from `start_revision`
/// (0: from now).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
}

/// `etcdserverpb.WatchResponse` (server messages of the `Watch.Watch` stream).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    /// Set when the requested start revision was compacted away.
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// `etcdserverpb.AuthenticateRequest` (`Auth.Authenticate`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthenticateRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub password: String,
}

/// `etcdserverpb.AuthenticateResponse`: the token to send as `token` metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthenticateResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub token: String,
}

/// The `range_end` that makes a range (or watch, or delete) cover every key starting with
/// `prefix`: the prefix with its last byte below 0xff incremented and what follows dropped.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (or empty): `\0` means "to the end of the key space".
    vec![0]
}

impl Compare {
    fn new(key: &str, target: CompareTarget, union: TargetUnion) -> Compare {
        Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(union),
        }
    }

    /// `key` does not exist (its create revision is 0).
    pub fn absent(key: &str) -> Compare {
        Compare::new(key, CompareTarget::Create, TargetUnion::CreateRevision(0))
    }

    /// `key` was last modified at `revision` (compare-and-swap on an index).
    pub fn mod_revision(key: &str, revision: i64) -> Compare {
        Compare::new(key, CompareTarget::Mod, TargetUnion::ModRevision(revision))
    }

    /// `key` holds exactly `value`.
    pub fn value(key: &str, value: &str) -> Compare {
        Compare::new(
            key,
            CompareTarget::Value,
            TargetUnion::Value(value.as_bytes().to_vec()),
        )
    }
}

impl RequestOp {
    /// Puts `value` at `key`, on `lease` unless it is 0.
    pub fn put(key: &str, value: &str, lease: i64) -> RequestOp {
        RequestOp {
            request: Some(Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                lease,
            })),
        }
    }

    pub fn get(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::Range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..RangeRequest::default()
            })),
        }
    }

    pub fn delete(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::DeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: Vec::new(),
            })),
        }
    }
}

impl TxnRequest {
    /// `if compare { success } else { failure }`.
    pub fn when(compare: Compare, success: RequestOp, failure: Option<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![compare],
            success: vec![success],
            failure: failure.into_iter().collect(),
        }
    }
}

impl TxnResponse {
    /// The first key returned by a `Range` among the operations that ran.
    pub fn first_range_kv(&self) -> Option<&KeyValue> {
        self.responses.iter().find_map(|op| match &op.response {
            Some(Response::Range(range)) => range.kvs.first(),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn put_request_uses_etcds_field_numbers() {
        let bytes = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 5,
        }
        .encode_to_vec();
        // field 1 (bytes) "k", field 2 (bytes) "v", field 3 (varint) 5
        assert_eq!(bytes, [0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 5]);
    }

    #[test]
    fn txn_compare_and_ops_encode_as_etcd_expects() {
        let txn = TxnRequest::when(
            Compare::absent("/l"),
            RequestOp::put("/l", "n", 7),
            Some(RequestOp::get("/l")),
        );
        let bytes = txn.encode_to_vec();
        let compare = [
            0x0a, 8, // field 1: Compare, 8 bytes
            0x10, 1, // target = CREATE (result EQUAL is the default, not sent)
            0x1a, 2, b'/', b'l', // key
            0x28, 0, // create_revision = 0 (a oneof member is sent even when 0)
        ];
        let success = [
            0x12, 11, // field 2: RequestOp
            0x12, 9, // request_put
            0x0a, 2, b'/', b'l', 0x12, 1, b'n', 0x18, 7,
        ];
        let failure = [
            0x1a, 6, // field 3: RequestOp
            0x0a, 4, // request_range
            0x0a, 2, b'/', b'l',
        ];
        assert_eq!(bytes, [&compare[..], &success[..], &failure[..]].concat());
        assert_eq!(TxnRequest::decode(bytes.as_slice()).ok(), Some(txn));
    }

    #[test]
    fn responses_decode_and_skip_unknown_fields() {
        // RangeResponse { header { cluster_id 9, revision 42 }, kvs [{ key "a", mod 3,
        // version 1, value "b", lease 8 }], count 1 } with fields pgherd does not declare.
        let bytes = [
            0x0a, 4, 0x08, 9, 0x18, 42, // header
            0x12, 14, 0x0a, 1, b'a', 0x18, 3, 0x20, 1, 0x2a, 1, b'b', 0x30, 8, 0x10, 2, // kv
            0x20, 1, // count
        ];
        let resp = RangeResponse::decode(&bytes[..]).expect("decodes");
        assert_eq!(resp.header.map(|h| h.revision), Some(42));
        assert_eq!(
            resp.kvs,
            [KeyValue {
                key: b"a".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                value: b"b".to_vec(),
                lease: 8,
            }]
        );
    }

    #[test]
    fn watch_create_and_keepalive_encode() {
        let watch = WatchRequest {
            request_union: Some(WatchRequestUnion::CreateRequest(WatchCreateRequest {
                key: b"/a".to_vec(),
                range_end: prefix_end(b"/a"),
                start_revision: 300,
            })),
        };
        assert_eq!(
            watch.encode_to_vec(),
            [0x0a, 11, 0x0a, 2, b'/', b'a', 0x12, 2, b'/', b'b', 0x18, 0xac, 0x02]
        );
        assert_eq!(LeaseKeepAliveRequest { id: 1 }.encode_to_vec(), [0x08, 1]);
        let resp = LeaseKeepAliveResponse::decode(&[0x10, 1, 0x18, 0][..]).expect("decodes");
        assert_eq!((resp.id, resp.ttl), (1, 0));
    }

    #[test]
    fn prefix_end_covers_the_prefix() {
        assert_eq!(prefix_end(b"/service/b/"), b"/service/b0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }
}
