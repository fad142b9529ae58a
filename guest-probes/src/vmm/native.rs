//! The native check: runs the `native_loop` payload and refuses a guest that is being
//! emulated (on kvm_pvm, a vCPU without its VIF page runs ~8000 cycles per instruction).

use std::time::Instant;

use super::error::VmmError;
use super::vcpu::Vcpu;
use crate::payloads::args::NativeLoop;

/// The result of [`verify`].
#[derive(Clone, Debug)]
pub struct NativeCheck {
    /// Best (lowest) TSC cycles per `dec; jnz` iteration over a few short runs.
    pub cycles_per_iter: f64,
    pub iterations: u64,
}

/// Above this many cycles per `dec; jnz` iteration the guest is not running natively.
pub const MAX_NATIVE_CYCLES_PER_ITER: f64 = 10.0;
/// `dec; jnz` iterations per try.
pub const ITERATIONS: u64 = 20_000;

/// Runs the native-loop payload on `vcpu` and fails when the guest is emulated.
pub fn verify(vcpu: &mut Vcpu, deadline: Instant) -> Result<NativeCheck, VmmError> {
    // 20k iterations per sample: ~20k cycles natively, ~300M cycles when every
    // instruction is emulated (still well inside any timeout).
    const TRIES: u64 = 5;
    // Up to TRIES tries: a try that shared its CPU with a host thread can be slow, an
    // emulated guest is slow every time.
    let mut best = u64::MAX;
    for _ in 0..TRIES {
        let s = vcpu.run_batched_payload(&NativeLoop {}, 1, ITERATIONS, deadline)?;
        best = best.min(s[0]);
        if best as f64 / ITERATIONS as f64 <= MAX_NATIVE_CYCLES_PER_ITER {
            break;
        }
    }
    let cpi = best as f64 / ITERATIONS as f64;
    if cpi.is_nan() || cpi > MAX_NATIVE_CYCLES_PER_ITER {
        return Err(VmmError::setup(
            vcpu.label(),
            format!(
                "guest is being emulated ({cpi:.1} cycles/iteration of dec;jnz, limit {MAX_NATIVE_CYCLES_PER_ITER}): \
                 refusing VM latencies (backend {}; on kvm_pvm each vCPU needs its VIF page MSR 0x4b564d10)",
                vcpu.backend().name()
            ),
        ));
    }
    Ok(NativeCheck { cycles_per_iter: cpi, iterations: ITERATIONS })
}
