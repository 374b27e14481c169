"""Golden scenario tables (tests/golden/*.txt): commands in, events and books out."""

import pytest

from golden import Runner, load_scenarios

SCENARIOS = load_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_golden(scenario):
    Runner(scenario).run()


def test_every_golden_file_has_scenarios():
    assert len(SCENARIOS) >= 40
