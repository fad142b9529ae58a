//! A micro-VMM on the rust-vmm crates (kvm-ioctls, kvm-bindings, vm-memory).
//!
//! # Layers
//!
//! Each uses only those above it (no cycles):
//!
//! - `crate::abi`: the guest ABI (memory map, ports, status words, line offsets), one
//!   table that yields Rust constants and the payloads' `.set` symbols; [`layout`] adds the
//!   per-vCPU / per-region arithmetic for N vCPUs and M shared regions, checked at compile
//!   time.
//! - [`backend`] (a leaf: native-mode set-up, hypercall instruction, VMFUNC support) and
//!   [`host`] ([`KvmHost`]: the one place that opens `/dev/kvm` and answers which backend,
//!   API version, capabilities, TSC rate; the harness fingerprint asks it too);
//!   [`views`]: the kvm-patch's VMFUNC views API (its uapi mirrored in one place).
//! - `crate::payloads`: the guest image (payloads patched for the backend), typed entry
//!   constants (`payloads::entry`) and typed arguments (`payloads::args`).
//! - [`vm`], [`vcpu`], [`run`], [`sampling`], [`shared`] (set-up values from the pure
//!   functions of [`arch`]): VMs, vCPUs, the run loop, sampling runs, memfd regions.
//! - helpers: [`irqchip`], [`kvmstats`], [`native`] (the native-execution check).
//! - `crate::worker`: one VM per process, supervised by the parent.
//! - `crate::probes`: the `vm.*` rows.
//!
//! Errors are [`VmmError`]s (the failing ioctl, guest memory address, guest exit with RIP
//! and last exit, watchdog timeout, worker death or hang), converted into
//! `probe_api::ProbeError` by `?` at the probe boundary.
//!
//! # Shape
//!
//! - [`Vm`]: one KVM VM. `Vm::new(label)` (two vCPUs) or `Vm::with_layout(label,
//!   GuestLayout)` creates it with slot 0 of `layout.mem_size()` bytes of anonymous memory
//!   at GPA 0, identity page tables for the first GiB ([`arch::identity_page_tables`]) and
//!   the guest image at [`layout::IMAGE`]. `label` is the probe name: every error the VM or
//!   its vCPUs produce names it. `Vm` is a cheap shared handle (`Clone`, `Send + Sync`).
//! - [`Vcpu`]: `vm.create_vcpu(id)` returns a vCPU in native 64-bit CPL0 (CPUID table with
//!   APIC id = `id`, long-mode sregs, STAR / SFMASK: [`arch`]; and the backend's
//!   `prepare_vcpu`: on kvm_pvm its own VIF page at [`layout::vif_page`]). A `Vcpu` is
//!   `Send`: create it on any thread, move it to the thread that runs it.
//! - [`Vcpu::run`]: the run loop. Every call arms the [`watchdog`] for the calling thread
//!   with a deadline; exits go to a `FnMut(Exit) -> Handled` closure; the done port,
//!   fatal exits and timeouts are handled in one place. [`Vcpu::run_sampling`] wraps it
//!   for the common "payload writes one TSC sample per operation" shape (chunked,
//!   count-checked); [`Vcpu::run_sampling_until`] also stops at a wall-clock budget.
//!   `vcpu.stats` counts exits by kind (and port) for validations.
//!
//! # Adding interrupt / IPI / notify probes (multi-vCPU, irqchip, shared memory)
//!
//! Everything needed is additive; nothing in the existing run loop has to change:
//!
//! 1. **In-kernel irqchip**: call `vm.fd().create_irq_chip()` (or `enable_cap` with
//!    KVM_CAP_SPLIT_IRQCHIP) right after `Vm::new` and *before* `create_vcpu`. MSI routing
//!    and irqfds are plain `VmFd` calls too: `vm.fd().set_gsi_routing(..)`,
//!    `vm.fd().register_irqfd(&eventfd, gsi)`, `vm.fd().signal_msi(..)`, ioeventfds with
//!    `vm.fd().register_ioevent(..)` (see `probes::exits` for one).
//! 2. **GDT / IDT**: kvm_pvm delivers interrupts through the guest IDT only when a GDT is
//!    set too. Write the descriptors at [`layout::GDT`] / [`layout::IDT`] with
//!    `vm.write_bytes` / `vm.write_u64`, then per vCPU `let mut s = vcpu.fd().get_sregs()`,
//!    set `s.gdt` / `s.idt` (base + limit) and `vcpu.fd().set_sregs(&s)`. Handlers are
//!    payload entries (`vm.entry(payloads::entry::IRQ_HANDLER)` gives their GPA). `Exit::IrqWindowOpen` and
//!    `Exit::Hlt` already reach the handler closure (return `Handled::Continue` to keep
//!    running); KVM_EXIT_INTR / EINTR are absorbed and counted in `stats.intr`.
//! 3. **LAPIC**: `vcpu.fd().get_lapic()` / `set_lapic()` (SVR 0x1ff), x2APIC through
//!    `vcpu.set_msrs(&[(0x1b, base)])`; GiB 3 of the identity map already has a page
//!    directory ([`layout::PD3`]) for an uncached xAPIC page at 0xfee00000 (add the PDE).
//!    Secondary vCPUs on the in-kernel irqchip need `vcpu.fd().set_mp_state(RUNNABLE)`.
//! 4. **A second vCPU thread**: `let v1 = vm.create_vcpu(1)?;` then move `v1` into a
//!    `std::thread::scope` thread, pin it (`crate::worker::pin_current_thread`), set its
//!    entry with `v1.enter(&payloads::args::PollPong { .. })` (its stack, results and sample
//!    buffer are [`layout::stack_top`], [`layout::results`], [`layout::samples`] for its
//!    id) and call `v1.run(deadline, &mut handler)` there. Each thread arms its own
//!    watchdog, so a hung peer is stopped too. To stop a vCPU that spins on purpose, have
//!    it poll a flag in guest memory that the host sets with `vm.write_u64`.
//! 5. **Several VMs sharing memory**: `let shm = SharedMemory::new(2 << 20)?;` (a memfd,
//!    mapped once, MAP_SHARED; `SharedMemory::with_backing(.., Backing::Huge2M)` for 2 MiB
//!    hugepages) and `vm_a.add_shared(1, layout::shared_gpa(0), &shm)?;
//!    vm_b.add_shared(1, layout::shared_gpa(0), &shm)?;` — both VMs and the host see the
//!    same bytes; the identity map already covers the shared regions. For VMs in separate
//!    processes use `crate::worker::Group`, which passes the memfds to the workers.
//! 6. **Memory views**: `vm.add_private_slot(slot, gpa, size)` +
//!    `vm.set_slot_mapped(slot, bool)` (used by `vm.view.hypercall`).
//!
//! The payload register convention and the sample-loop macros are documented in
//! `crate::payloads`.

// Layers, each using only those before it: abi (crate::abi, layout) -> backend (host,
// views: the kvm-patch's VMFUNC views API)
// -> image (crate::payloads) -> vm / vcpu / run / sampling -> helpers (irqchip,
// kvmstats, native) -> worker -> probes.
pub mod arch;
pub mod backend;
pub mod error;
pub mod host;
pub mod irqchip;
pub mod kvmstats;
pub mod layout;
pub mod native;
pub mod run;
pub mod sampling;
pub mod shared;
pub mod vcpu;
pub mod views;
pub mod vm;
pub mod watchdog;

pub use backend::{Backend, BackendKind};
pub use error::{GuestState, VmmError};
pub use host::{host, KvmHost};
pub use native::NativeCheck;
pub use run::{Exit, ExitStats, Handled};
pub use sampling::{SampleStop, Sampled};
pub use shared::{Backing, SharedMemory};
pub use vcpu::Vcpu;
pub use vm::Vm;
