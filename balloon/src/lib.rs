//! The virtio-balloon device and the memory manager.
