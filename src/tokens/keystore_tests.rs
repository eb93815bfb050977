//! The keys directory on a real file system: first key, the layout before
//! key states, corrupt state, concurrent writers, removal.

use std::os::unix::fs::PermissionsExt;
use std::sync::Barrier;

use chrono::{Duration, TimeZone};

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

fn timing() -> Timing {
    Timing {
        verifier_cache_ttl: Duration::seconds(600),
        jwks_max_age: Duration::seconds(300),
        leeway: Duration::seconds(5),
        access_ttl: Duration::seconds(300),
        rotation_period: Duration::days(1),
        reload_interval: Duration::seconds(2),
    }
}

fn fresh() -> (tempfile::TempDir, KeyDir) {
    let Ok(tmp) = tempfile::tempdir() else { panic!("tempdir") };
    let dir = KeyDir::new(tmp.path().join("keys"));
    (tmp, dir)
}

fn states(dir: &KeyDir, now: DateTime<Utc>) -> Vec<KeyState> {
    dir.read(now).map(|s| s.records.iter().map(|r| r.state).collect()).unwrap_or_default()
}

#[test]
fn a_new_directory_gets_one_current_key_and_a_private_state_file() {
    let (_tmp, dir) = fresh();
    assert_eq!(dir.rotate_if_due(t0(), &timing()).ok(), Some(vec![Action::CreateCurrent]));
    assert_eq!(states(&dir, t0()), [KeyState::Current]);
    let mode = fs::metadata(dir.path().join(STATE_FILE)).map(|m| m.permissions().mode() & 0o777).ok();
    assert_eq!(mode, Some(0o600));
    let loaded = dir.load(t0(), None).ok().flatten();
    let Some((snapshot, ring)) = loaded else { panic!("loads") };
    assert_eq!(ring.signing_kid(), snapshot.records[0].kid);
    assert!(dir.load(t0(), Some(&snapshot.records)).is_ok_and(|l| l.is_none()), "unchanged: nothing reloaded");
}

#[test]
fn a_lone_key_file_from_before_key_states_keeps_signing() {
    let (_tmp, dir) = fresh();
    let Ok((kid, _)) = generate(dir.path(), t0()) else { panic!("generate") };
    let snapshot = dir.read(t0()).ok();
    assert_eq!(snapshot.as_ref().map(|s| s.persisted), Some(false));
    assert_eq!(dir.rotate_if_due(t0(), &timing()).ok(), Some(vec![]), "adopted, nothing due");
    let Some((snapshot, ring)) = dir.load(t0(), None).ok().flatten() else { panic!("loads") };
    assert!(snapshot.persisted, "the adoption is stored");
    assert_eq!((snapshot.records[0].state, ring.signing_kid()), (KeyState::Current, kid.as_str()));
}

#[test]
fn of_several_old_key_files_the_newest_signs_and_the_others_retire() {
    let (_tmp, dir) = fresh();
    let Ok((old, _)) = generate(dir.path(), t0()) else { panic!("generate") };
    let Ok((new, _)) = generate(dir.path(), t0() + Duration::seconds(1)) else { panic!("generate") };
    let Ok(snapshot) = dir.read(t0()) else { panic!("read") };
    let by_kid = |kid: &str| snapshot.records.iter().find(|r| r.kid == kid).map(|r| (r.state, r.retired));
    assert_eq!(by_kid(&new), Some((KeyState::Current, None)));
    assert_eq!(by_kid(&old), Some((KeyState::Retired, Some(t0()))), "retired from adoption on");
}

#[test]
fn a_corrupt_state_file_is_refused_naming_it() {
    let (_tmp, dir) = fresh();
    let _ = dir.rotate_if_due(t0(), &timing());
    let _ = fs::write(dir.path().join(STATE_FILE), b"{\"version\":1,\"keys\":[");
    let err = dir.read(t0()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains(STATE_FILE) && err.contains("corrupt"), "{err}");
    let _ = fs::write(dir.path().join(STATE_FILE), b"{\"version\":1,\"keys\":[],\"extra\":1}");
    assert!(matches!(dir.read(t0()), Err(KeyError::CorruptState { .. })));
}

#[test]
fn a_key_file_that_does_not_match_its_kid_is_refused() {
    let (_tmp, dir) = fresh();
    let _ = dir.rotate_if_due(t0(), &timing());
    let Ok(snapshot) = dir.read(t0()) else { panic!("read") };
    let Ok((_, other)) = generate(dir.path(), t0()) else { panic!("generate") };
    let _ = fs::rename(dir.path().join(other), dir.path().join(&snapshot.records[0].file));
    assert!(matches!(dir.load(t0(), None), Err(KeyError::Mismatch { .. })));
}

#[test]
fn instances_rotating_at_the_same_moment_create_one_successor() {
    let (_tmp, dir) = fresh();
    let _ = dir.rotate_if_due(t0(), &timing());
    let due = t0() + timing().successor_due_after();
    let barrier = Barrier::new(8);
    let created: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (dir, barrier) = (KeyDir::new(dir.path()), &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    dir.rotate_if_due(due, &timing()).map(|a| a.len()).unwrap_or(99)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(99)).sum()
    });
    assert_eq!(created, 1, "one instance acted, the others found it done");
    assert_eq!(states(&dir, due), [KeyState::Current, KeyState::Next]);
    assert_eq!(key_files(dir.path()).map(|f| f.len()).ok(), Some(2));
}

#[test]
fn a_full_rotation_promotes_then_deletes_the_old_key_file() {
    let (_tmp, dir) = fresh();
    let _ = dir.rotate_if_due(t0(), &timing());
    let mut now = t0() + timing().successor_due_after();
    let _ = dir.rotate_if_due(now, &timing());
    now += timing().pre_publication_lead();
    assert!(matches!(dir.rotate_if_due(now, &timing()).as_deref(), Ok([Action::Promote(_)])));
    assert_eq!(states(&dir, now), [KeyState::Retired, KeyState::Current]);
    now += timing().retention();
    assert!(matches!(dir.rotate_if_due(now, &timing()).as_deref(), Ok([Action::Remove(_)])));
    assert_eq!(states(&dir, now), [KeyState::Current]);
    assert_eq!(key_files(dir.path()).map(|f| f.len()).ok(), Some(1), "the removed key's file is gone");
}

#[test]
fn a_key_file_the_state_does_not_list_is_reported_and_never_signs() {
    let (_tmp, dir) = fresh();
    let _ = dir.rotate_if_due(t0(), &timing());
    let Ok((stray, _)) = generate(dir.path(), t0()) else { panic!("generate") };
    let Some((snapshot, ring)) = dir.load(t0(), None).ok().flatten() else { panic!("loads") };
    assert_eq!(snapshot.unlisted.len(), 1);
    assert!(ring.decoding_key(&stray).is_none(), "not published");
}

#[test]
fn a_key_file_with_loose_permissions_stops_the_load() {
    let (_tmp, dir) = fresh();
    let _ = dir.rotate_if_due(t0(), &timing());
    let Ok(snapshot) = dir.read(t0()) else { panic!("read") };
    let path = dir.path().join(&snapshot.records[0].file);
    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o640));
    assert!(matches!(dir.load(t0(), None), Err(KeyError::LoosePermissions { .. })));
}
