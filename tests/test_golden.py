"""Golden scenario tables (tests/golden/*.txt): commands in, events and books out."""

import pytest

from golden import Runner, load_scenarios

SCENARIOS = load_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_golden(scenario):
    Runner(scenario).run()


def test_every_golden_file_has_scenarios():
    assert len(SCENARIOS) >= 40


def test_event_encoders_agree_with_the_generic_path():
    """Codec.event's per-class encoders give exactly (values and key order)
    what the table-driven Codec.event_generic gives, for every event of
    every golden scenario; together the scenarios emit every event class."""
    from golden import TS_STEP_NS

    from jex.core.codec import _EVENT_ENCODERS

    seen: set[type] = set()

    class Checking(Runner):
        def send(self, obj):  # Runner.send, checking each event's two encodings
            command, ts = self.codec.command(obj)
            self.seq += 1
            self.ts = ts if ts is not None else self.ts + TS_STEP_NS
            out = []
            for event in self.engine.apply(command, self.seq, self.ts):
                seen.add(type(event))
                encoded = self.codec.event(event)
                assert list(encoded.items()) == list(self.codec.event_generic(event).items()), event
                out.append(encoded)
            return out

    for scenario in SCENARIOS:
        Checking(scenario).run()
    assert seen == set(_EVENT_ENCODERS), set(_EVENT_ENCODERS) - seen
