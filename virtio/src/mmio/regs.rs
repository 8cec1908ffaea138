//! The virtio-mmio register layout, version 2 (virtio 1.2 §4.2.2, "MMIO Device Register
//! Layout"). Offsets are from the base of the device's MMIO window; every register below
//! `CONFIG` is 32 bits wide and little-endian.

/// "virt" in little-endian; the driver refuses a device that does not show it.
pub const MAGIC_VALUE: u64 = 0x000;
pub const VERSION: u64 = 0x004;
pub const DEVICE_ID: u64 = 0x008;
pub const VENDOR_ID: u64 = 0x00c;
pub const DEVICE_FEATURES: u64 = 0x010;
pub const DEVICE_FEATURES_SEL: u64 = 0x014;
pub const DRIVER_FEATURES: u64 = 0x020;
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
pub const QUEUE_SEL: u64 = 0x030;
pub const QUEUE_NUM_MAX: u64 = 0x034;
pub const QUEUE_NUM: u64 = 0x038;
pub const QUEUE_READY: u64 = 0x044;
/// The VMM registers each queue's eventfd as a KVM ioeventfd here, with datamatch = the queue
/// index, so notifications normally never leave the kernel.
pub const QUEUE_NOTIFY: u64 = 0x050;
pub const INTERRUPT_STATUS: u64 = 0x060;
pub const INTERRUPT_ACK: u64 = 0x064;
pub const STATUS: u64 = 0x070;
pub const QUEUE_DESC_LOW: u64 = 0x080;
pub const QUEUE_DESC_HIGH: u64 = 0x084;
/// The available ring ("driver area").
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
/// The used ring ("device area").
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// Shared memory regions: ballast's devices have none, so every region reads as absent.
pub const SHM_SEL: u64 = 0x0ac;
pub const SHM_LEN_LOW: u64 = 0x0b0;
pub const SHM_LEN_HIGH: u64 = 0x0b4;
pub const SHM_BASE_LOW: u64 = 0x0b8;
pub const SHM_BASE_HIGH: u64 = 0x0bc;
pub const CONFIG_GENERATION: u64 = 0x0fc;
/// Device-specific configuration space starts here; it may be accessed with any width.
pub const CONFIG: u64 = 0x100;

/// What MagicValue reads: "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// What Version reads: 2 is the modern (virtio 1.x) layout; 1 was legacy.
pub const MMIO_VERSION: u32 = 2;
/// What VendorID reads: "BALL" in little-endian (bytes 0x42 0x41 0x4c 0x4c). Linux drivers do
/// not look at it; it only tells a curious guest which VMM it runs on, as QEMU's "QEMU" does.
pub const VENDOR: u32 = 0x4c4c_4142;
/// What SHMLen and SHMBase read for a region that does not exist (§4.2.2: "a length of -1").
pub const SHM_ABSENT: u32 = u32::MAX;

/// The only access width the spec allows below `CONFIG`.
pub const REGISTER_SIZE: usize = 4;

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_mmio as linux;

    use super::*;

    /// Our names follow the spec; the offsets must still agree with Linux's uapi header.
    #[test]
    fn offsets_match_the_linux_header() {
        let pairs = [
            (MAGIC_VALUE, linux::VIRTIO_MMIO_MAGIC_VALUE),
            (VERSION, linux::VIRTIO_MMIO_VERSION),
            (DEVICE_ID, linux::VIRTIO_MMIO_DEVICE_ID),
            (VENDOR_ID, linux::VIRTIO_MMIO_VENDOR_ID),
            (DEVICE_FEATURES, linux::VIRTIO_MMIO_DEVICE_FEATURES),
            (DEVICE_FEATURES_SEL, linux::VIRTIO_MMIO_DEVICE_FEATURES_SEL),
            (DRIVER_FEATURES, linux::VIRTIO_MMIO_DRIVER_FEATURES),
            (DRIVER_FEATURES_SEL, linux::VIRTIO_MMIO_DRIVER_FEATURES_SEL),
            (QUEUE_SEL, linux::VIRTIO_MMIO_QUEUE_SEL),
            (QUEUE_NUM_MAX, linux::VIRTIO_MMIO_QUEUE_NUM_MAX),
            (QUEUE_NUM, linux::VIRTIO_MMIO_QUEUE_NUM),
            (QUEUE_READY, linux::VIRTIO_MMIO_QUEUE_READY),
            (QUEUE_NOTIFY, linux::VIRTIO_MMIO_QUEUE_NOTIFY),
            (INTERRUPT_STATUS, linux::VIRTIO_MMIO_INTERRUPT_STATUS),
            (INTERRUPT_ACK, linux::VIRTIO_MMIO_INTERRUPT_ACK),
            (STATUS, linux::VIRTIO_MMIO_STATUS),
            (QUEUE_DESC_LOW, linux::VIRTIO_MMIO_QUEUE_DESC_LOW),
            (QUEUE_DESC_HIGH, linux::VIRTIO_MMIO_QUEUE_DESC_HIGH),
            (QUEUE_DRIVER_LOW, linux::VIRTIO_MMIO_QUEUE_AVAIL_LOW),
            (QUEUE_DRIVER_HIGH, linux::VIRTIO_MMIO_QUEUE_AVAIL_HIGH),
            (QUEUE_DEVICE_LOW, linux::VIRTIO_MMIO_QUEUE_USED_LOW),
            (QUEUE_DEVICE_HIGH, linux::VIRTIO_MMIO_QUEUE_USED_HIGH),
            (SHM_SEL, linux::VIRTIO_MMIO_SHM_SEL),
            (SHM_LEN_LOW, linux::VIRTIO_MMIO_SHM_LEN_LOW),
            (SHM_LEN_HIGH, linux::VIRTIO_MMIO_SHM_LEN_HIGH),
            (SHM_BASE_LOW, linux::VIRTIO_MMIO_SHM_BASE_LOW),
            (SHM_BASE_HIGH, linux::VIRTIO_MMIO_SHM_BASE_HIGH),
            (CONFIG_GENERATION, linux::VIRTIO_MMIO_CONFIG_GENERATION),
            (CONFIG, linux::VIRTIO_MMIO_CONFIG),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, u64::from(theirs));
        }
    }

    #[test]
    fn magic_and_vendor_spell_their_names() {
        assert_eq!(&MAGIC.to_le_bytes(), b"virt");
        assert_eq!(&VENDOR.to_le_bytes(), b"BALL");
    }
}
