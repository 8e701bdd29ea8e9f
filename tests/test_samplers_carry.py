"""Multistep history carried across jobs (docs/perframe.md, "Sampler history across jobs"): a
per-frame job cut anywhere into two jobs, the second given the first's `Sampler.carried()`, makes
the same frames as the uncut job; frames sitting out calls change nothing for them."""

import pytest
import torch

from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule
from fdm_engine.models.oracle import GaussianProcessOracle, parse_oracle_spec
from fdm_engine.samplers import make_sampler, run_job
from fdm_engine.samplers.history import FrameState

pytestmark = pytest.mark.usefixtures("one_thread")
SCHED = NoiseSchedule(DiffusionConfig())
ORACLE = GaussianProcessOracle(parse_oracle_spec("oracle:periodic:size=2"), SCHED)
MULTISTEP = ["dpm++2m", "dpm++3m", "dpm++2m-sde", "unipc", "unipc-2"]
N = 6


def staggered(sampler) -> torch.Tensor:
    """[rows, 1, 4] timesteps: observed frame 0, then three frames a pyramid apart (frame 3 waits
    two calls at pure noise, frame 2 one), and frame 1 sits out two calls in the middle."""
    grid = sampler.trajectory()  # [N + 1]
    cols = [[-1.0] * (N + 3),
            [*grid[:3], grid[2], grid[2], *grid[3:]],
            [grid[0], *grid, grid[-1]],
            [grid[0], grid[0], *grid]]
    return torch.tensor(cols, dtype=torch.float64).T[:, None, :]


def job(name, levels, x, z, carry=None):
    sampler = make_sampler(name, SCHED, N)
    frames = torch.arange(4)[None]
    observed = torch.tensor([[True, False, False, False]])
    out = run_job(ORACLE, sampler, x, frames, observed, None, levels=levels, step_noise=lambda i: z[i],
                  carry=carry)
    return out, sampler.carried()


@pytest.mark.parametrize("name", MULTISTEP + ["ddim", "ddpm"])
@pytest.mark.parametrize("cut", [1, 3, 5])
def test_cut_job_with_carried_history_is_the_uncut_job(name, cut):
    levels = staggered(make_sampler(name, SCHED, N))
    g = torch.Generator().manual_seed(cut)
    x = torch.randn(1, 4, 1, 2, 2, generator=g, dtype=torch.float64)
    z = torch.randn(len(levels) - 1, 1, 4, 1, 2, 2, generator=g, dtype=torch.float64)
    whole, _ = job(name, levels, x, z)
    first, state = job(name, levels[:cut + 1], x, z)
    second, _ = job(name, levels[cut:], first, z[cut:], carry=state)
    torch.testing.assert_close(second, whole, rtol=1e-10, atol=1e-12)
    if name in MULTISTEP:  # the history matters: restarting at first order does not give these frames
        restarted, _ = job(name, levels[cut:], first, z[cut:])
        assert not torch.allclose(restarted, whole, rtol=1e-6, atol=1e-8)
    else:
        assert state is None


@pytest.mark.parametrize("name", MULTISTEP)
def test_calls_a_frame_sits_out_change_nothing_for_it(name):
    """A lone frame that holds still for two calls mid-trajectory (the model sees it at the same
    point each time) ends where it ends without the pause: e.g. UniPC's pending correction waits."""
    sampler = make_sampler(name, SCHED, N)
    grid = sampler.trajectory()
    paused = torch.tensor([*grid[:3], grid[2], grid[2], *grid[3:]], dtype=torch.float64)[:, None, None]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 1, 2, 2, generator=g, dtype=torch.float64)
    z = torch.randn(N, 1, 1, 1, 2, 2, generator=g, dtype=torch.float64)
    zp = torch.cat([z[:2], z[2:3], z[2:3], z[2:]])  # the pause consumes noise that nothing uses
    none = torch.zeros(1, 1, dtype=torch.bool)
    frame = torch.zeros(1, 1, dtype=torch.long)
    alone = run_job(ORACLE, make_sampler(name, SCHED, N), x, frame, none, None, levels=grid[:, None, None],
                    step_noise=lambda i: z[i])
    held = run_job(ORACLE, sampler, x, frame, none, None, levels=paused, step_noise=lambda i: zp[i])
    torch.testing.assert_close(held, alone, rtol=1e-10, atol=1e-12)


def test_frame_state_round_trips_through_bytes_and_batches():
    a = FrameState({"x0_0": torch.randn(1, 2, 3), "x_last": torch.randn(1, 2, 3).double()},
                   {"lam_0": torch.tensor(1.25, dtype=torch.float64), "count": torch.tensor(2),
                    "pending": torch.tensor(True)})
    data = b"".join(bytes(p) for p in a.payload()) + b"tail"
    back, used = FrameState.from_payload(a.spec(), memoryview(data))
    assert used == len(data) - 4
    for part in ("values", "meta"):
        for k, v in getattr(a, part).items():
            assert getattr(back, part)[k].dtype == v.dtype and torch.equal(getattr(back, part)[k], v)
    batch = FrameState.gather([(1, 2, a)], 2, 3)
    assert batch.values["x0_0"].shape == (2, 3, 1, 2, 3) and batch.meta["count"].shape == (2, 3)
    assert torch.equal(batch.slot(1, 2).values["x0_0"], a.values["x0_0"])
    assert int(batch.meta["count"].sum()) == 2 and not bool(batch.meta["pending"][0].any())
