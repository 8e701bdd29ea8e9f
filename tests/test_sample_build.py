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
