//! Sampling runs: the common "payload writes one TSC sample per operation" shape
//! (chunked to the vCPU's sample buffer, count-checked), and the guest's timer cost.

use std::time::Instant;

use super::error::VmmError;
use super::layout;
use super::run::{Exit, Handled};
use super::vcpu::Vcpu;
use crate::payloads::args::{Args, TscOverhead};

/// What [`Vcpu::run_sampling_until`] collected.
#[derive(Clone, Debug)]
pub struct Sampled {
    /// Raw TSC cycles per sample (not divided by the batch size).
    pub cycles: Vec<u64>,
    /// Guest runs (each ends with one exit on the done port).
    pub chunks: u64,
    /// The wall-clock stop came before all requested samples.
    pub stopped_early: bool,
}

impl Vcpu {
    /// Runs a sampling payload (common register convention, see `payloads`) for `samples`
    /// samples of `batch` operations each, in chunks that fit the vCPU's sample buffer.
    /// `args` names the entry and sets its own registers; `handler` takes its exits.
    /// Returns the raw per-sample TSC differences (not divided by `batch`); fails unless
    /// the guest wrote exactly `samples` samples.
    pub fn run_sampling(
        &mut self,
        args: &dyn Args,
        samples: u64,
        batch: u64,
        deadline: Instant,
        handler: &mut dyn FnMut(Exit<'_>) -> Handled,
    ) -> Result<Vec<u64>, VmmError> {
        Ok(self.run_sampling_until(args, samples, batch, deadline, None, handler)?.cycles)
    }

    /// [`Vcpu::run_sampling`] that also stops (between chunks) once `stop_at` has passed,
    /// for budgets with a wall-clock duration. With `stop_at` the chunks are sized to take
    /// about 50 ms each, so the overshoot stays small.
    pub fn run_sampling_until(
        &mut self,
        args: &dyn Args,
        samples: u64,
        batch: u64,
        deadline: Instant,
        stop_at: Option<Instant>,
        handler: &mut dyn FnMut(Exit<'_>) -> Handled,
    ) -> Result<Sampled, VmmError> {
        let entry = args.entry();
        let rip = self.vm.entry(entry)?;
        let (buf, cap) = layout::samples(self.id);
        let mut out = Vec::with_capacity(samples.min(cap) as usize);
        let mut left = samples;
        let mut chunks = 0;
        let mut next = if stop_at.is_some() { cap.min(1000) } else { cap };
        while left > 0 {
            if stop_at.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            let n = left.min(next);
            self.vm.fill_u64s(buf, n as usize, u64::MAX)?;
            let id = self.id;
            self.set_entry(rip, |r| {
                r.rdi = buf;
                r.rsi = n;
                r.r8 = batch;
                r.r9 = layout::results(id);
                args.set(r);
            })?;
            let t0 = Instant::now();
            self.run(deadline, handler)?;
            let took = t0.elapsed();
            chunks += 1;
            let end = self.regs()?.rdi;
            if end != buf + 8 * n {
                return Err(self.fail(&format!(
                    "payload {entry} wrote {} samples, expected {n}",
                    end.wrapping_sub(buf) as i64 / 8
                )));
            }
            let chunk = self.vm.read_u64s(buf, n as usize)?;
            if let Some(i) = chunk.iter().position(|&c| c == u64::MAX) {
                return Err(self.fail(&format!("payload {entry} left sample {i} of {n} unwritten")));
            }
            out.extend_from_slice(&chunk);
            left -= n;
            if stop_at.is_some() {
                let per_sample = took.as_secs_f64() / n as f64;
                next = ((0.05 / per_sample.max(1e-9)) as u64).clamp(100, cap);
            }
        }
        Ok(Sampled { stopped_early: left > 0, cycles: out, chunks })
    }

    /// `run_sampling` for payloads without exits of their own.
    pub fn run_batched_payload(
        &mut self,
        args: &dyn Args,
        samples: u64,
        batch: u64,
        deadline: Instant,
    ) -> Result<Vec<u64>, VmmError> {
        self.run_sampling(args, samples, batch, deadline, &mut |_| Handled::No)
    }

    /// Median cost of a back-to-back `lfence; rdtsc` pair measured in this guest (the
    /// `overhead_cycles` of its per-op samples).
    /// Five runs of 1001 pairs; the lowest median wins (a run that shared its CPU with a
    /// host thread is slower throughout).
    pub fn timer_overhead(&mut self, deadline: Instant) -> Result<u64, VmmError> {
        let mut best = u64::MAX;
        for _ in 0..5 {
            let mut s = self.run_batched_payload(&TscOverhead {}, 1001, 1, deadline)?;
            s.sort_unstable();
            best = best.min(s[s.len() / 2]);
        }
        Ok(best)
    }
}
