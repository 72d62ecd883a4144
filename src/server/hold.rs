//! Keep something (memory permits) for as long as a response is being sent:
//! a converted 60 MB review is still in memory until its last byte leaves.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::response::Response;
use http_body::{Frame, SizeHint};

struct Holding<T> {
    body: Body,
    _held: T,
}

impl<T: Send + Unpin + 'static> http_body::Body for Holding<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `resp`, holding `held` until its body has been sent (or dropped).
pub fn until_sent<T: Send + Unpin + 'static>(resp: Response, held: T) -> Response {
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(Holding { body, _held: held }))
}
