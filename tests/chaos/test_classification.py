"""The suite's own pure parts: the seeded schedule, what counts as a server error, and
which fault window an error falls in (no mesh needed)."""

from __future__ import annotations

from tests.chaos.checker import classify_server_errors, p99_ms
from tests.chaos.faults import KINDS, Fault, schedule
from tests.chaos.history import Attempt, Outcome


def test_a_seed_gives_the_same_schedule_with_every_fault_once_per_round() -> None:
    first = schedule(7, 2, 2, (1.0, 2.0))
    assert first == schedule(7, 2, 2, (1.0, 2.0))
    assert sorted(f.kind for f in first[: len(KINDS)]) == sorted(KINDS)
    assert sorted(f.kind for f in first[len(KINDS) :]) == sorted(KINDS)
    assert all(1.0 <= f.gap <= 2.0 for f in first)
    kills = [f for f in first if f.kind.startswith("kill:")]
    assert all(f.target.rsplit("-", 1)[1] in ("1", "2") for f in kills)


def test_kills_together_are_one_fault_on_an_instance_of_every_service() -> None:
    faults = schedule(7, 1, 2, (1.0, 2.0), kills_together=True)
    kills = [f for f in faults if f.kind.startswith("kill:")]
    assert [f.kind for f in kills] == ["kill:all"]
    services = [name.rsplit("-", 1)[0] for name in kills[0].target.split(",")]
    assert services == ["user", "transaction", "gateway", "ratelimit"]


def attempt(
    status: str, outcome: Outcome, start: float, end: float, patience: float = 10.0
) -> Attempt:
    return Attempt(0, "transfer", "rest", ["k"], "first", start, patience, end, outcome, status)


def test_server_errors_are_5xx_server_codes_and_lost_answers_not_refusals() -> None:
    assert attempt("503", Outcome.FAILED, 0, 1).server_error
    assert attempt("500", Outcome.FAILED, 0, 1).server_error
    assert attempt("UNAVAILABLE", Outcome.FAILED, 0, 1).server_error
    assert attempt("INTERNAL", Outcome.FAILED, 0, 1).server_error
    assert attempt("DEADLINE_EXCEEDED", Outcome.UNKNOWN, 0, 1).server_error
    assert attempt("timeout", Outcome.UNKNOWN, 0, 1).server_error
    assert not attempt("400", Outcome.REFUSED, 0, 1).server_error
    assert not attempt("409", Outcome.FAILED, 0, 1).server_error
    assert not attempt("FAILED_PRECONDITION", Outcome.REFUSED, 0, 1).server_error
    # A timeout the client chose to be tiny (to lose the answer) is not the server's.
    assert not attempt("timeout", Outcome.UNKNOWN, 0, 0.1, patience=0.1).server_error


def test_errors_are_inside_a_window_until_its_grace_ends() -> None:
    fault = Fault("restart_redis", "redis", gap=0, hold=1, start=10.0, end=12.0)
    attempts = [
        attempt("503", Outcome.FAILED, 9.0, 10.5),  # overlaps the start
        attempt("503", Outcome.FAILED, 16.0, 16.5),  # in the grace (12 + 5)
        attempt("503", Outcome.FAILED, 17.5, 18.0),  # after it
        attempt("503", Outcome.FAILED, 2.0, 3.0),  # before it
        attempt("200", Outcome.OK, 11.0, 11.1),
    ]
    inside, outside, examples, per_fault = classify_server_errors(attempts, [fault], grace=5.0)
    assert (inside, outside) == (2, 2)
    assert [e["start"] for e in examples] == [17.5, 2.0]
    assert (per_fault[0].server_errors, per_fault[0].statuses) == (2, {"503": 2})


def test_an_error_in_two_windows_counts_for_the_later_fault() -> None:
    earlier = Fault("kill:user", "user-1", gap=0, hold=0, start=10.0, end=12.0)
    later = Fault("restart_postgres", "postgres", gap=0, hold=0, start=14.0, end=15.0)
    errors = [attempt("500", Outcome.FAILED, 13.0, 14.5)]
    _, _, _, per_fault = classify_server_errors(errors, [earlier, later], grace=5.0)
    assert [f.server_errors for f in per_fault] == [0, 1]


def test_p99_leaves_out_deliberate_timeouts_and_the_checkers_resends() -> None:
    attempts = [attempt("200", Outcome.OK, 0, 0.01 * n) for n in range(1, 101)]
    attempts.append(attempt("timeout", Outcome.UNKNOWN, 0, 50, patience=0.1))
    resend = attempt("200", Outcome.OK, 0, 60)
    resend.send = "resolution"
    assert round(p99_ms([*attempts, resend])) == 990
