//! The client side of the API socket, for the CLI subcommands: hyper's HTTP/1.1 client over a
//! tokio `UnixStream`, one connection per request.

//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the HTTP client and its errors |
//! | `commands.rs` | the subcommands: send, then print what the VM looks like |
//! | `agent.rs` | `ballast agent`: the guest agent through the hybrid vsock socket |
//! | `watch.rs` | snapshots of a VM and the reclaim steps between two of them |
//! | `wait.rs` | `ballast limit set --wait` |
//! | `top/` | `ballast top`, the live terminal view |

pub mod agent;
pub mod commands;
pub mod top;
pub mod wait;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the ballast API at {path}: {source} (is `ballast run --api-sock {path}` running?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API connection at {path} failed: {source}")]
    Http { path: PathBuf, source: hyper::Error },
    /// The server refused or failed the request; `message` is its `fault_message`.
    #[error("{message}")]
    Server { status: u16, message: String },
    #[error("the API answered {what} that this ballast cannot read: {detail}")]
    Decode { what: String, detail: String },
    #[error("the API at {path} did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("cannot start the API client: {0}")]
    Runtime(std::io::Error),
    /// The request was carried out, but what was waited for did not come about.
    #[error("{0}")]
    Unmet(String),
}

impl ClientError {
    /// Whether the server answered (and refused), as opposed to not being reachable.
    pub fn is_server_refusal(&self) -> bool {
        matches!(self, ClientError::Server { .. } | ClientError::Unmet(_))
    }
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Talks to the API socket at one path.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and returns the answer, whatever its status.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        runtime.block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body))
                .await
                .map_err(|_| ClientError::Timeout {
                    path: self.socket.clone(),
                })?
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let http_err = |source| ClientError::Http {
            path: self.socket.clone(),
            source,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        // The connection is driven on its own task until the answer is read.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("API client connection: {e}");
            }
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost");
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a request built from a valid method and path");
        let response = sender.send_request(request).await.map_err(http_err)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http_err)?
            .to_bytes()
            .to_vec();
        Ok(Answer { status, body })
    }

    /// Sends a request and turns a non-2xx answer into `ClientError::Server` with the server's
    /// `fault_message`.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let answer = self.request(method, path, body)?;
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("fault_message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| {
                format!(
                    "the API answered {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                )
            });
        Err(ClientError::Server {
            status: answer.status,
            message,
        })
    }

    /// `GET path`, decoded as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let answer = self.call(Method::GET, path, None)?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Decode {
            what: format!("GET {path}"),
            detail: e.to_string(),
        })
    }

    /// `method path` with `body` as JSON; expects success without content.
    pub fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(body).expect("request bodies always serialize");
        self.call(method, path, Some(body)).map(|_| ())
    }
}
