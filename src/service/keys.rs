//! The signing-key lifecycle as operators and the running service use it:
//! the periodic maintenance tick, and the `sts key` commands, which work on
//! the keys directory alone (no port, no database) so they can act beside a
//! running service, which picks their changes up at its next tick.

use chrono::{DateTime, SecondsFormat, Utc};

use super::Context;
use crate::tokens::KeyDir;
use crate::tokens::keys::KeyError;
use crate::tokens::live::Tick;
use crate::tokens::rotation::{self, KeyRecord, KeyState, Timing, may_verify_live_tokens};

impl Context {
    /// One maintenance step at the injected clock's time: rotates when due
    /// and reloads the ring if the keys directory changed. The background
    /// job calls it every `keys.reload_interval_secs`; tests call it to step
    /// a simulated clock deterministically.
    pub async fn maintain_keys(&self) -> Result<Tick, KeyError> {
        let (keys, now) = (self.keys.clone(), self.now());
        tokio::task::spawn_blocking(move || keys.tick(now))
            .await
            .map_err(|e| KeyError::Refused(format!("key maintenance did not finish: {e}")))?
    }
}

/// Runs [`Context::maintain_keys`] every reload interval. A failure keeps the
/// ring in use (still valid: nothing was removed that it relies on) and is
/// retried at the next tick.
pub fn spawn_maintenance(ctx: Context) {
    let every = std::time::Duration::from_secs(ctx.config.settings.keys.reload_interval_secs);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(e) = ctx.maintain_keys().await {
                tracing::warn!(error = %e, "signing-key maintenance failed; keeping the keys in use");
            }
        }
    });
}

/// One line of `sts key list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub kid: String,
    pub state: KeyState,
    pub created: DateTime<Utc>,
    pub published: DateTime<Utc>,
    /// When it started signing; for a `next` key, the earliest it may.
    pub promoted: Option<DateTime<Utc>>,
    pub retired: Option<DateTime<Utc>>,
    /// `None` while the key signs.
    pub removable_after: Option<DateTime<Utc>>,
}

impl KeyRow {
    fn of(record: &KeyRecord, timing: &Timing) -> Self {
        let promoted = match record.state {
            KeyState::Next => Some(rotation::promotable_at(record, timing)),
            _ => record.promoted,
        };
        Self {
            kid: record.kid.clone(),
            state: record.state,
            created: record.created,
            published: record.published,
            promoted,
            retired: record.retired,
            removable_after: rotation::removable_after(record, timing),
        }
    }
}

/// Formats a time as `sts key list` shows it.
pub fn show(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The keys, oldest first, and any key files the state does not list.
pub fn list(dir: &KeyDir, timing: &Timing, now: DateTime<Utc>) -> Result<(Vec<KeyRow>, Vec<String>), KeyError> {
    let snapshot = dir.read(now)?;
    let mut rows: Vec<KeyRow> = snapshot.records.iter().map(|r| KeyRow::of(r, timing)).collect();
    rows.sort_by(|a, b| (a.created, &a.kid).cmp(&(b.created, &b.kid)));
    Ok((rows, snapshot.unlisted.iter().map(|p| p.display().to_string()).collect()))
}

/// `sts key list` as a table, one key per line under a header.
pub fn table(rows: &[KeyRow]) -> String {
    let mut out = format!(
        "{:<43}  {:<7}  {:<20}  {:<20}  {:<20}  {:<20}  REMOVABLE-AFTER\n",
        "KID", "STATE", "CREATED", "PUBLISHED-SINCE", "PROMOTED", "RETIRED"
    );
    for r in rows {
        let (created, published) = (show(Some(r.created)), show(Some(r.published)));
        let (promoted, retired, removable) = (show(r.promoted), show(r.retired), show(r.removable_after));
        let state = r.state.to_string();
        out.push_str(&format!(
            "{:<43}  {state:<7}  {created:<20}  {published:<20}  {promoted:<20}  {retired:<20}  {removable}\n",
            r.kid
        ));
    }
    out
}

/// What `sts key rotate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// A `next` key was created; it signs from `promotable_at` on.
    Created { kid: String, promotable_at: DateTime<Utc> },
    /// A `next` key already waits; nothing was created.
    Pending { kid: String, promotable_at: DateTime<Utc> },
    /// There was no key at all; the first one signs at once.
    First { kid: String },
}

/// `sts key rotate`: publishes a `next` key; the service promotes it once it
/// has been published for the whole pre-publication lead.
pub fn rotate(dir: &KeyDir, timing: &Timing, now: DateTime<Utc>) -> Result<Rotation, KeyError> {
    dir.update(now, |records| {
        if records.is_empty() {
            let (kid, file) = dir.generate(now)?;
            records.push(KeyRecord::current(kid.clone(), file, now));
            return Ok(Rotation::First { kid });
        }
        if let Some(next) = records.iter().find(|k| k.state == KeyState::Next) {
            let promotable_at = rotation::promotable_at(next, timing);
            return Ok(Rotation::Pending { kid: next.kid.clone(), promotable_at });
        }
        let (kid, file) = dir.generate(now)?;
        let record = KeyRecord::next(kid.clone(), file, now);
        let promotable_at = rotation::promotable_at(&record, timing);
        records.push(record);
        Ok(Rotation::Created { kid, promotable_at })
    })
}

/// `sts key rotate --emergency`: a new key signs at once and the current and
/// `next` keys are deleted. Returns the new kid and the dropped kids.
pub fn emergency(dir: &KeyDir, now: DateTime<Utc>) -> Result<(String, Vec<String>), KeyError> {
    dir.update(now, |records| {
        let (kid, file) = dir.generate(now)?;
        let dropped = rotation::emergency(records, KeyRecord::current(kid.clone(), file, now));
        Ok((kid, dropped.into_iter().map(|k| k.kid).collect()))
    })
}

/// `sts key remove KID`: refuses the current key always, and a retired key
/// that may still verify live tokens unless `force`.
pub fn remove(dir: &KeyDir, timing: &Timing, kid: &str, force: bool, now: DateTime<Utc>) -> Result<KeyRow, KeyError> {
    dir.update(now, |records| {
        let Some(record) = records.iter().find(|k| k.kid == kid).cloned() else {
            return Err(KeyError::Refused(format!("no key {kid} in {}", dir.path().display())));
        };
        let row = KeyRow::of(&record, timing);
        if record.state == KeyState::Current {
            return Err(KeyError::Refused(format!(
                "key {kid} is the current signing key; replace it with `sts key rotate --emergency`"
            )));
        }
        if may_verify_live_tokens(&record, now, timing) && !force {
            return Err(KeyError::Refused(format!(
                "key {kid} may still verify live tokens until {}; wait, or use --force (its tokens will be refused)",
                show(row.removable_after)
            )));
        }
        records.retain(|k| k.kid != kid);
        Ok(row)
    })
}
