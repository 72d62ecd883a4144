//! A scripted API server: kube's real `Client` over a `tower-test` mock
//! service. Every request is recorded (with the tokio clock, so paused-time
//! tests can read the spacing of retries) and answered either from a script
//! in order or by a routing function.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use futures::{StreamExt, stream};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::Layer;

#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Option<Value>,
    /// When the request arrived (tokio's clock).
    pub at: Instant,
}

impl Recorded {
    /// `"PUT /apis/...?..."`
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }

    pub fn is_watch(&self) -> bool {
        self.uri.contains("watch=true")
    }
}

pub type Log = Arc<Mutex<Vec<Recorded>>>;

/// How the mock answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Json(u16, Value),
    /// A watch response: these events, one per line, then the stream ends
    /// (the server closed the connection).
    Watch(Vec<Value>),
    /// A watch response that sends these events and then stays open and
    /// quiet, as a healthy watch does between changes.
    Quiet(Vec<Value>),
    /// Never answer: an apiserver or proxy that accepted the request and hung.
    Stall,
}

pub fn ok(body: Value) -> Reply {
    Reply::Json(200, body)
}

pub fn status(code: u16, reason: &str) -> Reply {
    Reply::Json(code, status_body(code, reason))
}

pub fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{reason} (scripted)"), "reason": reason, "code": code})
}

pub fn stall() -> Reply {
    Reply::Stall
}

pub fn watch(events: Vec<Value>) -> Reply {
    Reply::Watch(events)
}

pub fn quiet(events: Vec<Value>) -> Reply {
    Reply::Quiet(events)
}

/// A watch event line: `{"type": ty, "object": object}`.
pub fn event(ty: &str, object: Value) -> Value {
    json!({"type": ty, "object": object})
}

type MockBody = UnsyncBoxBody<Bytes, Infallible>;
type Mock = tower_test::mock::Mock<Request<Body>, Response<MockBody>>;

fn lines_body(events: Vec<Value>, stay_open: bool) -> MockBody {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = events
        .iter()
        .map(|e| {
            let mut line = serde_json::to_vec(e).expect("serializes");
            line.push(b'\n');
            Ok(Frame::data(Bytes::from(line)))
        })
        .collect();
    let rest = if stay_open {
        stream::pending().boxed()
    } else {
        stream::empty().boxed()
    };
    BodyExt::boxed_unsync(StreamBody::new(stream::iter(frames).chain(rest)))
}

/// The mock service answering with `answer`, and the log of what was asked.
fn serve(mut answer: impl FnMut(&Recorded) -> Reply + Send + 'static) -> (Mock, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<MockBody>>();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    tokio::spawn(async move {
        // Stalled requests keep their responders so the caller waits, not errs.
        let mut stalled = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let uri = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let bytes = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let rec = Recorded {
                method,
                uri,
                body: serde_json::from_slice(&bytes).ok(),
                at: Instant::now(),
            };
            let reply = answer(&rec);
            if let Ok(mut l) = sink.lock() {
                l.push(rec);
            }
            let (code, body) = match reply {
                Reply::Stall => {
                    stalled.push(send);
                    continue;
                }
                Reply::Json(code, value) => (
                    code,
                    BodyExt::boxed_unsync(Full::new(Bytes::from(
                        serde_json::to_vec(&value).expect("serializes"),
                    ))),
                ),
                Reply::Watch(events) => (200, lines_body(events, false)),
                Reply::Quiet(events) => (200, lines_body(events, true)),
            };
            let resp = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(body)
                .unwrap_or_else(|_| Response::new(BodyExt::boxed_unsync(Full::new(Bytes::new()))));
            send.send_response(resp);
        }
    });
    (service, log)
}

fn scripted(script: Vec<Reply>) -> impl FnMut(&Recorded) -> Reply + Send + 'static {
    let mut script = script.into_iter();
    move |_| {
        script
            .next()
            .unwrap_or_else(|| status(500, "InternalError"))
    }
}

/// A client whose requests get `script`'s replies in order (500 once the
/// script runs out), and the log of what was asked.
pub fn client(script: Vec<Reply>) -> (Client, Log) {
    let (service, log) = serve(scripted(script));
    (Client::new(service, "default"), log)
}

/// As [`client`], behind the product's API response deadline.
pub fn client_with_deadline(script: Vec<Reply>, timeout: Duration) -> (Client, Log) {
    let (service, log) = serve(scripted(script));
    let service = agentic_webhook::apiclient::deadline(timeout).layer(service);
    (Client::new(service, "default"), log)
}

/// A client whose every request is answered by `route`, behind the
/// product's API response deadline.
pub fn routed(
    route: impl FnMut(&Recorded) -> Reply + Send + 'static,
    timeout: Duration,
) -> (Client, Log) {
    let (service, log) = serve(route);
    let service = agentic_webhook::apiclient::deadline(timeout).layer(service);
    (Client::new(service, "default"), log)
}

pub fn recorded(log: &Log) -> Vec<Recorded> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

pub fn lines(log: &Log) -> Vec<String> {
    recorded(log).iter().map(Recorded::line).collect()
}
