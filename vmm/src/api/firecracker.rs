//! Firecracker's routes for what ballast has, so Firecracker's clients (firecracker-go-sdk's
//! `PauseVM`, `ResumeVM` and `Shutdown`, its Python and Rust clients) drive a ballast VM: each
//! becomes one of ballast's own `ApiRequest`s. Firecracker configures a VM through the API before
//! `InstanceStart`; a ballast VM is configured on `ballast run` and is running whenever its API
//! answers, so these answer as Firecracker answers after boot.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::body::JsonBody;
use super::server::{ask, call, AppState, HttpError};
use super::{ApiError, ApiRequest, VmAction};
use crate::vstate::vcpu::PauseError;

/// `PUT /actions` body (Firecracker's `InstanceActionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub action_type: FirecrackerAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum FirecrackerAction {
    /// Firecracker writes its metrics to its metrics file; ballast serves them live at
    /// `GET /metrics` and has nothing to flush.
    FlushMetrics,
    /// The VM is already running.
    InstanceStart,
    /// Firecracker presses Ctrl+Alt+Del on the guest's keyboard; ballast has no keyboard, and
    /// ends the VM as `Shutdown` does.
    SendCtrlAltDel,
}

/// `PATCH /vm` body (Firecracker's `Vm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateBody {
    pub state: DesiredState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DesiredState {
    Paused,
    Resumed,
}

/// `PUT /balloon` body (Firecracker's `Balloon`): read, so a malformed one is refused for what
/// is wrong with it, and then refused because the balloon is made at launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonConfigBody {
    pub amount_mib: u32,
    pub deflate_on_oom: bool,
    #[serde(default)]
    pub stats_polling_interval_s: u16,
    #[serde(default)]
    pub free_page_hinting: bool,
    #[serde(default)]
    pub free_page_reporting: bool,
}

pub(super) async fn put_actions(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<ActionBody>,
) -> Result<Response, HttpError> {
    match body.action_type {
        FirecrackerAction::FlushMetrics => Ok(StatusCode::NO_CONTENT.into_response()),
        FirecrackerAction::InstanceStart => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "the VM is already running: `ballast run` starts it (the operation is not supported \
             after starting the microVM)",
        )),
        FirecrackerAction::SendCtrlAltDel => {
            log::info!(
                "SendCtrlAltDel asked through the API: ballast ends the VM as Shutdown does"
            );
            ask(&s, ApiRequest::VmAction(VmAction::Shutdown)).await
        }
    }
}

pub(super) async fn patch_vm(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<VmStateBody>,
) -> Result<Response, HttpError> {
    let action = match body.state {
        DesiredState::Paused => VmAction::Pause,
        DesiredState::Resumed => VmAction::Resume,
    };
    // Firecracker pauses a paused VM and resumes a running one without complaint.
    match call(&s, ApiRequest::VmAction(action)).await {
        Ok(_) | Err(ApiError::Pause(PauseError::AlreadyPaused | PauseError::NotPaused)) => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn put_balloon(JsonBody(_body): JsonBody<BalloonConfigBody>) -> HttpError {
    HttpError::new(
        StatusCode::BAD_REQUEST,
        "the balloon is made at launch (`ballast run --balloon ...`) and cannot be replaced \
         after boot (the operation is not supported after starting the microVM); PATCH /balloon \
         changes its target",
    )
}
