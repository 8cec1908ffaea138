//! The legacy devices on the port-I/O bus: COM1 (ballast's stdin and stdout), the i8042 (for the
//! guest's `reboot=k`) and the ACPI power-management register; and the eventfds they turn the
//! guest's power-off and reset into.

use std::sync::{Arc, Mutex};

use ballast_devices::bus::Bus;
use ballast_devices::legacy::acpi_pm::{AcpiPmDevice, ACPI_PM_PORT_LEN};
use ballast_devices::legacy::console::ConsoleOut;
use ballast_devices::legacy::i8042::{I8042, I8042_PORT_RANGE};
use ballast_devices::legacy::serial::{SerialDevice, SERIAL_PORT_RANGE};
use ballast_devices::legacy::EventFdTrigger;
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;

use super::{eventfd, io, RunError, Subscriber};
use crate::console::ConsoleInput;
use crate::layout::{ACPI_PM_PORT, COM1_PORT, I8042_PORT, SERIAL_IRQ};
use crate::seccomp::{self, ThreadKind};
use crate::vstate::exit::ExitState;
use crate::vstate::vm::Vm;

pub(super) struct Legacy {
    pub pio: Bus,
    /// Feeds ballast's stdin to COM1, on the event loop (`console.rs`).
    pub serial_input: Subscriber,
    pub poweroff: EventFd,
    /// The ACPI reset register's and the i8042's.
    pub resets: Vec<EventFd>,
}

pub(super) fn legacy_devices(vm: &Vm, exit: &Arc<ExitState>) -> Result<Legacy, RunError> {
    let mut pio = Bus::new();
    let serial_irq = eventfd()?;
    vm.fd()
        .register_irqfd(&serial_irq, SERIAL_IRQ)
        .map_err(|source| RunError::Irq {
            what: "the serial port",
            source,
        })?;
    // The guest's console goes to stdout through a thread of its own: a stdout that blocks
    // stalls neither a vCPU nor the serial port's lock.
    let setup = Box::new(|| seccomp::apply(ThreadKind::Console).map_err(|e| e.to_string()));
    let console = ConsoleOut::start(Box::new(std::io::stdout()), Some(setup))
        .map_err(io("start the console thread"))?;
    let serial_drained = eventfd()?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        EventFdTrigger(serial_irq),
        clone(&serial_drained)?,
        Box::new(console),
    )));
    pio.insert(serial.clone(), COM1_PORT, SERIAL_PORT_RANGE)?;
    let i8042_reset = eventfd()?;
    let i8042 = I8042(I8042Device::new(EventFdTrigger(clone(&i8042_reset)?)));
    pio.insert(Arc::new(Mutex::new(i8042)), I8042_PORT, I8042_PORT_RANGE)?;
    let (poweroff, pm_reset) = (eventfd()?, eventfd()?);
    let pm = AcpiPmDevice::new(clone(&poweroff)?, clone(&pm_reset)?);
    pio.insert(Arc::new(Mutex::new(pm)), ACPI_PM_PORT, ACPI_PM_PORT_LEN)?;
    Ok(Legacy {
        pio,
        serial_input: Arc::new(Mutex::new(ConsoleInput::new(
            serial,
            serial_drained,
            exit.clone(),
        ))),
        poweroff,
        resets: vec![pm_reset, i8042_reset],
    })
}

fn clone(event: &EventFd) -> Result<EventFd, RunError> {
    event.try_clone().map_err(io("clone an eventfd"))
}
