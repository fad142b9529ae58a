//! Sampling runs: the common "payload writes one TSC sample per operation" shape
//! (chunked to the vCPU's sample buffer, count-checked), and the guest's timer cost.

use std::time::Instant;

use probe_api::{Stop, StopFlag};

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
    /// The run was interrupted or reached its timeout between two chunks: `cycles` holds
    /// every sample of the chunks that finished, and nothing of one that did not.
    pub stopped: Option<Stop>,
}

/// When a sampling run stops before it has every sample. With none of these set the run
/// goes in chunks of the whole sample buffer; with any, in chunks of about 50 ms, so that
/// a stop is seen soon and the samples already taken are kept.
#[derive(Clone, Debug, Default)]
pub struct SampleStop {
    /// A budget's wall-clock duration ends here (a normal end, not a partial one).
    pub at: Option<Instant>,
    /// The point's timeout: stop between chunks, keep the samples, mark them partial. The
    /// watchdog's hard deadline lies beyond it, for a chunk that never ends.
    pub timeout_at: Option<(Instant, std::time::Duration)>,
    /// Raised on Ctrl-C, SIGTERM or SIGHUP.
    pub flag: Option<StopFlag>,
}

impl SampleStop {
    fn any(&self) -> bool {
        self.at.is_some() || self.timeout_at.is_some() || self.flag.is_some()
    }
    fn partial(&self, now: Instant) -> Option<Stop> {
        if self.flag.as_ref().is_some_and(StopFlag::is_requested) {
            return Some(Stop::Interrupted);
        }
        match self.timeout_at {
            Some((t, d)) if now >= t => Some(Stop::TimedOut(d)),
            _ => None,
        }
    }
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
        Ok(self.run_sampling_until(args, samples, batch, deadline, &SampleStop::default(), handler)?.cycles)
    }

    /// [`Vcpu::run_sampling`] that also stops between chunks when `stop` says so: at a
    /// budget's wall-clock duration, at the point's timeout, or on an interrupt. With any
    /// of those the chunks are sized to take about 50 ms each (down to one sample), so the
    /// overshoot stays small and what was measured is kept.
    pub fn run_sampling_until(
        &mut self,
        args: &dyn Args,
        samples: u64,
        batch: u64,
        deadline: Instant,
        stop: &SampleStop,
        handler: &mut dyn FnMut(Exit<'_>) -> Handled,
    ) -> Result<Sampled, VmmError> {
        let entry = args.entry();
        let rip = self.vm.entry(entry)?;
        let (buf, cap) = layout::samples(self.id);
        let mut out = Vec::with_capacity(samples.min(cap) as usize);
        let mut left = samples;
        let mut chunks = 0;
        let adaptive = stop.any();
        // A first chunk short enough for a huge batch, long enough to time the rest by.
        let mut next = if adaptive { cap.min(1000).min((1_000_000 / batch.max(1)).max(1)) } else { cap };
        let mut stopped = None;
        while left > 0 {
            let now = Instant::now();
            if stop.at.is_some_and(|t| now >= t) {
                break;
            }
            if let Some(s) = stop.partial(now) {
                stopped = Some(s);
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
            if adaptive {
                let per_sample = took.as_secs_f64() / n as f64;
                next = ((0.05 / per_sample.max(1e-9)) as u64).clamp(1, cap);
            }
        }
        Ok(Sampled { stopped_early: left > 0 && stopped.is_none(), cycles: out, chunks, stopped })
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
