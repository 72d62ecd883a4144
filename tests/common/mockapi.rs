//! A scripted API server: kube's real `Client` over a `tower-test` mock
//! service. Responses are served in order; every request is recorded so a
//! test can assert the exact requests and their order.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Option<Value>,
}

impl Recorded {
    /// `"PUT /apis/...?..."`
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }
}

pub type Log = Arc<Mutex<Vec<Recorded>>>;

pub fn ok(body: Value) -> (u16, Value) {
    (200, body)
}

pub fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{reason} (scripted)"), "reason": reason, "code": code}),
    )
}

/// A client whose requests get `script`'s responses in order (500 once the
/// script runs out), and the log of what was asked.
pub fn client(script: Vec<(u16, Value)>) -> (Client, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    tokio::spawn(async move {
        let mut script = script.into_iter();
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
            let body = serde_json::from_slice(&bytes).ok();
            if let Ok(mut l) = sink.lock() {
                l.push(Recorded { method, uri, body });
            }
            let (code, value) = script
                .next()
                .unwrap_or_else(|| status(500, "InternalError"));
            let resp = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
                .unwrap_or_else(|_| Response::new(Body::empty()));
            send.send_response(resp);
        }
    });
    (Client::new(service, "default"), log)
}

pub fn recorded(log: &Log) -> Vec<Recorded> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

pub fn lines(log: &Log) -> Vec<String> {
    recorded(log).iter().map(Recorded::line).collect()
}
