"""One window grid: prepare's patch counts, the ISPRS sampler and predict agree."""

import pytest

from semimtl_geo.data.isprs import GridSpec
from semimtl_geo.data.isprs.prepare import patch_count
from semimtl_geo.data.isprs.samplers import TileGrid, grid_windows
from semimtl_geo.grid import grid_count, grid_starts, grid_stride
from semimtl_geo.inference.windows import make_grid


def test_stride_at_512_px_and_10_percent_overlap_is_460():
    # 512 * 0.9 = 460.8: flooring keeps the overlap at least 10 % (rounding gave 461)
    assert grid_stride(512, 0.1) == 460 == GridSpec(512, 0.1).stride
    assert grid_stride(512, 0.5) == 256 and grid_stride(3, 0.9) == 1


@pytest.mark.parametrize("size", [(512, 512), (1000, 1500), (6000, 6000), (2557, 1887)])
@pytest.mark.parametrize(("patch", "overlap"), [(512, 0.5), (512, 0.1), (384, 0.25)])
def test_prepare_counts_the_grid_that_predict_runs(size, patch, overlap):
    height, width = size
    grid = make_grid(height, width, patch, overlap)
    assert patch_count(width, height, patch, overlap) == grid.num_windows
    stride = GridSpec(patch, overlap).stride
    assert tuple(grid_starts(height, patch, stride)) == grid.row_starts
    assert tuple(grid_starts(width, patch, stride)) == grid.col_starts
    windows = grid_windows(TileGrid("t", width, height, (1, 0, 0, 0, -1, 0)),
                           GridSpec(patch, overlap))
    assert len(windows) == grid.num_windows


@pytest.mark.parametrize(("length", "window", "stride"),
                         [(10, 3, 2), (10, 10, 4), (5, 8, 2), (1000, 512, 460), (7, 2, 0)])
def test_grid_count_is_the_number_of_starts(length, window, stride):
    starts = grid_starts(length, window, stride)
    assert grid_count(length, window, stride) == len(starts)
    assert starts[0] == 0 and starts[-1] == max(0, length - window)
    assert starts == sorted(set(starts))
