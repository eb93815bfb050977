//! The signing-key lifecycle as pure functions: given the keys with their
//! states and timestamps, the time and the timing rules, what changes. No
//! files, no clock, no randomness, so every rule is testable on its own.
//!
//! A key is `next` (published, not signing), then `current` (the one signing
//! key), then `retired` (published, not signing), then removed. Core caches
//! our JWKS and never refetches on an unknown `kid`, so a key may sign only
//! once every verifier's cached set already holds it, and may leave the set
//! only once no token it signed can still be live.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published in the JWKS, not signing yet.
    Next,
    /// The one key that signs.
    Current,
    /// Published so its tokens still verify; signs no more.
    Retired,
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Next => "next",
            Self::Current => "current",
            Self::Retired => "retired",
        })
    }
}

/// One key as the state file records it. `file` names the PKCS#8 file in the
/// keys directory; the private material is never part of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub kid: String,
    pub file: String,
    pub state: KeyState,
    pub created: DateTime<Utc>,
    /// Since when the key is in the JWKS of every instance that reloaded.
    pub published: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<DateTime<Utc>>,
    /// When it stopped signing here; other instances stop within one reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// A key that is published from `now` and signs once the lead has passed.
    pub fn next(kid: String, file: String, now: DateTime<Utc>) -> Self {
        Self { kid, file, state: KeyState::Next, created: now, published: now, promoted: None, retired: None }
    }

    /// A key that signs at once: the very first key, or an emergency.
    pub fn current(kid: String, file: String, now: DateTime<Utc>) -> Self {
        Self { promoted: Some(now), state: KeyState::Current, ..Self::next(kid, file, now) }
    }
}

/// The durations every rule is derived from (settings `[keys]` and `[tokens]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a verifier keeps a fetched JWKS (Core's `ttlJwks`, 600 s).
    pub verifier_cache_ttl: Duration,
    /// Our JWKS `Cache-Control: max-age`: an HTTP cache may serve a set this old.
    pub jwks_max_age: Duration,
    /// Clock skew we allow between us and a verifier.
    pub leeway: Duration,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// How long a key signs before its successor takes over.
    pub rotation_period: Duration,
    /// How long another instance of ours takes to see a change in the keys directory.
    pub reload_interval: Duration,
}

impl Timing {
    /// The pre-publication lead: how long a `next` key must have been in the
    /// JWKS before it may sign.
    ///
    /// Invariant: a verifier that receives a token signed by the key already
    /// holds the key. Its cached set may have been fetched just before the key
    /// appeared and is kept for `verifier_cache_ttl`; that set may already
    /// have sat in an HTTP cache for `max-age`; `leeway` covers the verifier's
    /// clock running behind ours; `reload_interval` covers the other instances
    /// of ours, which publish the key up to one reload after it was written.
    pub fn pre_publication_lead(&self) -> Duration {
        self.verifier_cache_ttl + self.jwks_max_age + self.leeway + self.reload_interval
    }

    /// The retention: how long a retired key stays published after it stopped
    /// signing.
    ///
    /// Invariant: no token the key signed is still live anywhere when it
    /// leaves the set. The last token is signed up to `reload_interval` after
    /// `retired` (another instance that has not reloaded yet) and lives
    /// `access_ttl + leeway`. The cache terms are a margin the issue asks
    /// for (a verifier's cache only ever delays a removal, never hastens
    /// it), kept so that a clock or setting that is off errs on the safe side.
    pub fn retention(&self) -> Duration {
        self.access_ttl + self.leeway + self.verifier_cache_ttl + self.jwks_max_age + self.reload_interval
    }

    /// How long the current key signs before its successor is created.
    ///
    /// Invariant: the successor has been published for the whole lead when
    /// the current key reaches `rotation_period`, so a key signs for the
    /// rotation period and no longer. The settings check refuses a period not
    /// longer than the lead.
    pub fn successor_due_after(&self) -> Duration {
        self.rotation_period - self.pre_publication_lead()
    }
}

/// When a `next` key may sign (`published` + lead).
pub fn promotable_at(key: &KeyRecord, timing: &Timing) -> DateTime<Utc> {
    key.published + timing.pre_publication_lead()
}

/// When a key can no longer have live tokens: `None` while it is current
/// (it signs), the creation time for a `next` key (it never signed).
pub fn removable_after(key: &KeyRecord, timing: &Timing) -> Option<DateTime<Utc>> {
    match key.state {
        KeyState::Next => Some(key.created),
        KeyState::Current => None,
        KeyState::Retired => Some(key.retired.unwrap_or(key.published) + timing.retention()),
    }
}

/// Whether removing the key now could make a verifier refuse a live token.
pub fn may_verify_live_tokens(key: &KeyRecord, now: DateTime<Utc>, timing: &Timing) -> bool {
    removable_after(key, timing).is_none_or(|after| now < after)
}

/// One change the rotation decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// There is no key at all (a new keys directory): create one that signs
    /// at once. No verifier can have cached a set we never served.
    CreateCurrent,
    /// Generate a key and publish it as `next`.
    CreateNext,
    /// This `next` key signs from now on; the current key retires.
    Promote(String),
    /// This retired key leaves the JWKS and the directory.
    Remove(String),
}

/// The rotation decision. Precondition: `keys` is empty or holds exactly one
/// current key (the state file is checked on read).
pub fn plan(keys: &[KeyRecord], now: DateTime<Utc>, timing: &Timing) -> Vec<Action> {
    let Some(current) = keys.iter().find(|k| k.state == KeyState::Current) else {
        return if keys.is_empty() { vec![Action::CreateCurrent] } else { Vec::new() };
    };
    let mut actions: Vec<Action> = keys
        .iter()
        .filter(|k| k.state == KeyState::Retired && !may_verify_live_tokens(k, now, timing))
        .map(|k| Action::Remove(k.kid.clone()))
        .collect();
    let ready = keys
        .iter()
        .filter(|k| k.state == KeyState::Next && promotable_at(k, timing) <= now)
        .min_by_key(|k| (k.published, k.kid.clone()));
    if let Some(next) = ready {
        actions.push(Action::Promote(next.kid.clone()));
    } else {
        let has_next = keys.iter().any(|k| k.state == KeyState::Next);
        let signing_since = current.promoted.unwrap_or(current.published);
        if !has_next && now - signing_since >= timing.successor_due_after() {
            actions.push(Action::CreateNext);
        }
    }
    actions
}

/// Applies a promotion or a removal. Creation needs key material and is done
/// by the caller, which pushes [`KeyRecord::next`] or [`KeyRecord::current`].
pub fn apply(keys: &mut Vec<KeyRecord>, action: &Action, now: DateTime<Utc>) {
    match action {
        Action::Promote(kid) => {
            if !keys.iter().any(|k| &k.kid == kid && k.state == KeyState::Next) {
                return;
            }
            for key in keys.iter_mut() {
                if key.state == KeyState::Current {
                    key.state = KeyState::Retired;
                    key.retired = Some(now);
                } else if &key.kid == kid {
                    key.state = KeyState::Current;
                    key.promoted = Some(now);
                }
            }
        }
        Action::Remove(kid) => keys.retain(|k| &k.kid != kid || k.state == KeyState::Current),
        Action::CreateCurrent | Action::CreateNext => {}
    }
}

/// An emergency rotation for a compromised current key: `fresh` signs at
/// once; the old current key and every `next` key (kept in the same place,
/// so no more trustworthy) are dropped. Returns the dropped records.
/// Verifiers that cached the JWKS refuse new tokens until their cache
/// expires: this trades availability for ending the compromise.
pub fn emergency(keys: &mut Vec<KeyRecord>, fresh: KeyRecord) -> Vec<KeyRecord> {
    let (dropped, kept): (Vec<_>, Vec<_>) = keys.drain(..).partition(|k| k.state != KeyState::Retired);
    *keys = kept;
    keys.push(KeyRecord { state: KeyState::Current, promoted: Some(fresh.created), retired: None, ..fresh });
    dropped
}

/// Checks the invariants a stored set must keep. Returns the first broken one.
pub fn check(keys: &[KeyRecord]) -> Result<(), String> {
    let currents = keys.iter().filter(|k| k.state == KeyState::Current).count();
    if !keys.is_empty() && currents != 1 {
        return Err(format!("{currents} current keys; exactly one must sign"));
    }
    let mut kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    kids.sort_unstable();
    if kids.windows(2).any(|w| w[0] == w[1]) {
        return Err("a kid is listed twice".into());
    }
    for key in keys {
        let plain = !key.file.contains(['/', '\\']) && !key.file.starts_with('.') && key.file.ends_with(".pk8");
        if !plain {
            return Err(format!("key {}: file must be a *.pk8 name inside the keys directory", key.kid));
        }
        match (key.state, key.promoted, key.retired) {
            (KeyState::Current, Some(_), None) | (KeyState::Next, None, None) | (KeyState::Retired, _, Some(_)) => {}
            _ => return Err(format!("key {}: timestamps do not match state {}", key.kid, key.state)),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;
