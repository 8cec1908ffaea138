//! The vsock device against virtio-queue's mock driver queues, a real event loop and real Unix
//! sockets in a temporary folder.

mod bounds;
mod budget;
mod data;
mod device;
mod guest_init;
mod host_init;
mod hostile;
mod limits;
mod shutdown;
mod util;
