"""Issue 13: `probe` enters only the network namespace this lab gives a workload, whatever netns
an agent reported for it (it runs as root, with nsenter). No root needed."""

from __future__ import annotations

import pytest

from stockade.errors import LabError, ValidationError
from stockade.lab import naming


def test_probe_enters_only_this_labs_netns_for_the_workload() -> None:
    from stockade.lab.probe import check_workload_netns

    good = naming.workload_netns("stk", "hv1", "shop", "web-1")
    assert check_workload_netns(good, "stk", "hv1", "shop", "web-1") == good
    for reported in ("/proc/1/ns/net", "../../proc/1/ns/net", "stk-hv1", "stk-fab",
                     naming.workload_netns("stk", "hv1", "shop", "db-1"),     # another workload's
                     naming.workload_netns("other", "hv1", "shop", "web-1"),  # another lab's
                     naming.workload_netns("stk", "hv2", "shop", "web-1"),    # another host's
                     ""):
        with pytest.raises(ValidationError) as caught:
            check_workload_netns(reported, "stk", "hv1", "shop", "web-1")
        [problem] = caught.value.problems
        assert (problem.object_ref, problem.field) == ("Workload shop/web-1", "status.netns")


def test_probe_never_joins_a_path_as_a_netns_name() -> None:
    from stockade.lab.probe import _nsenter

    for name in ("/proc/1/ns/net", "../x", ".hidden", ""):
        with pytest.raises(LabError, match="not a network namespace name"):
            _nsenter(name, ["true"])
