//! Palaver load-testing toolkit.
//!
//! * `ceiling` (bin): the thinnest broadcast server on the same transport crates as
//!   Palaver, used as a yardstick.
//! * `loadgen` (bin): drives any server over real sockets using only the wire protocol
//!   (`/work/shared/wire`), one JSON result line per scenario.
//! * `report` (bin): the target table and an offline HTML page of charts from result lines.
//!
//! The library holds the load generator's pieces so the binaries stay small.

pub mod cli;
pub mod clock;
pub mod frame;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod setup;
pub mod stats;
pub mod target;
pub mod ws;
