"""Differential tests: every pass, alone and in the -O2 pipeline, keeps what
random graphs compute (reference interpreter before and after)."""
import pytest
from hypothesis import given

from graph_strategies import elementwise_graphs
from passes_util import assert_same_results, check_groups, mixed_graphs, run_passes

PIPELINES = ["fold", "dce", "cse", "simplify", "fuse-layers", "fuse", "fold,dce,cse,simplify,fuse-layers,fuse"]


@pytest.mark.parametrize("passes", PIPELINES)
@given(g=elementwise_graphs(max_nodes=10))
def test_passes_preserve_results_on_random_elementwise_graphs(passes, g):
    after = run_passes(g.copy(), passes)
    check_groups(after)
    assert_same_results(g, after)


@pytest.mark.parametrize("passes", PIPELINES)
@given(g=mixed_graphs())
def test_passes_preserve_results_on_random_mixed_graphs(passes, g):
    after = run_passes(g.copy(), passes)
    check_groups(after)
    # tighter than f16's precision (5e-4), so a pass that dropped a cast through f16 fails;
    # looser than f32's, since an exp downstream amplifies a last-bit rounding difference
    assert_same_results(g, after, rtol=1e-4, atol=1e-6)
