//! Terminal output that never ends a measurement. `println!` panics when stdout is a
//! closed pipe (`ivbench sweep | head -2`); a measurement must not die of that, so every
//! line the harness prints goes through here: a failed write is remembered, not raised,
//! and the run records in its manifest that part of its output was lost.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_LOST: AtomicBool = AtomicBool::new(false);
static STDERR_LOST: AtomicBool = AtomicBool::new(false);

fn write_to(w: &mut dyn Write, lost: &AtomicBool, args: fmt::Arguments<'_>, newline: bool) {
    if lost.load(Ordering::Relaxed) {
        return;
    }
    let r = w.write_fmt(args).and_then(|_| if newline { w.write_all(b"\n") } else { Ok(()) }).and_then(|_| w.flush());
    if r.is_err() {
        lost.store(true, Ordering::Relaxed);
    }
}

pub fn stdout(args: fmt::Arguments<'_>, newline: bool) {
    write_to(&mut io::stdout().lock(), &STDOUT_LOST, args, newline);
}

pub fn stderr(args: fmt::Arguments<'_>, newline: bool) {
    write_to(&mut io::stderr().lock(), &STDERR_LOST, args, newline);
}

/// Which of the two streams could not be written, as a sentence for the manifest.
pub fn lost() -> Option<String> {
    match (STDOUT_LOST.load(Ordering::Relaxed), STDERR_LOST.load(Ordering::Relaxed)) {
        (false, false) => None,
        (true, false) => Some("stdout was closed or failed; terminal output was dropped, the store is complete".into()),
        (false, true) => Some("stderr was closed or failed; progress output was dropped, the store is complete".into()),
        (true, true) => {
            Some("stdout and stderr were closed or failed; terminal output was dropped, the store is complete".into())
        }
    }
}

/// `println!` that cannot panic.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::stdout(format_args!(""), true) };
    ($($t:tt)*) => { $crate::out::stdout(format_args!($($t)*), true) };
}

/// `print!` that cannot panic.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::out::stdout(format_args!($($t)*), false) };
}

/// `eprintln!` that cannot panic.
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::out::stderr(format_args!($($t)*), true) };
}
