"""SIGKILL at random moments during first and incremental builds: nothing lost, nothing doubled, nothing redone."""
import pytest

from tests.kill_runs import kill_test

pytestmark = pytest.mark.slow  # every test here trains, kills or serves: `make test-fast` leaves them out


KILLS = 8  # four in first runs, four in incremental ones; `python -m tests.kill_runs --kills 200` is the long run


def test_builds_killed_at_random_moments_lose_nothing(tmp_path):
    tally = kill_test(tmp_path, kills=KILLS, images=400, seed=1)
    assert tally.kills == KILLS and tally.runs_completed >= KILLS, tally  # each kill followed by a completed run
    assert (tally.lost, tally.phantom, tally.duplicates, tally.redone, tally.unopenable) == (0, 0, 0, 0, 0), tally
    assert tally.not_self_first == 0, tally
    print(tally)
