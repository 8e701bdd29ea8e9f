"""SampleConfig: the one place of sampling defaults, its JSON round trip, and its refusals."""

import dataclasses

import pytest

from cli_helpers import run_fdm
from fdm_engine.errors import FdmError
from fdm_engine.sample_config import SampleConfig, option_default
from fdm_engine.samplers import SamplerConfig, make_sampler
from fdm_engine.diffusion import NoiseSchedule


def test_json_round_trip_keeps_every_field():
    cfg = SampleConfig(model="oracle:ou", scheme="adaptive-hierarchy-3", n_obs=4, length=40, max_frames=8,
                       step_size=3, sampler="ddim", steps=7, spacing="karras", eta=0.5, num_videos=3,
                       batch_size=5, videos_in_flight=2, seed=2**63 + 5, obs="x.mp4", formats=("gif", "npz"),
                       save_raw=True, fps=4, precision="bf16", device="cpu")
    again = SampleConfig.from_json(cfg.to_json())
    assert again == cfg and isinstance(again.formats, tuple)
    assert {f.name for f in dataclasses.fields(SampleConfig)} == set(cfg.to_dict())


def test_sampler_defaults_come_from_the_sample_config():
    """make_sampler and SamplerConfig state no defaults of their own."""
    s = make_sampler(option_default("sampler"), NoiseSchedule())
    assert (s.config.steps, s.config.spacing, s.config.eta) == (SampleConfig.steps, SampleConfig.spacing,
                                                                 SampleConfig.eta)
    assert SamplerConfig() == SamplerConfig(SampleConfig.steps, SampleConfig.spacing, SampleConfig.eta)


@pytest.mark.parametrize("changes,needle", [
    (dict(eta=float("nan")), "--eta nan"),
    (dict(eta=-1.0), "--eta -1.0"),
    (dict(formats=()), "--format ''"),
    (dict(formats=("mp4", "avi")), "--format avi"),
    (dict(max_frames=0), "--max-frames 0"),
    (dict(seed=2**64), f"--seed {2**64}"),
    (dict(seed=-1), "--seed -1"),
    (dict(steps=0), "--steps 0"),
    (dict(num_videos=0), "--num-videos 0"),
    (dict(batch_size=-2), "--batch-size -2"),
    (dict(videos_in_flight=-1), "--videos-in-flight -1"),
    (dict(precision="fp8"), "--precision 'fp8'"),
    (dict(device="gpu7"), "--device 'gpu7'"),
    (dict(scheme="zigzag"), "zigzag"),
    (dict(sampler="euler-magic"), "euler-magic"),
])
def test_bad_values_are_refused_where_the_config_is_made(changes, needle):
    with pytest.raises(FdmError) as e:
        SampleConfig(**changes)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("args,needle", [
    (["--eta", "nan"], "--eta nan"),
    (["--format", ""], "--format"),
    (["--max-frames", "0"], "--max-frames 0"),
    (["--seed", str(2**64)], "--seed"),
    (["--steps", "0"], "--steps 0"),
    (["--precision", "fp8"], "--precision"),
])
def test_cli_turns_them_into_one_line_and_exit_2(args, needle, tmp_path, capsys):
    code, _, err = run_fdm(capsys, "sample", "oracle:ou", "--n-obs", "2", "--length", "10", "--out", tmp_path / "o",
                           "--quiet", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,needles", [
    # per-frame settings with a scheme that reads none of them: named with the schemes that do
    (["--scheme", "autoreg", "--lookahead", "--partitions", "3", "--block-size", "4"],
     ["--scheme autoreg", "--lookahead (fifo only)", "--partitions 3 (fifo only)", "--block-size 4 (ar-step only)"]),
    (["--scheme", "fifo", "--ar-step", "0"], ["--scheme fifo", "--ar-step 0 (ar-step only)"]),
    (["--scheme", "df-autoregressive", "--uncertainty-scale", "2"],
     ["--uncertainty-scale 2 (df-pyramid and df-trapezoid only)"]),
    (["--history-drop", "keep-nearest:2"], ["--history-drop keep-nearest:2", "--history-guidance"]),
    (["--history-drop", "keep-nearest:2", "--history-guidance", "0"], ["--history-drop keep-nearest:2"]),
    (["--spacing", "{ts}", "--steps", "25"], ["--steps 25", "holds 3 timesteps"]),
])
def test_flags_that_would_change_nothing_are_refused(args, needles, tmp_path, capsys):
    ts = tmp_path / "ts.json"
    ts.write_text("[900, 500, 100]")
    args = [str(ts) if a == "{ts}" else a for a in args]
    code, _, err = run_fdm(capsys, "sample", "oracle:ou", "--n-obs", "2", "--length", "10", "--out", tmp_path / "o",
                           "--quiet", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and all(n in lines[0] for n in needles), err
    assert not (tmp_path / "o").exists()


def test_flags_a_scheme_reads_and_defaults_stay_accepted(tmp_path):
    ts = tmp_path / "ts.json"
    ts.write_text("[900, 500, 100]")
    for changes in (dict(scheme="fifo", lookahead=True, partitions=3), dict(scheme="ar-step", block_size=2, ar_step=0),
                    dict(scheme="df-pyramid", uncertainty_scale=0.5), dict(scheme="df-trapezoid", uncertainty_scale=2.0),
                    dict(history_guidance=1.5, history_drop="keep-nearest:2"),
                    dict(spacing=str(ts)), dict(spacing=str(ts), steps=3),  # the file's own count, or the default
                    dict(scheme="autoreg", **{f: getattr(SampleConfig, f) for f in ("uncertainty_scale", "partitions",
                                                                                   "lookahead", "block_size", "ar_step")})):
        SampleConfig(**changes)
