//! ballast: a KVM virtual machine monitor that keeps every VM inside a memory limit.

pub mod devices;
pub mod layout;
