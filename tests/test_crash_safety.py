"""SIGKILL at random moments during first and incremental builds: nothing lost, nothing doubled, nothing redone."""
from tests.kill_runs import kill_test


def test_builds_killed_at_random_moments_lose_nothing(tmp_path):
    tally = kill_test(tmp_path, kills=20, images=400, seed=1)
    assert tally.kills == 20 and tally.runs_completed >= 20, tally  # each kill followed by a completed run
    assert (tally.lost, tally.phantom, tally.duplicates, tally.redone, tally.unopenable) == (0, 0, 0, 0, 0), tally
    assert tally.not_self_first == 0, tally
    print(tally)
