//! The key ring a running instance signs and verifies with, swapped whole
//! when the keys directory changes: requests read it without a lock, and a
//! request sees one consistent ring (signer, verification keys, JWKS and its
//! ETag) even while a rotation is stored.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use super::keys::{KeyError, KeyRing};
use super::keystore::{KeyDir, Snapshot};
use super::rotation::{Action, KeyRecord, Timing};

#[derive(Debug)]
pub struct LiveKeys {
    dir: KeyDir,
    timing: Timing,
    ring: ArcSwap<KeyRing>,
    /// The records the ring was built from; also serialises this process's ticks.
    loaded: Mutex<Vec<KeyRecord>>,
}

/// What one maintenance tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// Rotation actions this instance took (none when another one did).
    pub actions: Vec<Action>,
    /// Whether a new ring was swapped in (a change by anyone).
    pub reloaded: bool,
}

impl LiveKeys {
    /// At start: one rotation step (creates the first key, stores the states
    /// of keys from the layout before states existed, catches up on what fell
    /// due while stopped), then loads the ring. Any error stops the start.
    pub fn open(dir: KeyDir, timing: Timing, now: DateTime<Utc>) -> Result<Self, KeyError> {
        dir.rotate_if_due(now, &timing)?;
        let (snapshot, ring) = dir.load(now, None)?.ok_or(KeyError::NoSigner)?;
        warn_unlisted(&snapshot);
        tracing::info!(signing_kid = ring.signing_kid(), published = snapshot.records.len(), "signing keys loaded");
        Ok(Self { dir, timing, ring: ArcSwap::from_pointee(ring), loaded: Mutex::new(snapshot.records) })
    }

    /// The ring as it is now; hold it for the length of one request.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    pub fn dir(&self) -> &KeyDir {
        &self.dir
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// One maintenance step (blocking file work): rotates when due, then
    /// swaps in a new ring if the set changed, here or at another instance
    /// sharing the directory. On error the ring in use stays.
    pub fn tick(&self, now: DateTime<Utc>) -> Result<Tick, KeyError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let actions = self.dir.rotate_if_due(now, &self.timing)?;
        for action in &actions {
            tracing::info!(action = ?action, "signing-key rotation");
        }
        let Some((snapshot, ring)) = self.dir.load(now, Some(&loaded))? else {
            return Ok(Tick { actions, reloaded: false });
        };
        warn_unlisted(&snapshot);
        tracing::info!(signing_kid = ring.signing_kid(), published = snapshot.records.len(), "signing keys reloaded");
        self.ring.store(Arc::new(ring));
        *loaded = snapshot.records;
        Ok(Tick { actions, reloaded: true })
    }
}

fn warn_unlisted(snapshot: &Snapshot) {
    for file in &snapshot.unlisted {
        tracing::warn!(file = %file.display(), "key file not listed in the state file: ignored");
    }
}
