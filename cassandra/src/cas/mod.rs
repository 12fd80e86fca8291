//! Compare-and-set decisions, kept above the driver so they are tested without a cluster.
//!
//! Many API nodes write one key at once. Operation numbers, operation rows and the key's
//! active pointer move only by conditional writes (`INSERT ... IF NOT EXISTS`,
//! `UPDATE ... IF col = ?`); this module decides what a writer does when its write did
//! not apply: re-read and retry (bounded by [`Attempts`]), or settle on the outcome
//! someone else made.
//!
//! - [`NumberClaim`]: a start claims the next operation number of its key.
//! - [`pointer`]: the key's active pointer and its activation sequence. A finish moves
//!   the pointer only from an older run to a newer one ([`pointer_step`],
//!   [`settle_pointer`]); a rollback or roll forward moves it to any FINISHED run that
//!   is not collected ([`activate`]). Every move numbers the run it activates (the
//!   previous run's number plus one, taken from the pointer as the move found it) and
//!   records it in the key's history.
//! - [`update`]: changes of one operation row alone (forced expiry, garbage
//!   collection), which are atomic against activations because activations write the
//!   same row first.

use annostore_core::store::{StoreError, StoreResult};

pub mod pointer;
pub mod update;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests_activate;
#[cfg(test)]
mod tests_settle;

pub use pointer::{
    OpCell, Pointer, PointerAt, PointerCell, PointerStep, Settled, Why, activate, deactivated,
    numbered, pointer_step, record, settle_pointer, superseded,
};
pub use update::update_op;

/// Conditional writes tried before giving up on a contended row.
pub const MAX_ATTEMPTS: u32 = 64;

/// A bounded retry budget for one contended row.
#[derive(Debug)]
pub struct Attempts {
    what: &'static str,
    done: u32,
    max: u32,
}

impl Attempts {
    pub fn new(what: &'static str) -> Attempts {
        Attempts::with_max(what, MAX_ATTEMPTS)
    }

    pub fn with_max(what: &'static str, max: u32) -> Attempts {
        Attempts { what, done: 0, max }
    }

    /// Takes one attempt; fails once the budget is spent (the row stayed contended).
    pub fn take(&mut self) -> StoreResult<()> {
        if self.done >= self.max {
            return Err(StoreError::Io(format!(
                "{}: gave up after {} conflicting conditional writes",
                self.what, self.done
            )));
        }
        self.done += 1;
        Ok(())
    }
}

/// How a start claims the next operation number of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberClaim {
    /// The key has no state row: `INSERT ... (last_number = 1) IF NOT EXISTS`.
    First,
    /// `UPDATE ... SET last_number = next IF last_number = expect`.
    Advance { expect: u64, next: u64 },
}

impl NumberClaim {
    /// The claim to try, given the key's last number as just read. When it does not
    /// apply, another start took the number: re-read and claim again.
    pub fn after(last: Option<u64>) -> NumberClaim {
        match last {
            None => NumberClaim::First,
            Some(n) => NumberClaim::Advance {
                expect: n,
                next: n + 1,
            },
        }
    }

    pub fn number(self) -> u64 {
        match self {
            NumberClaim::First => 1,
            NumberClaim::Advance { next, .. } => next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_claims() {
        assert_eq!(NumberClaim::after(None), NumberClaim::First);
        assert_eq!(NumberClaim::after(None).number(), 1);
        let c = NumberClaim::after(Some(4));
        assert_eq!(c, NumberClaim::Advance { expect: 4, next: 5 });
        assert_eq!(c.number(), 5);
    }

    #[test]
    fn attempts_are_bounded() {
        let mut a = Attempts::with_max("x", 2);
        assert!(a.take().is_ok());
        assert!(a.take().is_ok());
        assert!(matches!(a.take(), Err(StoreError::Io(m)) if m.contains("gave up after 2")));
    }
}
