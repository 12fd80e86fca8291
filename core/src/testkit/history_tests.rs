//! The history checker on hand-made histories: ones that keep the visibility rule must
//! pass, and each way of breaking it must be caught.

use super::*;

const K: &str = "key";

/// Runs 1 and 2 of one key: run 1's finish [2, 4] (active, 3 annotations), run 2's
/// finish [10, 12] (active, 5 annotations).
fn two_runs() -> (History<&'static str>, Uuid, Uuid) {
    let h = History::new();
    let (r1, r2) = (Uuid::from_u128(1), Uuid::from_u128(2));
    h.started(K, r1, 1);
    h.started(K, r2, 2);
    h.finished(r1, 2, answered(4, 3));
    h.finished(r2, 10, answered(12, 5));
    (h, r1, r2)
}

fn answered(at: u64, count: u64) -> FinishOutcome {
    FinishOutcome::Answered {
        at,
        active: true,
        count,
    }
}

fn read(invoked: u64, answered: u64, seen: &[(Uuid, u64)], covered: bool) -> Read<&'static str> {
    let mut runs = BTreeMap::new();
    for &(run, n) in seen {
        runs.insert(run, n);
    }
    Read {
        invoked,
        answered,
        seen: if runs.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([(K, runs)])
        },
        covered: if covered {
            BTreeSet::from([K])
        } else {
            BTreeSet::new()
        },
    }
}

fn violations(h: &History<&'static str>) -> Vec<Violation> {
    h.check().err().unwrap_or_default()
}

#[test]
fn reads_that_keep_the_rule_pass() {
    let (h, r1, r2) = two_runs();
    h.read(read(1, 2, &[], true)); // before anything finished: nothing
    h.read(read(3, 5, &[(r1, 3)], true)); // overlaps run 1's finish
    h.read(read(5, 8, &[(r1, 3)], true)); // run 1 active
    h.read(read(9, 11, &[(r1, 3)], true)); // run 2's finish not answered yet
    h.read(read(11, 13, &[(r2, 5)], true)); // run 2 may be active from 10
    h.read(read(3, 3, &[], true)); // during run 1's finish: may be before it
    h.read(read(11, 11, &[], false)); // not covering: may miss anything
    h.read(read(13, 14, &[(r2, 2)], false)); // part of a run, from a cut-short read
    let checked = h.check().expect("a history that keeps the rule");
    assert_eq!(checked.reads, 8);
    assert_eq!(checked.sightings, 5);
    assert_eq!(checked.finishes, 2);
}

#[test]
fn a_stale_run_is_caught() {
    let (h, r1, _) = two_runs();
    h.read(read(13, 15, &[(r1, 3)], false)); // run 2 answered at 12: run 1 is gone
    let v = violations(&h);
    assert!(
        matches!(v[..], [Violation::NotActiveDuringRead { run, from: 2, until: 12, .. }] if run == r1),
        "{v:?}"
    );
}

#[test]
fn a_run_seen_before_its_finish_was_invoked_is_caught() {
    let (h, _, r2) = two_runs();
    h.read(read(5, 9, &[(r2, 5)], false));
    assert!(matches!(
        violations(&h)[..],
        [Violation::NotActiveDuringRead { from: 10, .. }]
    ));
}

#[test]
fn two_runs_of_a_key_in_one_read_are_caught() {
    let (h, r1, r2) = two_runs();
    // Each run alone would be allowed at [11, 11]; both at once never are.
    h.read(read(9, 11, &[(r1, 3), (r2, 5)], false));
    let v = violations(&h);
    assert!(matches!(v[..], [Violation::TwoRuns { .. }]), "{v:?}");
}

#[test]
fn unfinished_cancelled_superseded_and_unknown_runs_are_caught() {
    let (h, _, _) = two_runs();
    let (open, cancelled, superseded, unknown) = (
        Uuid::from_u128(3),
        Uuid::from_u128(4),
        Uuid::from_u128(5),
        Uuid::from_u128(6),
    );
    h.started(K, open, 3);
    h.started(K, cancelled, 4);
    h.cancelled(cancelled);
    h.started(K, superseded, 0);
    h.finished(
        superseded,
        14,
        FinishOutcome::Answered {
            at: 15,
            active: false,
            count: 1,
        },
    );
    for run in [open, cancelled, superseded, unknown] {
        h.read(read(16, 17, &[(run, 1)], false));
    }
    let v = violations(&h);
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(matches!(
        v[0],
        Violation::NeverActive {
            why: "no finish was invoked",
            ..
        }
    ));
    assert!(matches!(
        v[1],
        Violation::NeverActive {
            why: "it was cancelled",
            ..
        }
    ));
    assert!(matches!(v[2], Violation::NeverActive { .. }));
    assert!(matches!(v[3], Violation::UnknownRun { .. }));
}

#[test]
fn an_unanswered_finish_may_show_its_run_from_its_invocation_on() {
    let (h, _, r2) = two_runs();
    let r3 = Uuid::from_u128(3);
    h.started(K, r3, 3);
    h.finished(r3, 20, FinishOutcome::Unanswered);
    h.read(read(21, 22, &[(r3, 9)], true)); // its count is unknown: not checked
    h.read(read(30, 31, &[(r2, 5)], true)); // it may also never have happened
    assert!(h.check().is_ok(), "{:?}", h.check());
    h.read(read(18, 19, &[(r3, 9)], false));
    assert!(matches!(
        violations(&h)[..],
        [Violation::NotActiveDuringRead {
            from: 20,
            until: u64::MAX,
            ..
        }]
    ));
}

#[test]
fn part_of_a_run_in_a_covering_read_is_caught() {
    let (h, r1, _) = two_runs();
    h.read(read(5, 6, &[(r1, 2)], true));
    assert!(matches!(
        violations(&h)[..],
        [Violation::Partial {
            seen: 2,
            count: 3,
            ..
        }]
    ));
}

#[test]
fn a_covering_read_that_misses_the_active_run_is_caught() {
    let (h, r1, r2) = two_runs();
    h.read(read(5, 6, &[], true)); // run 1 answered active at 4
    h.read(read(13, 14, &[], true)); // run 2 answered active at 12
    let v = violations(&h);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(matches!(v[0], Violation::Missed { run, at: 4, .. } if run == r1));
    assert!(matches!(v[1], Violation::Missed { run, at: 12, .. } if run == r2));
    // While run 2's finish is under way the read must still see run 1 or run 2.
    let (h, _, r2) = two_runs();
    h.read(read(9, 11, &[], true));
    h.read(read(9, 11, &[(r2, 5)], true));
    let v = violations(&h);
    assert!(
        matches!(v[..], [Violation::Missed { read: 0, .. }]),
        "{v:?}"
    );
    // Unless that newer run may be empty.
    let (h, r1, r2) = (History::new(), Uuid::from_u128(1), Uuid::from_u128(2));
    h.started(K, r1, 1);
    h.started(K, r2, 2);
    h.finished(r1, 2, answered(4, 3));
    h.finished(r2, 10, answered(12, 0));
    h.read(read(9, 11, &[], true));
    assert!(h.check().is_ok(), "{:?}", h.check());
}
