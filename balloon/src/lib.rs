//! The virtio-balloon device and the memory manager.

pub mod device;
pub mod manager;

pub use device::{
    release_guest_range, release_pfns, Balloon, BalloonBitmap, BalloonConfig, BalloonConfigError,
    BalloonError, BalloonMetrics, BalloonMetricsSnapshot, BalloonStats,
};
