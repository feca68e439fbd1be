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

/// A `text/event-stream` response of `body`, with the request id.
pub fn sse_response(body: ProxyBody, request_id: &http::HeaderValue) -> http::Response<ProxyBody> {
    use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
    let mut out = http::Response::new(body);
    let h = out.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-request-id", request_id.clone());
    out
}

/// A streamed request body relayed to an upstream.
pub type RelayedBody = std::pin::Pin<
    Box<dyn http_body::Body<Data = Bytes, Error = BodyError> + Send + Sync + 'static>,
>;

/// Body of an upstream request: one buffer, and optionally a flag set when
/// hyper takes it to write on a connection, which tells a call that reached
/// the upstream (and may be billed) from one cancelled before it was sent.
/// A pass-through request adds the rest of the client's body, streamed.
#[derive(Default)]
pub struct UpstreamBody {
    data: Option<Bytes>,
    sent: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    rest: Option<RelayedBody>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("buffered", &self.data.as_ref().map(Bytes::len))
            .field("streamed", &self.rest.is_some())
            .finish()
    }
}

impl UpstreamBody {
    /// A body of `data`, tracked by `sent` when given.
    pub fn new(data: Bytes, sent: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>) -> Self {
        UpstreamBody {
            data: (!data.is_empty()).then_some(data),
            sent,
            rest: None,
        }
    }

    /// `first`, then everything `rest` yields, without buffering it.
    pub fn relayed(first: Bytes, rest: RelayedBody) -> Self {
        UpstreamBody {
            data: (!first.is_empty()).then_some(first),
            sent: None,
            rest: Some(rest),
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(flag) = &self.sent {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(d) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        match self.rest.as_mut() {
            Some(rest) => rest.as_mut().poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let first = self.data.as_ref().map_or(0, |d| d.len() as u64);
        match &self.rest {
            None => http_body::SizeHint::with_exact(first),
            // Never exact, so never sent as a Content-Length: a rest under
            // a limit says "exactly 0 more" once its allowance is used up,
            // while more bytes (refused) may follow. A known length goes
            // up as the client's Content-Length header instead.
            Some(r) => {
                let mut out = http_body::SizeHint::new();
                out.set_lower(r.size_hint().lower() + first);
                out
            }
        }
    }
}
