//! The keys directory: one PKCS#8 file per key, `state.json` beside them with
//! every key's state and timestamps, and `.lock`, an flock that serialises
//! writers (exclusive) against readers (shared). Why one state file rather
//! than a sidecar per key, and why files rather than the database, is in
//! docs/KEYS.md.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::keys::{KeyError, KeyRing, generate, key_files, read_key};
use super::rotation::{Action, KeyRecord, KeyState, Timing, apply, check, plan};

pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = ".lock";
const STATE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

/// What one read of the directory found.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub records: Vec<KeyRecord>,
    /// False when the records were derived from key files alone (the layout
    /// before states existed) and no writer has stored them yet.
    pub persisted: bool,
    /// `*.pk8` files the state file does not list. They are ignored: either
    /// a removal stopped between writing the state and deleting the file, or
    /// someone copied a file in by hand; neither may ever sign.
    pub unlisted: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_owned(), source }
}

impl KeyDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Takes the directory's lock; released when the file is dropped. A
    /// lock file rather than the state file itself, because the state file
    /// is replaced by rename and a lock on a replaced inode guards nothing.
    fn lock(&self, exclusive: bool) -> Result<File, KeyError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path);
        let file = file.map_err(io(&path))?;
        let locked = if exclusive { file.lock() } else { file.lock_shared() };
        locked.map_err(io(&path))?;
        Ok(file)
    }

    /// Reads the state under the shared lock, so a writer's change (new key
    /// file, state, deleted file) is seen whole or not at all.
    pub fn read(&self, now: DateTime<Utc>) -> Result<Snapshot, KeyError> {
        let _lock = self.lock(false)?;
        self.read_locked(now)
    }

    /// Reads the state and, unless its records equal `known`, the key
    /// material, under one shared lock.
    pub fn load(
        &self,
        now: DateTime<Utc>,
        known: Option<&[KeyRecord]>,
    ) -> Result<Option<(Snapshot, KeyRing)>, KeyError> {
        let _lock = self.lock(false)?;
        let snapshot = self.read_locked(now)?;
        if snapshot.persisted && known == Some(snapshot.records.as_slice()) {
            return Ok(None);
        }
        let ring = self.ring(&snapshot.records)?;
        Ok(Some((snapshot, ring)))
    }

    fn read_locked(&self, now: DateTime<Utc>) -> Result<Snapshot, KeyError> {
        let path = self.state_path();
        let files = key_files(&self.dir)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Snapshot { records: adopt(&files, now)?, persisted: false, unlisted: Vec::new() });
            }
            Err(e) => return Err(KeyError::Io { path, source: e }),
        };
        let corrupt = |reason: String| KeyError::CorruptState { path: path.clone(), reason };
        let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(corrupt(format!("version {} is not {STATE_VERSION}", state.version)));
        }
        check(&state.keys).map_err(corrupt)?;
        let listed = |file: &PathBuf| state.keys.iter().any(|k| file.file_name().is_some_and(|n| *n == *k.file));
        let unlisted = files.into_iter().filter(|f| !listed(f)).collect();
        Ok(Snapshot { records: state.keys, persisted: true, unlisted })
    }

    /// Loads the material of `records`, published oldest first.
    fn ring(&self, records: &[KeyRecord]) -> Result<KeyRing, KeyError> {
        let mut ordered: Vec<&KeyRecord> = records.iter().collect();
        ordered.sort_by(|a, b| (a.created, &a.kid).cmp(&(b.created, &b.kid)));
        let mut keys = Vec::with_capacity(ordered.len());
        for record in ordered {
            let path = self.dir.join(&record.file);
            let key = read_key(&path)?;
            if key.kid != record.kid {
                return Err(KeyError::Mismatch { path, kid: record.kid.clone() });
            }
            keys.push(key);
        }
        let signer = records.iter().find(|k| k.state == KeyState::Current).ok_or(KeyError::NoSigner)?;
        KeyRing::new(keys, &signer.kid)
    }

    /// Changes the state under the exclusive lock: re-reads it (another
    /// instance may have changed it since any earlier read), lets `change`
    /// edit the records (it may create keys with [`KeyDir::generate`]),
    /// refuses a result that breaks the invariants, stores it by an atomic
    /// rename, then deletes the files of the keys that left the set.
    pub fn update<T>(
        &self,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Vec<KeyRecord>) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let _lock = self.lock(true)?;
        let before = self.read_locked(now)?;
        let mut records = before.records.clone();
        let outcome = change(&mut records)?;
        check(&records).map_err(KeyError::Refused)?;
        if !before.persisted || records != before.records {
            self.write_state(&records)?;
        }
        for gone in before.records.iter().filter(|r| !records.iter().any(|k| k.kid == r.kid)) {
            let path = self.dir.join(&gone.file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // The state no longer lists it, so it is ignored from now on.
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "could not delete a removed key file"),
            }
        }
        Ok(outcome)
    }

    /// Creates a key file; the caller adds its record.
    pub fn generate(&self, now: DateTime<Utc>) -> Result<(String, String), KeyError> {
        generate(&self.dir, now)
    }

    fn write_state(&self, records: &[KeyRecord]) -> Result<(), KeyError> {
        let path = self.state_path();
        // One temporary name is enough: only the holder of the exclusive lock writes.
        let temporary = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let state = StateFile { version: STATE_VERSION, keys: records.to_vec() };
        let mut json = serde_json::to_vec_pretty(&state)
            .map_err(|e| KeyError::CorruptState { path: path.clone(), reason: format!("cannot serialise: {e}") })?;
        json.push(b'\n');
        let _ = fs::remove_file(&temporary);
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).map_err(io(&temporary))?;
        file.write_all(&json).and_then(|()| file.sync_all()).map_err(io(&temporary))?;
        fs::rename(&temporary, &path).map_err(io(&path))?;
        // The rename itself must survive a crash.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))
    }

    /// One rotation step. Plans on a shared-lock read first, so an idle tick
    /// never waits for the exclusive lock; when there is something to do,
    /// plans again under the exclusive lock on what it re-reads, so two
    /// instances never both rotate. Returns the actions taken.
    pub fn rotate_if_due(&self, now: DateTime<Utc>, timing: &Timing) -> Result<Vec<Action>, KeyError> {
        let snapshot = self.read(now)?;
        if snapshot.persisted && plan(&snapshot.records, now, timing).is_empty() {
            return Ok(Vec::new());
        }
        self.update(now, |records| {
            let actions = plan(records, now, timing);
            for action in &actions {
                match action {
                    Action::CreateCurrent => {
                        let (kid, file) = self.generate(now)?;
                        records.push(KeyRecord::current(kid, file, now));
                    }
                    Action::CreateNext => {
                        let (kid, file) = self.generate(now)?;
                        records.push(KeyRecord::next(kid, file, now));
                    }
                    other => apply(records, other, now),
                }
            }
            Ok(actions)
        })
    }
}

/// Records for key files that have no state file (the layout before key
/// states): the newest file keeps signing, as it did; older files are
/// retired from now, so their tokens get the whole retention.
fn adopt(files: &[PathBuf], now: DateTime<Utc>) -> Result<Vec<KeyRecord>, KeyError> {
    let mut records = Vec::with_capacity(files.len());
    for (i, path) in files.iter().enumerate() {
        let key = read_key(path)?;
        let modified = fs::metadata(path).and_then(|m| m.modified()).map(DateTime::<Utc>::from).unwrap_or(now);
        let since = modified.min(now);
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let mut record = KeyRecord::current(key.kid, file, since);
        if i + 1 < files.len() {
            record.state = KeyState::Retired;
            record.promoted = None;
            record.retired = Some(now);
        }
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
#[path = "keystore_tests.rs"]
mod tests;
