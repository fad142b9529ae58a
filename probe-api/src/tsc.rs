//! Timestamp primitives shared by every host-side measurement.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{_mm_lfence, _rdtsc};

/// `lfence; rdtsc`: the serialized read used around every per-op measurement. The
/// leading lfence keeps earlier loads from drifting past the timestamp.
#[inline(always)]
pub fn rdtsc_serialized() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: lfence and rdtsc exist on every x86-64 CPU and touch no memory.
    unsafe {
        _mm_lfence();
        _rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    compile_error!("ivbench measures x86-64 only")
}

/// Plain `rdtsc`, unserialized: only for the timer-overhead probe.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc exists on every x86-64 CPU and touches no memory.
    unsafe { _rdtsc() }
}

/// `rdtscp`: waits for earlier instructions, returns the TSC_AUX (CPU id) too.
#[inline(always)]
pub fn rdtscp() -> (u64, u32) {
    let mut aux = 0u32;
    // SAFETY: rdtscp writes only `aux`, a live u32 (callers check the CPU has RDTSCP).
    let t = unsafe { std::arch::x86_64::__rdtscp(&mut aux) };
    (t, aux)
}

/// Cost of one back-to-back `lfence; rdtsc` pair on this thread, the figure subtracted
/// from every host per-op sample. The median of `rounds` pairs, so that an interrupt
/// landing between two reads does not inflate it.
pub fn serialized_pair_overhead(rounds: usize) -> u64 {
    let rounds = rounds.max(16);
    let mut v = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let a = rdtsc_serialized();
        let b = rdtsc_serialized();
        v.push(b.wrapping_sub(a));
    }
    v.sort_unstable();
    v[v.len() / 2]
}
