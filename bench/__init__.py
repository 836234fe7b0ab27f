"""Benchmarks of the Smartflow runtime and operator on the local stack.

``python -m bench.run [--only NAME] [--smoke]`` runs the sections (relay, consumer, latency,
scaling, operator, profile), each writing ``bench/results/<name>.json``; ``python -m bench.report``
turns those files (and only those) into ``bench/REPORT.md`` with plots in ``bench/plots/``.
"""
