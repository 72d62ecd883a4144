//! A minimal HTTPS client that talks to the webhook the way the apiserver
//! does: TLS with our CA, no SNI when dialling an IP, ALPN `h2`/`http/1.1`,
//! one kept-alive connection carrying many requests. Used by the load
//! generator and the integration tests.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

impl ClientError {
    /// The server never processed the request: it never left this client
    /// (the connection had closed), or the server's GOAWAY refused its
    /// stream (RFC 9113 §6.8). Safe to send again on a new connection, as
    /// Go's transport does.
    pub fn never_processed(&self) -> bool {
        let ClientError::Http(e) = self else {
            return false;
        };
        let refused = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<h2::Error>())
            .is_some_and(|h2| {
                h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR)
            });
        e.is_closed() || e.is_canceled() || refused
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// Offer h2 and http/1.1, like the apiserver.
    Both,
    H2,
    Http1,
}

#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
}

impl Tls {
    /// Trust `ca_pem`; optionally present a client certificate.
    pub fn new(
        ca_pem: &[u8],
        alpn: Alpn,
        client: Option<(&[u8], &[u8])>,
    ) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| ClientError::Tls(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Tls(e.to_string()))?
                .with_root_certificates(roots);
        let mut config = match client {
            Some((cert_pem, key_pem)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ClientError::Tls(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match alpn {
            Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        };
        Ok(Tls {
            config: Arc::new(config),
        })
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One connection. HTTP/2 connections can be shared to multiplex streams.
pub struct Connection {
    sender: Sender,
    /// Negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// Serial (hex) of the certificate the server presented.
    pub peer_serial: String,
    authority: String,
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Connection {
    /// Connect to `addr`; the certificate is verified against the IP (no SNI),
    /// or against `server_name` when given.
    pub async fn connect(
        addr: SocketAddr,
        tls: &Tls,
        server_name: Option<&str>,
    ) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let name = match server_name {
            Some(n) => {
                ServerName::try_from(n.to_owned()).map_err(|e| ClientError::Tls(e.to_string()))?
            }
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let stream = TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await?;
        let (_, session) = stream.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let peer_serial = session
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, cert)| crate::certs::serving::hex(cert.raw_serial()))
            .unwrap_or_default();
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H1(sender)
        };
        Ok(Connection {
            sender,
            alpn,
            peer_serial,
            authority: addr.to_string(),
        })
    }

    /// Another handle on the same HTTP/2 connection (streams multiplex);
    /// `None` for HTTP/1.1, which carries one request at a time.
    pub fn share(&self) -> Option<Connection> {
        match &self.sender {
            Sender::H2(s) => Some(Connection {
                sender: Sender::H2(s.clone()),
                alpn: self.alpn.clone(),
                peer_serial: self.peer_serial.clone(),
                authority: self.authority.clone(),
            }),
            Sender::H1(_) => None,
        }
    }

    pub async fn post(
        &mut self,
        path_and_query: &str,
        body: impl Into<Bytes>,
    ) -> Result<Response, ClientError> {
        let req = Request::post(format!("https://{}{}", self.authority, path_and_query))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, */*")
            .header(header::USER_AGENT, "kube-apiserver-admission")
            .body(Full::new(body.into()))?;
        self.send(req).await
    }

    pub async fn send(&mut self, mut req: Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                // HTTP/1 wants origin-form and a Host header.
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/".into());
                let host = self.authority.clone();
                *req.uri_mut() = path.parse().map_err(http::Error::from)?;
                req.headers_mut().insert(
                    header::HOST,
                    http::HeaderValue::from_str(&host).map_err(http::Error::from)?,
                );
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}
