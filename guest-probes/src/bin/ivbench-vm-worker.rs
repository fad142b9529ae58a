//! A VM worker process (see `guest_probes::worker`): `ivbench-vm-worker __ivbench-vm-worker
//! <name>` with its control socket on fd 3. `ivbench` itself serves the same role; this
//! small binary lets the crate's own tests start workers without the harness.

fn main() {
    guest_probes::worker::serve_if_worker();
    eprintln!(
        "ivbench-vm-worker: started without `{}`; it is started by ivbench, not by hand",
        guest_probes::worker::WORKER_ARG
    );
    std::process::exit(2);
}
