//! Response body type shared by every handler.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Error type of response bodies: a stream that cannot continue.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BodyError>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
