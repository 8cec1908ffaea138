//! virtio-mmio transport (to be written)
pub struct MmioTransport;
