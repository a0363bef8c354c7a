"""The profile summary's arithmetic on a hand-made kernel timeline (no device needed)."""

from benchmarks import profile_update


def test_summary_per_update_totals_gaps_and_categories():
    # (op, start ns, duration ns): two updates, three kernels each, 1 µs gaps.
    timeline = []
    clock = 0
    for _ in range(2):
        for op, duration in (("convolution.3", 4000), ("dot.1", 2000), ("loop_fusion", 1000)):
            timeline.append((op, clock, duration))
            clock += duration + 1000
    summary = profile_update.summarise(timeline, updates=2, top=2)
    assert summary["kernels_per_update"] == 3
    assert summary["kernel_busy_ms_per_update"] == 0.007
    assert summary["idle_ms_per_update"] == 0.0025  # 5 gaps of 1 µs over 2 updates
    assert summary["by_category_ms_per_update"] == {
        "convolution": 0.004, "matrix product": 0.002, "other": 0.001}
    assert [row["op"] for row in summary["top_ops"]] == ["convolution.3", "dot.1"]
    assert summary["top_ops"][0]["calls_per_update"] == 1


def test_empty_timeline_summarises_to_nothing():
    assert profile_update.summarise([], updates=3, top=5) == {}
