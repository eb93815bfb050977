//! Table tests and properties of the rotation decision.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

/// Core's shipped configuration: 600 s cache, 300 s max-age, 5 s leeway,
/// 300 s access tokens, 90 days, 2 s reload.
fn core() -> Timing {
    Timing {
        verifier_cache_ttl: Duration::seconds(600),
        jwks_max_age: Duration::seconds(300),
        leeway: Duration::seconds(5),
        access_ttl: Duration::seconds(300),
        rotation_period: Duration::days(90),
        reload_interval: Duration::seconds(2),
    }
}

fn key(kid: &str, state: KeyState, published: DateTime<Utc>) -> KeyRecord {
    let mut record = KeyRecord::next(kid.into(), format!("{kid}.pk8"), published);
    record.state = state;
    match state {
        KeyState::Next => {}
        KeyState::Current => record.promoted = Some(published),
        KeyState::Retired => record.retired = Some(published),
    }
    record
}

#[test]
fn the_lead_and_the_retention_for_cores_defaults() {
    assert_eq!(core().pre_publication_lead(), Duration::seconds(907));
    assert_eq!(core().retention(), Duration::seconds(1207));
    assert_eq!(core().successor_due_after(), Duration::days(90) - Duration::seconds(907));
}

#[test]
fn an_empty_directory_gets_a_key_that_signs_at_once() {
    assert_eq!(plan(&[], t0(), &core()), vec![Action::CreateCurrent]);
}

#[test]
fn a_successor_is_created_one_lead_before_the_period_ends() {
    let keys = [key("a", KeyState::Current, t0())];
    let due = t0() + core().successor_due_after();
    assert_eq!(plan(&keys, due - Duration::seconds(1), &core()), vec![]);
    assert_eq!(plan(&keys, due, &core()), vec![Action::CreateNext]);
}

#[test]
fn a_next_key_is_promoted_only_after_the_whole_lead() {
    let keys = [key("a", KeyState::Current, t0()), key("b", KeyState::Next, t0() + Duration::days(1))];
    let ready = t0() + Duration::days(1) + core().pre_publication_lead();
    assert_eq!(plan(&keys, ready - Duration::seconds(1), &core()), vec![]);
    assert_eq!(plan(&keys, ready, &core()), vec![Action::Promote("b".into())]);
}

#[test]
fn promotion_retires_the_current_key_at_that_moment() {
    let mut keys = vec![key("a", KeyState::Current, t0()), key("b", KeyState::Next, t0())];
    let now = t0() + Duration::hours(1);
    apply(&mut keys, &Action::Promote("b".into()), now);
    assert_eq!((keys[0].state, keys[0].retired), (KeyState::Retired, Some(now)));
    assert_eq!((keys[1].state, keys[1].promoted), (KeyState::Current, Some(now)));
}

#[test]
fn a_retired_key_is_removed_only_after_the_retention() {
    let keys = [key("a", KeyState::Retired, t0()), key("b", KeyState::Current, t0())];
    let gone = t0() + core().retention();
    assert_eq!(plan(&keys, gone - Duration::seconds(1), &core()), vec![]);
    assert_eq!(plan(&keys, gone, &core()), vec![Action::Remove("a".into())]);
    assert!(may_verify_live_tokens(&keys[0], gone - Duration::seconds(1), &core()));
    assert!(may_verify_live_tokens(&keys[1], gone + Duration::days(999), &core()), "the current key always may");
}

#[test]
fn an_emergency_drops_the_current_and_next_keys_and_keeps_the_retired() {
    let mut keys =
        vec![key("old", KeyState::Retired, t0()), key("a", KeyState::Current, t0()), key("b", KeyState::Next, t0())];
    let dropped = emergency(&mut keys, KeyRecord::next("c".into(), "c.pk8".into(), t0()));
    assert_eq!(dropped.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(
        keys.iter().map(|k| (k.kid.as_str(), k.state)).collect::<Vec<_>>(),
        [("old", KeyState::Retired), ("c", KeyState::Current)]
    );
    assert_eq!(check(&keys), Ok(()));
}

#[test]
fn a_stored_set_without_exactly_one_current_key_is_refused() {
    assert!(check(&[key("a", KeyState::Next, t0())]).is_err());
    assert!(check(&[key("a", KeyState::Current, t0()), key("b", KeyState::Current, t0())]).is_err());
    let mut escaping = key("a", KeyState::Current, t0());
    escaping.file = "../etc/passwd.pk8".into();
    assert!(check(&[escaping]).is_err());
    assert_eq!(check(&[]), Ok(()));
}

fn timing() -> impl Strategy<Value = Timing> {
    (0..2_000i64, 0..1_000i64, 0..60i64, 1..3_600i64, 1..30i64, 1..10i64).prop_map(
        |(cache, max_age, leeway, access, period_hours, reload)| {
            let mut timing = Timing {
                verifier_cache_ttl: Duration::seconds(cache),
                jwks_max_age: Duration::seconds(max_age),
                leeway: Duration::seconds(leeway),
                access_ttl: Duration::seconds(access),
                rotation_period: Duration::hours(period_hours),
                reload_interval: Duration::seconds(reload),
            };
            // The settings check guarantees a period longer than the lead.
            timing.rotation_period = timing.rotation_period.max(timing.pre_publication_lead() + Duration::seconds(1));
            timing
        },
    )
}

const MAX_STEP: i64 = 7_200;

/// A step of a simulated run: time passes, and an operator may ask for a
/// rotation (`sts key rotate` creates a `next` key when there is none).
fn steps() -> impl Strategy<Value = Vec<(i64, bool)>> {
    prop::collection::vec((1..=MAX_STEP, prop::bool::weighted(0.05)), 1..300)
}

proptest! {
    /// Whatever time does and whatever operators ask: exactly one key signs,
    /// a key signs only after the whole lead, a key leaves only after the
    /// retention, and no key signs much longer than the rotation period.
    #[test]
    fn rotation_keeps_its_invariants(timing in timing(), steps in steps()) {
        let mut now = t0();
        let mut keys = vec![KeyRecord::current("k0".into(), "k0.pk8".into(), now)];
        let mut created = 0;
        for (advance, operator_rotates) in steps {
            now += Duration::seconds(advance);
            if operator_rotates && !keys.iter().any(|k| k.state == KeyState::Next) {
                created += 1;
                keys.push(KeyRecord::next(format!("k{created}"), format!("k{created}.pk8"), now));
            }
            let before = keys.clone();
            for action in plan(&keys, now, &timing) {
                match &action {
                    Action::CreateCurrent => prop_assert!(false, "a set with a current key never starts over"),
                    Action::CreateNext => {
                        created += 1;
                        keys.push(KeyRecord::next(format!("k{created}"), format!("k{created}.pk8"), now));
                    }
                    Action::Promote(kid) => {
                        let next = before.iter().find(|k| &k.kid == kid);
                        prop_assert!(next.is_some_and(|k| k.state == KeyState::Next && now - k.published >= timing.pre_publication_lead()));
                    }
                    Action::Remove(kid) => {
                        let gone = before.iter().find(|k| &k.kid == kid);
                        prop_assert!(gone.is_some_and(|k| k.retired.is_some_and(|r| now - r >= timing.retention())));
                    }
                }
                apply(&mut keys, &action, now);
            }
            prop_assert_eq!(check(&keys), Ok(()));
            let current = keys.iter().find(|k| k.state == KeyState::Current);
            let Some(current) = current else { return Err(TestCaseError::fail("no current key")) };
            let signing_since = current.promoted.unwrap_or(current.published);
            // A key signs at most one period, plus the steps that noticed the
            // successor was due and that it was promotable.
            prop_assert!(now - signing_since <= timing.rotation_period + Duration::seconds(2 * MAX_STEP));
            for key in &keys {
                let still_needed = before.iter().any(|b| b.kid == key.kid);
                prop_assert!(still_needed || key.state == KeyState::Next, "only new keys appear, as next");
            }
        }
    }

    /// Once a plan is applied, planning again at the same instant finds
    /// nothing to do: a second instance that re-reads the state under the
    /// lock does not rotate again.
    #[test]
    fn planning_is_idempotent_at_one_instant(timing in timing(), age in 0..200_000i64, published in 0..5_000i64) {
        let now = t0() + Duration::seconds(age);
        let mut keys = vec![
            key("a", KeyState::Retired, t0()),
            key("b", KeyState::Current, t0()),
            key("c", KeyState::Next, t0() + Duration::seconds(published)),
        ];
        for action in plan(&keys, now, &timing) {
            apply(&mut keys, &action, now);
        }
        prop_assert_eq!(plan(&keys, now, &timing), vec![]);
    }
}
