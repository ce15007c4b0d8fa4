"""Figure details of issue 17, point 6: y-labels, colourbars / legend titles for per-point colours,
per-set markers, 3-D tick labels that do not overlap; progress output off a terminal."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import dlmppl.diagnostics as D  # noqa: E402
from dlmppl._progress import progress_bar  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _unit(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1).numpy()


def test_plot_elbo_takes_a_ylabel():
    assert D.plot_elbo(np.arange(1.0, 50.0)).get_ylabel() == "loss (−ELBO)"
    ax = D.plot_elbo(np.arange(1.0, 50.0), ylabel="W₂² (sliced)", xlabel="epoch")
    assert ax.get_ylabel() == "W₂² (sliced)" and ax.get_xlabel() == "epoch"


def test_plot_sphere_colourbar_for_per_point_values_and_per_set_markers(tmp_path):
    x = _unit(50)
    vals = x[:, 2]
    ax = D.plot_sphere([x, x[:1]], colors=[vals, "red"], labels=["draws", "truth"], s=[8, 300],
                       markers=["o", "+"], colorbar_label="height z", path=tmp_path / "s.png")
    cbars = [a for a in ax.figure.axes if a is not ax]
    assert len(cbars) == 1 and cbars[0].get_ylabel() == "height z"
    draws, truth = ax.collections[-2], ax.collections[-1]
    np.testing.assert_allclose(draws.get_array(), vals)
    assert truth.get_sizes()[0] == 300 and draws.get_sizes()[0] == 8
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["draws", "truth"]
    # a single colour per set: no colourbar
    ax2 = D.plot_sphere([x], colors=["C1"])
    assert len(ax2.figure.axes) == 1
    # on a caller's panel the caller owns the colourbar (a grid shares one), unless asked for
    fig, (a, b) = plt.subplots(1, 2)
    D.plot_sphere([x], colors=[vals], ax=a)
    assert len(fig.axes) == 2
    D.plot_sphere([x], colors=[vals], ax=b, colorbar=True, colorbar_label="z")
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="per set"):
        D.plot_sphere([x, x], markers=["o"])


def _overlaps(boxes):
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]


@pytest.mark.parametrize("size", [2.5, 5.0])
def test_plot_sphere_3d_tick_labels_do_not_overlap(size):
    """In a small panel (a grid of figures) matplotlib's default 7 ticks per axis run into each other."""
    fig = plt.figure(figsize=(size, size))
    ax = D.plot_sphere(_unit(30), projection="3d", ax=fig.add_subplot(111, projection="3d"))
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = []
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
        assert len(labels) == 3
        boxes += [t.get_window_extent(r) for t in labels] + [axis.label.get_window_extent(r)]
    # within an axis and across axes (the corner where the x and y axes meet)
    assert not _overlaps(boxes)


def test_plot_poincare_disk_legend_title_and_colourbar():
    z = np.random.default_rng(0).uniform(-0.5, 0.5, (40, 2))
    depth = np.arange(40) % 4
    ax = D.plot_poincare_disk(z, labels=depth, legend_title="tree depth")
    leg = ax.get_legend()
    assert leg.get_title().get_text() == "tree depth" and len(leg.get_texts()) == 4
    ax2 = D.plot_poincare_disk(z, colors=np.linalg.norm(z, axis=1), colorbar_label="radius")
    cbars = [a for a in ax2.figure.axes if a is not ax2]
    assert len(cbars) == 1 and cbars[0].get_ylabel() == "radius"


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_few_log_lines_off_a_terminal():
    out = io.StringIO()
    seen = list(progress_bar(range(100), desc="SVI", file=out, num_lines=5))
    assert seen == list(range(100))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and 4 <= len(lines) <= 6
    assert lines[0].startswith("SVI: 20/100 (20%)") and lines[-1].startswith("SVI: 100/100 (100%)")
    out = io.StringIO()
    with progress_bar(total=7, desc="SBC", file=out) as bar:
        for _ in range(7):
            bar.update()
        bar.set_postfix(loss=1.5)
    assert out.getvalue().splitlines()[-1].startswith("SBC: 7/7 (100%)") and "loss=1.5" in out.getvalue()
    from tqdm.std import tqdm

    assert isinstance(progress_bar(range(3), file=io.StringIO(), disable=True), tqdm)
    tty = _Tty()
    bar = progress_bar(range(3), desc="x", file=tty)
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2] and "\r" in tty.getvalue()
