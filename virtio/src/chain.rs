//! What every device checks about the chains it takes off a ring before it does any work for
//! them, and the budget that bounds the work of one run.
//!
//! A guest decides how many chains it makes available and what is in them; the event loop that
//! serves the devices also serves the API, the other devices and the VM's shutdown. So every
//! chain a device takes off a ring counts against its run's [`RunBudget`] — a good one, a
//! malformed one, one naming a descriptor that does not exist — and a device whose budget runs
//! out with work left kicks itself and lets the loop serve the others first.
//!
//! virtio-queue's chain iterator follows an indirect descriptor table wherever it finds one, so
//! a driver could hand a device that never offered VIRTIO_RING_F_INDIRECT_DESC up to 65 535
//! descriptors per chain. [`indirect_refusal`] reads the chain's descriptors straight from the
//! queue's table first and refuses such a chain.

use std::fmt;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use crate::GuestMemoryMmap;

/// How much work one run of a device may do before it kicks itself and yields the event loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunBudget {
    left: u64,
}

impl RunBudget {
    pub fn new(units: u64) -> Self {
        RunBudget { left: units }
    }

    /// Spends `units` (chains, PFNs, bytes: whatever the device counts); saturates at zero.
    pub fn spend(&mut self, units: u64) {
        self.left = self.left.saturating_sub(units);
    }

    /// Whether nothing is left: the device stops taking chains and kicks itself.
    pub fn is_spent(&self) -> bool {
        self.left == 0
    }

    /// What is left.
    pub fn left(&self) -> u64 {
        self.left
    }
}

/// Why a chain was refused before the device looked at its buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainRefusal {
    /// The head names a descriptor past the queue's size.
    NoSuchHead { head: u16, size: u16 },
    /// A descriptor of the chain points at an indirect table, a feature that was not
    /// negotiated.
    Indirect { index: u16 },
}

impl fmt::Display for ChainRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ChainRefusal::NoSuchHead { head, size } => write!(
                f,
                "the available ring names descriptor {head}, the queue has {size}"
            ),
            ChainRefusal::Indirect { index } => write!(
                f,
                "descriptor {index} points at an indirect table, which was not negotiated"
            ),
        }
    }
}

impl std::error::Error for ChainRefusal {}

/// Checks the chain at `head` before a device reads it: the head must name a descriptor of the
/// queue, and unless `indirect_negotiated`, no descriptor may point at an indirect table. Walks
/// at most the queue's size of descriptors (a longer walk is a loop, which the chain iterator
/// cuts off by itself). The guest can change the table after this look; the device's own per
/// chain bound (the queue size, or its own smaller one) still holds then.
pub fn check_chain(
    mem: &GuestMemoryMmap,
    queue: &Queue,
    head: u16,
    indirect_negotiated: bool,
) -> Result<(), ChainRefusal> {
    let size = queue.size();
    if head >= size {
        return Err(ChainRefusal::NoSuchHead { head, size });
    }
    if indirect_negotiated {
        return Ok(());
    }
    let table = GuestAddress(queue.desc_table());
    let mut index = head;
    for _ in 0..size {
        let Some(addr) = table.checked_add(u64::from(index) * 16) else {
            return Ok(());
        };
        // An unreadable descriptor ends the chain for the iterator too; nothing to refuse here.
        let Ok(desc) = mem.read_obj::<Descriptor>(addr) else {
            return Ok(());
        };
        if desc.refers_to_indirect_table() {
            return Err(ChainRefusal::Indirect { index });
        }
        if !desc.has_next() || desc.next() >= size {
            return Ok(());
        }
        index = desc.next();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    use super::*;
    use crate::test_utils::leaked_guest_memory;

    const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
    const NEXT: u16 = VRING_DESC_F_NEXT as u16;

    fn store(mock: &MockSplitQueue<'_, GuestMemoryMmap>, index: u16, flags: u16, next: u16) {
        let desc = Descriptor::new(0x8_0000, 16, flags, next);
        mock.desc_table()
            .store(index, RawDescriptor::from(desc))
            .unwrap();
    }

    #[test]
    fn an_indirect_descriptor_anywhere_in_the_chain_is_refused_unless_negotiated() {
        let mem = leaked_guest_memory(&[(0, 0x10_0000)]);
        let mock = MockSplitQueue::create(mem, GuestAddress(0), 16);
        let queue: Queue = mock.create_queue().unwrap();
        store(&mock, 0, NEXT, 1);
        store(&mock, 1, NEXT, 2);
        store(&mock, 2, INDIRECT, 0);
        assert_eq!(
            check_chain(mem, &queue, 0, false),
            Err(ChainRefusal::Indirect { index: 2 })
        );
        assert_eq!(check_chain(mem, &queue, 0, true), Ok(()));
        // A direct chain, and a looping one (the walk stops at the queue size).
        store(&mock, 2, 0, 0);
        assert_eq!(check_chain(mem, &queue, 0, false), Ok(()));
        store(&mock, 2, NEXT, 0);
        assert_eq!(check_chain(mem, &queue, 0, false), Ok(()));
        assert_eq!(
            check_chain(mem, &queue, 16, true),
            Err(ChainRefusal::NoSuchHead { head: 16, size: 16 })
        );
    }

    #[test]
    fn a_budget_saturates() {
        let mut budget = RunBudget::new(3);
        budget.spend(2);
        assert!(!budget.is_spent());
        assert_eq!(budget.left(), 1);
        budget.spend(5);
        assert!(budget.is_spent());
    }
}
