//! The memory manager: the VM is the container, this is its over-limit handler.

pub mod policy;
pub mod tracker;

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod sim;
