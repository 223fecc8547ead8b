//! The fleet as the controller's records describe it, read by the scheduler, the RPO
//! evaluation, the alert rules and the operator calls alike.
//!
//! - [`view`]: the catalog state one evaluation reads, loaded once.
//! - [`compliance`]: every target's RPO state now.
//! - [`standing`]: how far each snapshot is trusted (verified, good, suspicious), from
//!   the controller's own records.
//! - [`drills`]: suspect snapshots and the measured RTO, from the drill history.

pub mod compliance;
pub mod drills;
pub mod standing;
pub mod view;
