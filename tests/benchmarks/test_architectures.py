"""benchmarks/architectures.py's counting, protocols and Pareto front (the benchmark itself runs by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mrisr.nets import ESPCN, VDSR

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import architectures  # noqa: E402  (a script folder, not a package)


def test_counted_flops_follow_the_layers_that_ran() -> None:
    net = VDSR(2, features=4, depth=3).eval()
    with architectures.counted_flops(net) as flops, torch.no_grad():
        net(torch.zeros(2, 1, 5, 6))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert flops[0] == 2 * 5 * 6 * sum(2 * 9 * c.in_channels * c.out_channels for c in convs)
    post = ESPCN(2, scale=4, features=[4, 4]).eval()
    with architectures.counted_flops(post) as flops, torch.no_grad():
        post(torch.zeros(1, 1, 5, 6))  # every convolution on the 5 x 6 acquired grid
    expected = 2 * 30 * (25 * 1 * 4 + 9 * 4 * 4 + 9 * 4 * 4)
    assert flops[0] == expected


def test_every_family_has_a_protocol_and_the_in_plane_class_grows_both_in_plane_axes() -> None:
    for family in architectures.FAMILIES:
        thick = architectures.bench_protocol(family, "thick-x4")
        assert thick.acquisition == architectures.bench_protocol("vdsr", "thick-x4").acquisition
        assert thick.network.name == ("srresnet" if family == "srgan" else family)
        assert (thick.train.adversarial is not None) == (family == "srgan")
        if architectures.applies(family, "inplane-x2"):
            inplane = architectures.bench_protocol(family, "inplane-x2")
            assert inplane.network.scale == (2, 2) and inplane.acquisition.in_plane is not None
    assert not architectures.applies("vdsr", "inplane-x2")


def test_pareto_front() -> None:
    points = [(1.0, 1.0), (2.0, 0.5), (3.0, 2.0), (0.5, 0.2), (3.0, 1.5)]
    assert architectures.pareto(points) == [0, 2, 3]
