"""The broker warm-up's stop rule (no servers)."""

from bench.sections.warmup import settled


def test_the_broker_warm_up_stops_when_two_bursts_agree() -> None:
    assert not settled([])
    assert not settled([95.5])
    assert not settled([95.5, 49.1, 32.7, 27.3, 53.6])  # a JVM still compiling: costs jump around
    assert settled([95.5, 20.0, 18.2])  # within 15 %
    assert not settled([0.0, 0.0])  # nothing measured is not settled
