"""The shipped demo model: it makes bouncing balls, not noise, and its metadata is its recipe."""

import numpy as np
import pytest

from fdm_engine.checkpoint import load_checkpoint
from fdm_engine.datasets.procedural.balls import PALETTE
from fdm_engine.demo import DEMO_CHECKPOINT, DEMO_DATA, DEMO_PRESET, held_out_video, side_by_side
from fdm_engine.evaluation.video_metrics import psnr
from fdm_engine.models.fdm_unet import FDMUNetConfig
from trainers import TrainConfig
from trainers.config import RESUME_FREE
from trainers.resolve import resolve

pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = np.concatenate([PALETTE, [[0, 0, 0]]]).astype(np.float32)  # the balls' colours and the background


def palette_fraction(frames: np.ndarray, tol: float = 40.0) -> float:
    """Share of pixels within `tol` (0-255 units, Euclidean RGB) of a ball colour or the background:
    about 0.95 for real frames (antialiased edges are the rest), about 0.1 for uniform noise."""
    d = np.linalg.norm(frames[..., None, :].astype(np.float32) - COLOURS, axis=-1).min(-1)
    return float((d <= tol).mean())


@pytest.fixture(scope="module")
def meta():
    return load_checkpoint(DEMO_CHECKPOINT).extra


def test_shipped_checkpoint_is_small_and_loads():
    assert DEMO_CHECKPOINT.stat().st_size <= 20e6
    loaded = load_checkpoint(DEMO_CHECKPOINT)
    assert loaded.model_name == "fdm" and loaded.model.image_size == DEMO_DATA["size"]


def test_metadata_is_the_recipe(meta):
    """The checkpoint's training config is what the demo preset resolves to today (round-tripped
    through JSON), and its data manifest is the documented `fdm data make` command."""
    recorded = TrainConfig.from_dict(meta["train_config"])
    assert TrainConfig.from_dict(recorded.to_dict()) == recorded
    today = resolve(TrainConfig(preset=DEMO_PRESET, data_dir=recorded.data_dir, run_dir=recorded.run_dir))
    fixed = {k: v for k, v in today.to_dict().items() if k not in RESUME_FREE + ("model_config",)}
    assert fixed == {k: v for k, v in recorded.to_dict().items() if k not in RESUME_FREE + ("model_config",)}
    # Model configs compare as configs: fields added since the run take their defaults.
    assert FDMUNetConfig.from_dict(today.model_config) == FDMUNetConfig.from_dict(recorded.model_config)
    data = meta["data"]
    assert (data["name"], data["length"], data["size"], data["seed"]) == \
        (DEMO_DATA["name"], DEMO_DATA["length"], DEMO_DATA["size"], DEMO_DATA["seed"])
    assert data["splits"] == {"train": DEMO_DATA["num_videos"], "test": DEMO_DATA["num_test"]}
    assert meta["step"] > 0 and meta["train_wall_s"] > 0


def test_held_out_video_is_new_and_repeatable(meta):
    from fdm_engine.datasets.procedural.make import SPLIT_IDS

    a, state = held_out_video(meta, 20)
    b, _ = held_out_video(meta, 20)
    assert np.array_equal(a, b) and a.shape == (20, 32, 32, 3)
    assert 2 not in SPLIT_IDS.values()  # the demo's stream is neither train nor test
    assert palette_fraction(a) > 0.9
    both = side_by_side(a, b)
    assert both.shape == (20, 32, 66, 3) and np.array_equal(both[:, :, :32], a)


def test_demo_model_makes_balls_not_noise(meta, tmp_path):
    """A short autoregressive sample given 10 real frames: its pixels take the dataset's colours
    (palette fraction at least 0.8 x that of the real frames; noise scores about 0.1) and its first
    predicted frames are closer to the truth than noise is (PSNR at least 5 dB above noise's, about 4.8 dB)."""
    from fdm_engine.sample_config import SampleConfig
    from fdm_engine.sample_run import run_sampling
    from fdm_engine.video_io import write_video

    real, _ = held_out_video(meta, 20, seed=1)
    write_video(tmp_path / "real.npy", real)
    cfg = SampleConfig(model=str(DEMO_CHECKPOINT), scheme="autoreg", n_obs=10, length=20, steps=8,
                       obs=str(tmp_path / "real.npy"), formats=("npz",))
    run_sampling(cfg, tmp_path / "out", progress=False)
    with np.load(tmp_path / "out" / "video_0000.npz") as npz:
        fake = npz["frames"]
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    assert palette_fraction(fake[10:]) >= 0.8 * palette_fraction(real[10:])
    assert palette_fraction(noise) < 0.2
    assert psnr(fake[10:15], real[10:15]).mean() >= psnr(noise[10:15], real[10:15]).mean() + 5


def test_side_by_side_png_labels_its_rows_and_columns():
    """Real above generated, each frame once at twice its size, columns in time order, a name left
    of each row and a frame number above each column."""
    from fdm_engine.demo import labelled_strip

    t, h, w = 30, 8, 6
    real = np.zeros((t, h, w, 3), np.uint8)
    fake = np.zeros((t, h, w, 3), np.uint8)
    real[..., 0] = fake[..., 1] = (5 + 8 * np.arange(t))[:, None, None]  # one colour per frame, no grey
    image = labelled_strip({"real": real, "generated": fake}, n_obs=4, max_frames=12)
    idx = np.unique(np.rint(np.linspace(0, t - 1, 12)).astype(int))
    boxes = {}
    for row, video in enumerate((real, fake)):
        for k in idx:
            colour = video[k, 0, 0]
            ys, xs = np.nonzero((image == colour).all(-1))
            assert len(ys) == 4 * h * w, (row, k)  # this frame alone, enlarged 2x, whole
            assert ys.max() - ys.min() == 2 * h - 1 and xs.max() - xs.min() == 2 * w - 1
            boxes[row, k] = ys.min(), xs.min()
    assert all(boxes[0, k][0] + 2 * h <= boxes[1, k][0] for k in idx), "real above generated"
    assert [boxes[0, k][1] for k in idx] == sorted(boxes[0, k][1] for k in idx), "time runs left to right"
    assert all(boxes[0, k][1] == boxes[1, k][1] for k in idx), "a column shows one time"
    ink = (image.min(-1) == image.max(-1)) & (image[..., 0] < 200)  # grey: text (no frame pixel is grey)
    first_x, first_y = boxes[0, idx[0]][1], boxes[0, idx[0]][0]
    for row in (0, 1):
        y = boxes[row, idx[0]][0]
        assert ink[y:y + 2 * h, :first_x].any(), f"row {row} has its name on the left"
    xs = [boxes[0, k][1] for k in idx] + [image.shape[1]]
    for k, x0, x1 in zip(idx, xs, xs[1:]):
        cols = np.nonzero(ink[:first_y, x0:x1].any(0))[0]
        assert len(cols) and cols.max() < x1 - x0 - 1, f"frame {k}'s number is above it, clear of the next"
