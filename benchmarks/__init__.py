"""Side-by-side benchmarks of lifeline and blackbox_exporter, on loopback only.

See docs/performance.md.
"""
