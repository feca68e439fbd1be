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

/// Body of an upstream request: one buffer, and optionally a flag set when
/// hyper takes it to write on a connection, which tells a call that reached
/// the upstream (and may be billed) from one cancelled before it was sent.
#[derive(Debug, Default)]
pub struct UpstreamBody {
    data: Option<Bytes>,
    sent: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl UpstreamBody {
    /// A body of `data`, tracked by `sent` when given.
    pub fn new(data: Bytes, sent: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>) -> Self {
        UpstreamBody {
            data: (!data.is_empty()).then_some(data),
            sent,
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(flag) = &self.sent {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        std::task::Poll::Ready(self.data.take().map(|d| Ok(http_body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
