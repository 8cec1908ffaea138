//! ballast: a KVM virtual machine monitor that keeps every VM inside a memory limit. This crate
//! is the binary and the glue; the devices are in `ballast-devices`, the memory manager in
//! `ballast-manager`.
//!
//! | module | job |
//! | --- | --- |
//! | `cli`, `config` | the command line, and what it asks for, checked before any KVM object exists |
//! | `builder/` | makes the VM in named phases and runs it to its end |
//! | `vstate/` | KVM: the VM, guest memory, vCPUs, the dirty log |
//! | `boot`, `acpi/`, `layout` | what the guest finds at boot: the kernel, boot parameters, ACPI tables, where things sit |
//! | `virtio_mmio` | a virtio device on the MMIO bus: its slot, ioeventfds and irqfd |
//! | `console` | the guest's console on stdin: raw mode on a terminal, `Ctrl-A x` to stop |
//! | `control`, `signals` | the VM's lifecycle on the event loop: power-off, reset, SIGINT/SIGTERM |
//! | `api/`, `api_socket` | the REST API: one enum of requests between the API thread and the event loop |
//! | `client/` | the subcommands that talk to a running ballast |
//! | `agent/` | the guest agent service: one thread, one connection, stats and requests |
//! | `ports` | the memory manager's ports over this VM's devices |
//! | `seccomp/` | a seccomp filter per kind of thread (`--seccomp on\|log\|off`) |
//! | `ready` | the line `ballast run` prints when the VM is up, systemd's `READY=1`, launch warnings |

pub mod acpi;
pub mod agent;
pub mod api;
pub mod api_socket;
pub mod boot;
pub mod builder;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod control;
pub mod layout;
pub mod ports;
pub mod ready;
pub mod seccomp;
pub mod signals;
pub mod virtio_mmio;
pub mod vstate;
