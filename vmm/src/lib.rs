//! ballast: a KVM virtual machine monitor that keeps every VM inside a memory limit.

pub mod acpi;
pub mod agent;
pub mod api;
pub mod api_socket;
pub mod boot;
pub mod builder;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod layout;
pub mod ports;
pub mod signals;
pub mod virtio_mmio;
pub mod vstate;
