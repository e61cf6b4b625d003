//! MAAS machine lifecycle over time.

use crate::clock::SimTime;
use crate::error::Result;
use crate::state::Shared;

/// Advance deployments and releases.
pub fn tick(_shared: &Shared, _now: SimTime) {}

/// Mark a machine Broken now.
pub fn break_machine(_shared: &Shared, _machine: &str) -> Result<()> {
    Ok(())
}
