//! The CPUID a vCPU sees: what KVM supports, with each vCPU's APIC ID and the topology filled
//! in, the hypervisor bit set, and the TSC-deadline timer where the in-kernel local APIC has it.

use kvm_bindings::CpuId;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;

/// CPUID.1:ECX bit 31, "running under a hypervisor".
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28, "max APIC IDs field is valid".
const EDX_HTT: u32 = 1 << 28;
/// CPUID.1:ECX bit 24, the local APIC's TSC-deadline mode. KVM emulates it in its in-kernel
/// local APIC but leaves it out of the supported CPUID (it is not a host CPU feature), so a VMM
/// sets it, as Firecracker and Cloud Hypervisor do; without it Linux programs the APIC timer
/// in one-shot mode instead.
const ECX_TSC_DEADLINE: u32 = 1 << 24;

/// What the vCPU gets beyond KVM's supported CPUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidOptions {
    /// The in-kernel local APIC has the TSC-deadline timer (`KVM_CAP_TSC_DEADLINE_TIMER`).
    pub tsc_deadline: bool,
}

/// Patches KVM's supported CPUID for vCPU `apic_id` of `num_vcpus` (one core per vCPU).
pub fn patch_cpuid(cpuid: &mut CpuId, apic_id: u8, num_vcpus: u8, options: CpuidOptions) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
                entry.ebx = (entry.ebx & 0x0000_ffff)
                    | (u32::from(apic_id) << 24)
                    | (u32::from(num_vcpus) << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if options.tsc_deadline {
                    entry.ecx |= ECX_TSC_DEADLINE;
                } else {
                    entry.ecx &= !ECX_TSC_DEADLINE;
                }
                if num_vcpus > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
                // EDX holds the x2APIC ID on every sub-leaf.
                entry.edx = u32::from(apic_id);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn apic_id_and_hypervisor_bit() {
        let mut cpuid = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xffff_1234,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                edx: 7,
                ..Default::default()
            },
        ])
        .unwrap();
        patch_cpuid(&mut cpuid, 3, 4, CpuidOptions { tsc_deadline: true });
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx, 0x0304_1234);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[1].edx, 3);
    }

    #[test]
    fn no_tsc_deadline_without_the_capability() {
        let mut cpuid = CpuId::from_entries(&[kvm_cpuid_entry2 {
            function: 1,
            ecx: ECX_TSC_DEADLINE,
            ..Default::default()
        }])
        .unwrap();
        patch_cpuid(
            &mut cpuid,
            0,
            1,
            CpuidOptions {
                tsc_deadline: false,
            },
        );
        assert_eq!(cpuid.as_slice()[0].ecx & ECX_TSC_DEADLINE, 0);
    }
}
