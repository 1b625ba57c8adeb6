//! Single-use tokens remembered until they expire: the patient challenges already answered
//! and the nonces of peers' signed requests.
//!
//! Only authenticated requests enter a cache (the caller checks the signature first), so a
//! flood of junk never fills it. Memory is bounded (`max_entries`) and each request costs
//! O(1): tokens are kept in buckets by expiry time, a lookup probes the one bucket its
//! expiry falls in (a token and its replay share the signed time that fixes the expiry),
//! and whole buckets are dropped once every token in them has expired.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use crate::{Error, Result};

/// Remembered tokens of `N` bytes.
pub struct ReplayCache<const N: usize> {
    /// Width of one bucket of expiry times, in ms.
    bucket_ms: u64,
    /// Tokens kept at most; past it, new tokens are refused until some expire.
    max_entries: usize,
    /// What kind of token, for messages.
    what: &'static str,
    inner: Mutex<Buckets<N>>,
}

struct Buckets<const N: usize> {
    /// Bucket index (expiry / bucket_ms) to the tokens expiring in it.
    by_expiry: BTreeMap<u64, HashSet<[u8; N]>>,
    len: usize,
}

impl<const N: usize> ReplayCache<N> {
    /// A cache whose tokens live at most a few `window_ms` past now, holding at most
    /// `max_entries`.
    pub fn new(what: &'static str, window_ms: u64, max_entries: usize) -> Self {
        ReplayCache {
            bucket_ms: window_ms.max(1),
            max_entries,
            what,
            inner: Mutex::new(Buckets {
                by_expiry: BTreeMap::new(),
                len: 0,
            }),
        }
    }

    /// Remembers `token` until `expires_ms`.
    ///
    /// # Errors
    /// `Unauthorized` when it was seen before (a replay); `Busy` when the cache is full of
    /// tokens that have not expired yet.
    pub fn use_once(&self, token: [u8; N], expires_ms: u64, now_ms: u64) -> Result<()> {
        let mut b = self
            .inner
            .lock()
            .map_err(|_| Error::Internal(format!("{} table poisoned", self.what)))?;
        // Every token in a bucket below `now / width` has expired.
        let current = now_ms / self.bucket_ms;
        while let Some(entry) = b.by_expiry.first_entry() {
            if *entry.key() >= current {
                break;
            }
            let gone = entry.remove().len();
            b.len -= gone;
        }
        let bucket = expires_ms / self.bucket_ms;
        if b.by_expiry.get(&bucket).is_some_and(|s| s.contains(&token)) {
            return Err(Error::Unauthorized(format!(
                "used {}: each is single use (a replayed request?)",
                self.what
            )));
        }
        if b.len >= self.max_entries {
            return Err(Error::Busy(format!(
                "too many {}s in use right now; retry in a minute",
                self.what
            )));
        }
        b.by_expiry.entry(bucket).or_default().insert(token);
        b.len += 1;
        Ok(())
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |b| b.len)
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_single_use_until_it_expires_and_memory_stays_bounded() {
        let c = ReplayCache::<4>::new("nonce", 1000, 3);
        c.use_once([1; 4], 1500, 0).unwrap();
        assert!(matches!(
            c.use_once([1; 4], 1500, 10),
            Err(Error::Unauthorized(_))
        ));
        c.use_once([2; 4], 2500, 10).unwrap();
        c.use_once([3; 4], 2600, 10).unwrap();
        // Full: a fresh token is refused (not a replay), nothing is forgotten early.
        assert!(matches!(c.use_once([4; 4], 2600, 20), Err(Error::Busy(_))));
        assert!(matches!(
            c.use_once([1; 4], 1500, 20),
            Err(Error::Unauthorized(_))
        ));
        assert_eq!(c.len(), 3);
        // Past 1999 the bucket of [1..] (expiry 1500) is gone, and its slot free.
        c.use_once([4; 4], 2600, 2000).unwrap();
        assert_eq!(c.len(), 3);
        assert!(matches!(
            c.use_once([2; 4], 2500, 2000),
            Err(Error::Unauthorized(_))
        ));
        // Everything expires.
        c.use_once([5; 4], 9000, 8000).unwrap();
        assert_eq!(c.len(), 1);
    }
}
