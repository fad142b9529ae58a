//! The packet ring of the path.* probes, defined once: the shared region's layout
//! ([`layout`], plain constants the guest code can take too), the Ethernet test frames
//! ([`frame`]), the single-producer/single-consumer descriptor ring ([`ring`]), and the
//! open-loop generator and verifying sink that run at its two ends ([`traffic`]).
//!
//! No clocks and no threads here: callers pass TSC readings in and run the ends where
//! they like (two pinned host threads for `path.host-ring`, two VMs for `path.a`).

pub mod frame;
pub mod layout;
pub mod region;
pub mod ring;
pub mod traffic;

pub use frame::{FrameSize, Templates};
pub use layout::Layout;
pub use region::Region;
pub use ring::{Consumer, Producer, RingError, RingView};
pub use traffic::{counters, imbalance, sampled, CopyMode, GenStats, Generator, Rate, Sink, SinkStats};
