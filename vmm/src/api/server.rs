//! HTTP/1.1 on the API's Unix socket, served by hyper and routed by axum on a current-thread
//! tokio runtime of its own thread. Each request becomes one `ApiRequest` for the VMM; the
//! server itself only parses, limits and counts.
//!
//! Slow or hostile clients cannot hold the server: every connection is its own task, request
//! headers must arrive within `HEADER_TIMEOUT` and bodies (at most `MAX_BODY_BYTES`) within
//! `BODY_TIMEOUT`, and at most `MAX_CONNECTIONS` are served at once.

use ballast_devices::unix_socket::SocketFile;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::sync::{oneshot, Semaphore};

use super::body::JsonBody;
use super::fault_io::FaultBodies;
use super::firecracker;
use super::metrics::{self, RequestCounters};
use super::{
    ApiError, ApiReply, ApiRequest, ApiResult, ApiSender, BalloonStatsUpdate, BalloonUpdate,
    MemoryLimitUpdate, VmActionBody,
};

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A client must send a request's headers within this time of connecting (or of its previous
/// request), or the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's body must arrive within this time of its headers, or the answer is 408.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the socket's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// On shutdown, how long answers already on their way may take to be written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const JSON: &str = "application/json";

/// The API server's thread. Dropping it (or `shutdown`) stops accepting, lets answers in flight
/// finish for a moment, and removes the socket file.
pub struct ApiServer {
    socket: SocketFile,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Serves `listener` (bound at `socket`) on a new thread, sending requests to `vmm`.
    pub fn start(
        listener: StdUnixListener,
        socket: SocketFile,
        vmm: ApiSender,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let state = AppState {
            vmm: Arc::new(vmm),
            counters: Arc::new(RequestCounters::default()),
        };
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::Api);
                runtime.block_on(serve(listener, state, stopped))
            })?;
        Ok(Self {
            socket,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the server; returns once answers in flight are written (or the grace has passed).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            // Nobody answers on it any more; a socket another process bound there since stays.
            self.socket.remove_if_ours();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) vmm: Arc<ApiSender>,
    counters: Arc<RequestCounters>,
}

/// The routes; `vmm/openapi.yaml` describes each of them, and a test checks that the two agree.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/vm", get(get_vm).patch(firecracker::patch_vm))
        .route("/vm/actions", put(put_vm_action))
        .route("/vm/memory", get(get_memory))
        .route("/vm/memory/limit", put(put_memory_limit))
        .route("/actions", put(firecracker::put_actions))
        .route(
            "/balloon",
            get(get_balloon)
                .patch(patch_balloon)
                .put(firecracker::put_balloon),
        )
        .route(
            "/balloon/statistics",
            get(get_balloon_stats).patch(patch_balloon_stats),
        )
        .route("/metrics", get(get_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn serve(listener: StdUnixListener, state: AppState, mut stop: oneshot::Receiver<()>) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log::error!("cannot serve the API socket: {e}");
            return;
        }
    };
    let app = router(state);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let timer = TokioTimer::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: wait for some to be freed.
                    log::warn!("API: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // half_close: a client that shuts down its writing side after its request (as socat
        // and some clients do) still gets its answer. writev off: hyper's own error answers
        // then reach `FaultBodies` whole, which gives them a fault_message.
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(timer.clone())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_BODY_BYTES)
            .half_close(true)
            .writev(false)
            .serve_connection(
                TokioIo::new(FaultBodies::new(stream)),
                TowerToHyperService::new(app.clone()),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("API connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        log::debug!("API: connections still open after the shutdown grace; closing them");
    }
}

/// An HTTP error: its status and `{"fault_message": "..."}`.
#[derive(Debug)]
pub struct HttpError {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl HttpError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(super) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "fault_message": self.message }).to_string();
        (self.status, [(header::CONTENT_TYPE, JSON)], body).into_response()
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(e) => HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
        .into_response(),
    }
}

/// Sends `request` to the VMM on a task of its own, so that once a request has arrived whole it
/// is carried out exactly once, even if its client goes away and its answer cannot be written
/// (hyper drops the handler then, but not this task).
pub(super) async fn call(state: &AppState, request: ApiRequest) -> ApiResult {
    let vmm = state.vmm.clone();
    tokio::spawn(async move { vmm.call(request).await })
        .await
        .unwrap_or(Err(ApiError::VmmGone))
}

/// Sends `request` to the VMM and turns its answer into a response.
pub(super) async fn ask(state: &AppState, request: ApiRequest) -> Result<Response, HttpError> {
    Ok(match call(state, request).await? {
        ApiReply::Done => StatusCode::NO_CONTENT.into_response(),
        ApiReply::Vm(info) => json(&info),
        ApiReply::Balloon(info) => json(&info),
        ApiReply::BalloonStats(stats) => json(&stats),
        ApiReply::Memory(info) => json(&info),
        ApiReply::Metrics(_) => {
            return Err(HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics answered where JSON was expected",
            ))
        }
    })
}

async fn get_vm(State(s): State<AppState>) -> Result<Response, HttpError> {
    ask(&s, ApiRequest::GetVm).await
}

async fn put_vm_action(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<VmActionBody>,
) -> Result<Response, HttpError> {
    ask(&s, ApiRequest::VmAction(body.action_type)).await
}

async fn get_memory(State(s): State<AppState>) -> Result<Response, HttpError> {
    ask(&s, ApiRequest::GetMemory).await
}

async fn put_memory_limit(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<MemoryLimitUpdate>,
) -> Result<Response, HttpError> {
    ask(&s, ApiRequest::SetMemoryLimit(body)).await
}

async fn get_balloon(State(s): State<AppState>) -> Result<Response, HttpError> {
    ask(&s, ApiRequest::GetBalloon).await
}

async fn patch_balloon(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<BalloonUpdate>,
) -> Result<Response, HttpError> {
    ask(&s, ApiRequest::UpdateBalloon(body)).await
}

async fn get_balloon_stats(State(s): State<AppState>) -> Result<Response, HttpError> {
    ask(&s, ApiRequest::GetBalloonStats).await
}

async fn patch_balloon_stats(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<BalloonStatsUpdate>,
) -> Result<Response, HttpError> {
    ask(&s, ApiRequest::UpdateBalloonStats(body)).await
}

async fn get_metrics(State(s): State<AppState>) -> Result<Response, HttpError> {
    let ApiReply::Metrics(vmm) = s.vmm.call(ApiRequest::GetMetrics).await? else {
        return Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the VMM answered the metrics request with something else",
        ));
    };
    let body = metrics::render(&vmm, &s.counters.snapshot());
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        body,
    )
        .into_response())
}

async fn not_found(uri: Uri) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        format!("no such resource: {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; the Allow header lists what is",
            uri.path()
        ),
    )
}

/// Counts every answer by method, route and status, and logs it.
async fn count_requests(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // Only standard methods become labels, so odd methods cannot grow the counters.
    let method = match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => req.method().as_str().to_string(),
        _ => "other".to_string(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    log::debug!("API {method} {path} -> {status}");
    s.counters.record(&method, &route, status);
    response
}
