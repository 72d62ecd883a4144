//! Answers given before the request body is read (415, 413, 429).
//!
//! A client may still be uploading when the answer is ready. Dropping the
//! unread body resets the stream (HTTP/2) or the connection (HTTP/1.1),
//! and clients such as curl then report a stream error instead of the
//! answer (RFC 9113 §8.1 allows an early response followed by
//! RST_STREAM(NO_ERROR), but curl 7.88 still fails an upload cut short).
//! So the answer goes out at once and the rest of the body is read and
//! discarded in the background, up to a byte cap and the request's
//! deadline; past either the body is dropped (the early answer is then
//! all a client that keeps sending can get).

use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt;

/// Read and discard what remains of `unread` (at most `cap` bytes, until
/// `until`), without holding it in memory.
pub fn before_body(answer: Response, unread: Body, cap: usize, until: Instant) -> Response {
    tokio::spawn(async move {
        let mut body = unread;
        let mut seen = 0usize;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len());
                    if seen > cap {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout_at(until.into(), drain).await;
    });
    answer
}
