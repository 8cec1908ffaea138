//! The memory limit: one validation for `--limit` and `PUT /vm/memory/limit`, in guest pages.
//! Each edge converts its unit (bytes on the command line, MiB in the API) with
//! [`crate::pages`] and words the error with its own option or field name.

use crate::pages::{self, PAGES_PER_MIB};

/// The smallest limit: 1 MiB (a guest needs far more, but anything smaller is a typo).
pub const MIN_LIMIT_PAGES: u64 = PAGES_PER_MIB;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "a memory limit must be more than 0 (at least 1 MiB); to have none, remove the limit \
         (`ballast limit clear`, `null` over the API)"
    )]
    TooSmall,
    #[error(
        "a memory limit of {limit_mib} MiB is more than the guest's {memory_mib} MiB of memory"
    )]
    AboveMemory { limit_mib: u64, memory_mib: u64 },
}

/// A limit of `limit_pages` for a guest of `guest_pages`: at least [`MIN_LIMIT_PAGES`], at most
/// guest RAM. `None` (no limit) is always valid.
pub fn validate(limit_pages: Option<u64>, guest_pages: u64) -> Result<Option<u64>, LimitError> {
    match limit_pages {
        Some(l) if l < MIN_LIMIT_PAGES => Err(LimitError::TooSmall),
        Some(l) if l > guest_pages => Err(LimitError::AboveMemory {
            limit_mib: pages::to_mib(l),
            memory_mib: pages::to_mib(guest_pages),
        }),
        limit => Ok(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_at_least_a_mib_and_at_most_guest_ram() {
        let guest = pages::from_mib(64);
        assert_eq!(validate(None, guest), Ok(None));
        assert_eq!(validate(Some(0), guest), Err(LimitError::TooSmall));
        assert_eq!(validate(Some(255), guest), Err(LimitError::TooSmall));
        assert_eq!(validate(Some(256), guest), Ok(Some(256)));
        assert_eq!(validate(Some(guest), guest), Ok(Some(guest)));
        let err = validate(Some(pages::from_mib(1024)), guest).unwrap_err();
        assert_eq!(
            err,
            LimitError::AboveMemory {
                limit_mib: 1024,
                memory_mib: 64
            }
        );
        assert!(err.to_string().contains("more than the guest's 64 MiB"));
        assert!(LimitError::TooSmall.to_string().contains("more than 0"));
    }
}
