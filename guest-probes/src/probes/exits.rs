//! Exits: `vm.exit.pio`, `vm.exit.pio-kernel`, `vm.exit.mmio`, `vm.exit.cpuid`.

use crate::payloads::args::{Cpuid, MmioWrite, PioOut};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, IoEventAddress, NoDatamatch};
use probe_api::{Budget, Methods, Metric, Point, ProbeError, Samples, Support};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{batch_of, in_vm, invalid, no_points, vm_support, VmProbe};
use crate::vmm::{self, layout, Exit, Handled};

/// Port nobody claims: every `out` is a KVM_EXIT_IO to the VMM.
pub const PORT_USER: u16 = 0x10;
/// Port with an ioeventfd: the `out` completes inside KVM.
pub const PORT_IOEVENTFD: u16 = 0x61;
/// CPUID leaf timed by `vm.exit.cpuid` (KVM's signature leaf).
pub const CPUID_LEAF: u32 = 0x4000_0000;

pub(crate) const PIO: VmProbe = VmProbe {
    name: "vm.exit.pio",
    description: "guest `out` to an unclaimed port: KVM_EXIT_IO to the userspace VMM and back",
    group: "exit",
    methods: Methods::Both,
    support: vm_support,
    points: no_points,
    run: run_pio,
    extra_keys: &[],
};

pub(crate) const PIO_KERNEL: VmProbe = VmProbe {
    name: "vm.exit.pio-kernel",
    description:
        "guest `out` to a port with an ioeventfd (KVM_IOEVENTFD, PIO): completed in the kernel, no userspace exit",
    group: "exit",
    methods: Methods::Both,
    support: pio_kernel_support,
    points: no_points,
    run: run_pio_kernel,
    extra_keys: &[],
};

pub(crate) const MMIO: VmProbe = VmProbe {
    name: "vm.exit.mmio",
    description: "guest 4-byte store to an unbacked GPA: KVM_EXIT_MMIO to the userspace VMM and back",
    group: "exit",
    methods: Methods::Both,
    support: vm_support,
    points: no_points,
    run: run_mmio,
    extra_keys: &[],
};

pub(crate) const CPUID: VmProbe = VmProbe {
    name: "vm.exit.cpuid",
    description: "guest CPUID leaf 0x40000000: trapped and answered by KVM from the VMM's CPUID table",
    group: "exit",
    methods: Methods::Both,
    support: vm_support,
    points: no_points,
    run: run_cpuid,
    extra_keys: &[],
};

fn run_pio(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let batch = batch_of(budget);
    in_vm(
        p.name,
        budget,
        |_| Ok(()),
        move |ctx| {
            ctx.vcpu.stats.reset();
            let got = ctx.sample(&PioOut { port: u64::from(PORT_USER) }, batch, &mut |e| match e {
                Exit::IoOut { port: PORT_USER, .. } => Handled::Continue,
                _ => Handled::No,
            })?;
            let (n, raw) = (got.cycles.len() as u64, got.cycles);
            let exits = ctx.vcpu.stats.io_out_on(PORT_USER);
            if exits != n * batch {
                return Err(invalid(
                    p.name,
                    format!("{exits} KVM_EXIT_IO on port {PORT_USER:#x}, expected {}", n * batch),
                ));
            }
            let mut s = ctx.samples(raw, batch, budget.method);
            s.metrics.push(Metric::new("userspace_exits", exits as f64, "exits"));
            Ok(s)
        },
    )
}

fn pio_kernel_support() -> Support {
    match vm_support() {
        Support::Supported => {}
        u => return u,
    }
    match vmm::host().kvm() {
        Ok(k) if k.check_extension(Cap::Ioeventfd) => Support::Supported,
        Ok(_) => Support::Unsupported("KVM lacks KVM_CAP_IOEVENTFD".into()),
        Err(e) => Support::Unsupported(e.to_string()),
    }
}

fn run_pio_kernel(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    if let Support::Unsupported(r) = pio_kernel_support() {
        return Err(ProbeError::Unsupported(r));
    }
    let batch = batch_of(budget);
    let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| ProbeError::io(format!("{}: eventfd", p.name), e))?;
    let evt_ref = &evt;
    in_vm(
        p.name,
        budget,
        move |vm| {
            vm.fd().register_ioevent(evt_ref, &IoEventAddress::Pio(u64::from(PORT_IOEVENTFD)), NoDatamatch).map_err(
                |e| ProbeError::Unsupported(format!("KVM_IOEVENTFD (PIO port {PORT_IOEVENTFD:#x}) refused: {e}")),
            )
        },
        move |ctx| {
            ctx.vcpu.stats.reset();
            let got = ctx.sample(
                &PioOut { port: u64::from(PORT_IOEVENTFD) },
                batch,
                &mut |_| Handled::No, // any exit besides "done" means the ioeventfd did not take it
            )?;
            let (n, raw) = (got.cycles.len() as u64, got.cycles);
            let user_exits = ctx.vcpu.stats.io_out_on(PORT_IOEVENTFD);
            if user_exits != 0 {
                return Err(invalid(p.name, format!("{user_exits} userspace exits on the ioeventfd port")));
            }
            let count = evt_ref.read().map_err(|e| ProbeError::io(format!("{}: read the eventfd", p.name), e))?;
            if count != n * batch {
                return Err(invalid(p.name, format!("eventfd count rose by {count}, expected {}", n * batch)));
            }
            let mut s = ctx.samples(raw, batch, budget.method);
            s.metrics.push(Metric::new("eventfd_count", count as f64, "signals"));
            s.metrics.push(Metric::new("userspace_exits", user_exits as f64, "exits"));
            s.notes
                .push(format!("ioeventfd on PIO port {PORT_IOEVENTFD:#x}: eventfd rose by {count}, 0 userspace exits"));
            Ok(s)
        },
    )
}

fn run_mmio(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let batch = batch_of(budget);
    in_vm(
        p.name,
        budget,
        |_| Ok(()),
        move |ctx| {
            ctx.vcpu.stats.reset();
            let got = ctx.sample(&MmioWrite { gpa: layout::MMIO_GPA }, batch, &mut |e| match e {
                Exit::MmioWrite { addr: layout::MMIO_GPA, data } if data == [1, 0, 0, 0] => Handled::Continue,
                _ => Handled::No,
            })?;
            let (n, raw) = (got.cycles.len() as u64, got.cycles);
            let exits = ctx.vcpu.stats.mmio_write;
            if exits != n * batch {
                return Err(invalid(p.name, format!("{exits} KVM_EXIT_MMIO writes, expected {}", n * batch)));
            }
            let mut s = ctx.samples(raw, batch, budget.method);
            s.metrics.push(Metric::new("userspace_exits", exits as f64, "exits"));
            Ok(s)
        },
    )
}

fn run_cpuid(p: &VmProbe, _point: &Point, budget: &Budget) -> Result<Samples, ProbeError> {
    let batch = batch_of(budget);
    let table = vmm::host()
        .kvm()?
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| ProbeError::Failed(format!("{}: KVM_GET_SUPPORTED_CPUID: {e}", p.name)))?;
    let want = table.as_slice().iter().find(|e| e.function == CPUID_LEAF).map(|e| (e.ebx, e.ecx, e.edx));
    in_vm(
        p.name,
        budget,
        |_| Ok(()),
        move |ctx| {
            let res = layout::results(ctx.vcpu.id());
            ctx.vm.fill_u64s(res, 2, 0)?;
            ctx.vcpu.stats.reset();
            let got = ctx.sample(&Cpuid { leaf: u64::from(CPUID_LEAF) }, batch, &mut |_| Handled::No)?;
            let (chunks, raw) = (got.chunks, got.cycles);
            let mut w = [0u8; 16];
            ctx.vm.read_bytes(res, &mut w)?;
            let reg = |i: usize| u32::from_le_bytes(w[i * 4..i * 4 + 4].try_into().unwrap());
            let got = (reg(1), reg(2), reg(3));
            let sig: String = w[4..16].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
            match want {
                Some(want) if want != got => {
                    return Err(invalid(
                        p.name,
                        format!("cpuid {CPUID_LEAF:#x} gave ebx/ecx/edx {got:x?}, the CPUID table says {want:x?}"),
                    ));
                }
                None if got == (0, 0, 0) => return Err(invalid(p.name, "cpuid returned zeros")),
                _ => {}
            }
            if ctx.vcpu.stats.userspace_exits() != chunks {
                return Err(invalid(p.name, format!("CPUID left to the VMM: exits {:?}", ctx.vcpu.stats)));
            }
            let mut s = ctx.samples(raw, batch, budget.method);
            s.notes.push(format!("cpuid {CPUID_LEAF:#x} signature \"{sig}\" matches the CPUID table"));
            Ok(s)
        },
    )
}
