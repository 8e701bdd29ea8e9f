"""One sampling path: training-time samples are what `fdm sample` makes from the checkpoint."""

import numpy as np
import pytest

from cli_helpers import run_fdm
from fdm_engine.datasets import make_dataset
from fdm_engine.video_io import read_video
from trainers import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("model", ["vdm"])
def test_training_samples_equal_fdm_sample_of_the_checkpoint_for_a_nonzero_seed(model, tmp_path, capsys):
    """vdm samples through reconstruction guidance, whose noise is keyed by the run's seed."""
    data = tmp_path / "datasets" / "bouncing-balls"
    make_dataset("bouncing-balls", data, num_videos=2, num_test=1, length=16, size=8, seed=0)
    seed = 7
    cfg = TrainConfig.from_dict(dict(dataset="bouncing-balls", data_dir=str(data), model=model, preset="tiny",
                                     run_dir=str(tmp_path / "run"), steps=1, batch_size=2, save_every=1,
                                     log_every=1, sample_every=1, sample_steps=2, sample_length=9,
                                     sample_n_obs=3, seed=seed, clip_length=6, model_config={"image_size": 8}))
    result = train(cfg, progress=False)
    trained = read_video(tmp_path / "run" / "samples" / "step_0000001" / "video_0000.mp4")
    c = result.config
    common = ["sample", result.checkpoint, "--scheme", c.sample_scheme, "--n-obs", "3", "--length", "9",
              "--steps", "2", "--sampler", c.sample_sampler, "--obs", "bouncing-balls:test", "--data-dir", data,
              "--batch-size", "1", "--format", "mp4", "--quiet"]
    videos = {}
    for s in (seed, 0):
        code, _, err = run_fdm(capsys, *common, "--seed", s, "--out", tmp_path / f"s{s}")
        assert code == 0, err
        videos[s] = read_video(tmp_path / f"s{s}" / "video_0000.mp4")
    assert np.array_equal(videos[seed], trained)
    assert not np.array_equal(videos[0][3:], trained[3:]), "the seed matters (so the check above can fail)"


def test_a_scheme_the_model_cannot_run_is_refused_before_anything_is_written(tmp_path, capsys):
    """RaMViD takes consecutive frames only: hierarchy-2's jobs (with gaps) are refused at build,
    naming the scheme, with no state left in OUT to block the corrected command."""
    import torch

    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.models.ramvid_unet import RaMViDUNet, RaMViDUNetConfig

    torch.manual_seed(0)
    net = RaMViDUNet(RaMViDUNetConfig(image_size=8, channels=3, base_channels=8, channel_mult=(1,),
                                      num_res_blocks=1, attention_resolutions=(), num_heads=1, num_frames=6))
    ckpt = save_checkpoint(tmp_path / "ramvid.safetensors", net, DiffusionConfig())
    np.save(tmp_path / "given.npy", np.zeros((12, 8, 8, 3), np.uint8))
    out = tmp_path / "o"
    common = ["sample", ckpt, "--obs", tmp_path / "given.npy", "--n-obs", "3", "--steps", "2", "--format", "npz",
              "--out", out, "--quiet"]
    code, _, err = run_fdm(capsys, *common, "--scheme", "hierarchy-2")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "--scheme hierarchy-2: RaMViD needs consecutive frame indices" in lines[0] and "autoreg" in lines[0]
    assert not out.exists()
    code, _, err = run_fdm(capsys, *common, "--scheme", "autoreg")  # the corrected command, no --resume
    assert code == 0, err
    assert np.load(out / "video_0000.npz")["frames"].shape == (12, 8, 8, 3)
