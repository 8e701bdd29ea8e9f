"""`fdm report`: the page's files against the runs they show, bad inputs, and the page in a real
browser (headless Chromium: durations, playback, synchronised controls, no console errors)."""

from __future__ import annotations

import json
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from browser import ARTIFACTS, chromium, console_errors, missing  # noqa: F401  (chromium: a fixture)
from cli.main import main
from cli_helpers import run_fdm
from fdm_engine.report import media
from fdm_engine.video_io import read_video, write_video

pytestmark = pytest.mark.usefixtures("one_thread")

ORACLE = "oracle:periodic:lengthscale=4,period=24,weight=0.8,size={size},channels=3"
LENGTH, N_OBS = 16, 4


def fdm(*argv) -> None:
    """`fdm ARGV` in-process for module fixtures (no capsys there); fails the test on exit != 0."""
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        assert not e.code, f"fdm {' '.join(map(str, argv))} exited {e.code}"


def sample(out: Path, scheme="hierarchy-2", fps=8, size=8, formats="mp4,npz,png", *extra) -> Path:
    fdm("sample", ORACLE.format(size=size), "--scheme", scheme, "--n-obs", N_OBS, "--length", LENGTH,
        "--max-frames", 8, "--steps", 2, "--spacing", "logsnr", "--num-videos", 2, "--fps", fps, "--format", formats,
        "--out", out, "--quiet", *extra)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two oracle samples folders: hierarchy-2 at 4 fps and autoreg at 2 fps, 2 videos of 16 frames each
    (seconds long, so that a busy machine's browser still sees them playing)."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture does for tests (module fixtures run before it)
    try:
        return sample(root / "hier", "hierarchy-2", 4), sample(root / "auto", "autoreg", 2)
    finally:
        torch.set_num_threads(threads)


def report(capsys, *argv) -> tuple[int, str, str]:
    return run_fdm(capsys, "report", *argv, "--quiet")


class Page(HTMLParser):
    """The attributes of every <video>, <img>, <a>, <link> and <script> of a page, and its text."""

    def __init__(self, path: Path):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(path.read_text())

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())

    def links(self) -> list[str]:
        return [a[k] for t, a in self.tags for k in ("src", "href") if k in a]


def videos_of(index: Path) -> list[Path]:
    return [index.parent / v["src"] for v in Page(index).all("video")]


# ------------------------------------------------------------------------------------ samples


def test_samples_page_copies_fdm_videos_bit_exact_with_given_frames_scheme_and_stats(runs, tmp_path, capsys):
    hier, _ = runs
    code, out, err = report(capsys, hier, "--out", tmp_path / "rep")
    assert code == 0, err
    index = tmp_path / "rep" / "index.html"
    assert f"wrote {index}" in out
    page = Page(index)
    for link in page.links():
        assert not link.startswith(("/", "file:", "http")) and ".." not in link, f"not relative: {link}"
        assert link.startswith(("#", "data:")) or (index.parent / link).is_file(), f"missing: {link}"

    plan = json.loads((hier / "plan.json").read_text())
    videos = videos_of(index)
    assert len(videos) == 2
    for k, path in enumerate(videos):
        info = media.probe(path)
        assert (info.codec, info.pix_fmt, info.frames, info.fps) == ("h264", "yuv420p", LENGTH, 4)
        # fdm's writer already makes browser-ready mp4: copied, so the decoded frames are identical.
        np.testing.assert_array_equal(read_video(path), read_video(hier / f"video_{k:04d}.mp4"))

    # The given frames, as a strip: the npz's first n_obs frames side by side, losslessly.
    strips = [index.parent / i["src"] for i in page.all("img") if "given" in i["src"]]
    assert len(strips) == 2
    with np.load(hier / "video_0001.npz") as z:
        given = z["frames"][:N_OBS]
    np.testing.assert_array_equal(read_video_png(strips[1]), np.concatenate(list(given), axis=1))
    assert any("scheme" in i["src"] for i in page.all("img"))
    text = page.plain
    assert f"{plan['nfe']} ({plan['network_calls']} network calls)" in text
    assert f"rounds {plan['rounds']}" in text and f"jobs {len(plan['jobs'])}" in text
    fps = (LENGTH - N_OBS) * 2 / plan["wall_s"]
    assert f"frames / s {fps:.2f}" in text and "dpm++2m, 2 steps (logsnr)" in text


def read_video_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("formats", ["npz", "gif"])
def test_npz_and_gif_samples_of_odd_size_are_encoded_for_browsers(formats, tmp_path, capsys):
    src = sample(tmp_path / "s", "autoreg", 5, 7, formats)
    code, _, err = report(capsys, src, "--out", tmp_path / "rep")
    assert code == 0, err
    for k, path in enumerate(videos_of(tmp_path / "rep" / "index.html")):
        info = media.probe(path)
        assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 8, 8)
        assert (info.frames, info.fps) == (LENGTH, 5)
        if formats == "npz":
            with np.load(src / f"video_{k:04d}.npz") as z:
                want = z["frames"]
        else:
            want = read_video(src / f"video_{k:04d}.gif")
        got = read_video(path)[:, :7, :7]  # the odd size padded to even by repeating the edge
        assert mean_error(got, want) <= writer_error(want, tmp_path) + 1


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def writer_error(frames: np.ndarray, tmp: Path) -> float:
    """What fdm's own mp4 writer loses on these frames: H.264 with 4:2:0 chroma is far from
    lossless on 8-pixel frames (10-30 grey levels on noise), so that is the reference."""
    write_video(tmp / "reference.mp4", frames, fps=10)
    return mean_error(read_video(tmp / "reference.mp4")[:, :frames.shape[1], :frames.shape[2]], frames)


def test_real_video_beside_the_generated_one_when_obs_is_a_file(tmp_path, capsys):
    """--obs FILE: the report shows that file's frames (the truth) beside each generated video."""
    t = np.linspace(0, 1, LENGTH)[:, None, None, None]
    yy, xx = np.mgrid[0:8, 0:8][..., None] / 7
    truth = np.clip(255 * (0.5 + 0.5 * np.sin(6 * t + 3 * xx + 2 * yy + np.arange(3))), 0, 255).astype(np.uint8)
    write_video(tmp_path / "truth.npy", truth)
    src = sample(tmp_path / "s", "hierarchy-2", 8, 8, "mp4,npz", "--obs", tmp_path / "truth.npy")
    code, _, err = report(capsys, src, "--out", tmp_path / "rep")
    assert code == 0, err
    index = tmp_path / "rep" / "index.html"
    real = [p for p in videos_of(index) if p.name.startswith("real_")]
    assert len(real) == 2 and "real videos: " + str(tmp_path / "truth.npy") in Page(index).plain
    for path in real:
        frames = read_video(path)
        assert frames.shape == truth.shape
        assert mean_error(frames, truth) <= writer_error(truth, tmp_path) + 1
    strip = read_video_png(tmp_path / "rep" / "runs" / "01-s" / "given_0000.png")
    np.testing.assert_array_equal(strip, np.concatenate(list(truth[:N_OBS]), axis=1))


def test_comparison_table_and_grid_with_eval_and_fvd_metrics(runs, tmp_path, capsys):
    hier, auto = (shutil.copytree(r, tmp_path / r.name) for r in runs)
    truth = np.load(hier / "video_0000.npz")["frames"]
    write_video(tmp_path / "truth.npy", truth)
    code, _, err = run_fdm(capsys, "eval", "video", auto, "--data", tmp_path / "truth.npy")
    assert code == 0, err
    (hier / "fvd.json").write_text(json.dumps({"fvd": 123.25, "real": "x", "fake": str(hier)}))
    code, _, err = report(capsys, hier, auto, "--out", tmp_path / "rep")
    assert code == 0, err
    page = Page(tmp_path / "rep" / "index.html")
    ev = json.loads((auto / "eval.json").read_text())
    text = page.plain
    assert "Comparison" in text and "Videos side by side" in text
    plans = [json.loads((d / "plan.json").read_text()) for d in (hier, auto)]
    for name, plan in zip(("hier hierarchy-2", "auto autoreg"), plans):
        assert f"{name} dpm++2m, 2 steps (logsnr)" in text
        assert f"{plan['rounds']} {plan['nfe']} {plan['wall_s']:.2f}" in text
    assert f"{ev['psnr']['mean']:.2f} {ev['ssim']['mean']:.4f}" in text and "123.2" in text
    # the grid: every video of both runs once more, besides each run's own section
    assert len(page.all("video")) == 2 * 4


# ------------------------------------------------------------------------------------ training


def write_training_run(run_dir: Path, steps: int = 6, sample_every: int = 3, frames: int = 10) -> Path:
    """A training run folder made by the writers trainers/loop.py uses (config, metrics, samples)."""
    from fdm_engine.writer import write_outputs
    from trainers import TrainConfig, resolve
    from fdm_engine.metrics_log import MetricsLog
    from trainers.sampling import samples_dir

    cfg = resolve(TrainConfig(dataset="bouncing-balls", model="fdm", preset="tiny", steps=steps, run_dir=str(run_dir)))
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    log = MetricsLog(run_dir / "metrics.jsonl")
    for step in range(1, steps + 1):
        log.write({"step": step, "loss": 1.0 / step, "lr": 1e-4 * min(1, step / 3), "grad_norm": 1.0,
                   "steps_per_s": 2.0 + step, "samples_per_s": 4.0, "time": 0.5 * step})
        if step % sample_every == 0:
            video = torch.rand(frames, 3, 8, 8, generator=torch.Generator().manual_seed(step)) * 2 - 1
            write_outputs(samples_dir(run_dir, step), 0, video, ("mp4",))
    return run_dir


def test_training_run_page_has_curves_stats_and_samples_by_step(tmp_path, capsys):
    run_dir = write_training_run(tmp_path / "run")
    code, _, err = report(capsys, run_dir, "--out", tmp_path / "rep")
    assert code == 0, err
    page = Page(tmp_path / "rep" / "index.html")
    text = page.plain
    assert "training run" in text and "steps 6 of 6" in text and "step 3" in text and "step 6" in text
    assert "last loss 0.16667" in text and "steps / s 2.000 mean, 8.000 last" in text
    plot = [i["src"] for i in page.all("img") if "training" in i["src"]]
    assert plot and read_video_png(tmp_path / "rep" / plot[0]).shape[1] > 500
    videos = videos_of(tmp_path / "rep" / "index.html")
    assert [p.parent.name for p in videos] == ["step_0000003", "step_0000006"]
    assert all(media.probe(p).frames == 10 for p in videos)


@pytest.mark.slow
def test_report_of_a_real_training_run(tmp_path, capsys):
    from fdm_engine.datasets import make_dataset
    from trainers import TrainConfig, train

    make_dataset("bouncing-balls", tmp_path / "data", num_videos=2, num_test=1, length=16, size=8, seed=0)
    cfg = TrainConfig.from_dict(dict(
        dataset="bouncing-balls", data_dir=str(tmp_path / "data"), model="fdm", preset="tiny",
        run_dir=str(tmp_path / "run"), steps=2, batch_size=2, save_every=2, log_every=1, sample_every=2,
        sample_steps=2, sample_length=10, sample_n_obs=3, clip_length=12,
        model_config={"image_size": 8, "max_frames": 6}))
    train(cfg, progress=False)
    code, _, err = report(capsys, tmp_path / "run", "--out", tmp_path / "rep")
    assert code == 0, err
    text = Page(tmp_path / "rep" / "index.html").plain
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "steps 2 of 2" in text and f"last loss {records[-1]['loss']:.5f}" in text
    assert "checkpoints step 2" in text
    assert [media.probe(p).frames for p in videos_of(tmp_path / "rep" / "index.html")] == [10]


# ------------------------------------------------------------------------------------ bad input


def _break(kind: str, run: Path, tmp: Path) -> tuple[list, str]:
    """Make one bad input from a copy of `run`; -> (arguments, the path the error must name)."""
    src = shutil.copytree(run, tmp / "src")
    if kind == "neither":
        (src / "plan.json").unlink()
        for p in src.glob("video_*"):
            p.rename(p.with_name("clip" + p.name))
        return [src], f"{src}: neither a samples folder"
    if kind == "no-folder":
        return [tmp / "nope"], f"{tmp / 'nope'}: no such folder"
    if kind == "missing-video":
        (src / "video_0001.mp4").unlink()
        return [src], f"{src / 'video_0001.mp4'}: missing"
    if kind == "corrupt-video":
        data = (src / "video_0001.mp4").read_bytes()
        (src / "video_0001.mp4").write_bytes(data[: len(data) // 3])
        return [src], f"{src / 'video_0001.mp4'}: cannot read video"
    if kind == "corrupt-plan":
        (src / "plan.json").write_text('{"config": ')
        return [src], f"{src / 'plan.json'}: not a valid plan.json"
    if kind == "corrupt-eval":
        (src / "eval.json").write_text("psnr")
        return [src], f"{src / 'eval.json'}: not a valid eval.json"
    if kind == "corrupt-npz":
        (src / "video_0000.npz").write_bytes(b"PK\x03\x04 broken")
        return [src], f"{src / 'video_0000.npz'}: cannot read samples"
    if kind == "out-is-input":
        return [src, "--out", src], f"--out {src}: would replace the folder {src}"
    if kind == "out-not-a-report":
        (tmp / "rep").mkdir()
        (tmp / "rep" / "notes.txt").write_text("mine")
        return [src, "--out", tmp / "rep"], f"--out {tmp / 'rep'}: folder exists and is not an fdm report"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["neither", "no-folder", "missing-video", "corrupt-video", "corrupt-plan",
                                  "corrupt-eval", "corrupt-npz", "out-is-input", "out-not-a-report"])
def test_bad_input_is_one_line_naming_it_and_exit_2(kind, runs, tmp_path, capsys):
    args, names = _break(kind, runs[0], tmp_path)
    if "--out" not in args:
        args += ["--out", tmp_path / "rep"]
    code, out, err = report(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], err
    assert not (tmp_path / "rep" / "index.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rep")], "temporary folder left behind"


def test_skip_bad_shows_a_note_for_the_broken_video_and_the_rest(runs, tmp_path, capsys):
    args, names = _break("corrupt-video", runs[0], tmp_path)
    code, _, err = report(capsys, *args, "--out", tmp_path / "rep", "--skip-bad")
    assert code == 0, err
    assert names in err and "--skip-bad" in err
    page = Page(tmp_path / "rep" / "index.html")
    assert f"not shown: {names}" in page.plain
    assert [Path(v["src"]).name for v in page.all("video")] == ["video_0000.mp4"]


def test_an_earlier_report_is_replaced_and_a_failed_one_leaves_it(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert report(capsys, runs[0], "--out", out)[0] == 0
    assert report(capsys, runs[1], "--out", out)[0] == 0
    assert [Path(v["src"]).parts[1] for v in Page(out / "index.html").all("video")] == ["01-auto"] * 2
    assert report(capsys, tmp_path / "nope", "--out", out)[0] == 2
    assert "01-auto" in (out / "index.html").read_text(), "the failed report left the earlier one"


# ------------------------------------------------------------------------------------ browser


@pytest.mark.slow
@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_page_in_headless_chromium_plays_every_video_in_sync(runs, tmp_path, capsys, chromium):  # noqa: F811
    """Acceptance: durations = frames/fps, playing advances currentTime, the synchronised controls
    move every video together, no console errors, from a copied folder; screenshot kept."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    train_dir = write_training_run(tmp_path / "train", frames=80)
    code, _, err = report(capsys, *runs, train_dir, "--out", tmp_path / "rep")
    assert code == 0, err
    copied = shutil.copytree(tmp_path / "rep", tmp_path / "elsewhere" / "copy")
    shutil.rmtree(tmp_path / "rep")  # only the copy exists: nothing may point back at the original

    # Truth for each video, from the runs themselves: frames = --length, fps = --fps (plan.json);
    # the training samples: 80 frames at the writer's default 10 fps.
    expected = {}
    for k, run in enumerate(runs, start=1):
        cfg = json.loads((run / "plan.json").read_text())["config"]
        for p in (copied / "runs").glob(f"{k:02d}-*/video_*.mp4"):
            expected[p.relative_to(copied).as_posix()] = cfg["length"] / cfg["fps"]
    for p in (copied / "runs").glob("03-*/step_*/video_*.mp4"):
        expected[p.relative_to(copied).as_posix()] = 80 / 10

    d = chromium
    d.get((copied / "index.html").as_uri())
    js_videos = "return Array.from(document.querySelectorAll('video'))"
    WebDriverWait(d, 30).until(lambda d: d.execute_script(js_videos + ".every(v => v.readyState >= 2)"))
    state = d.execute_script(js_videos + ".map(v => [v.getAttribute('src'), v.duration, v.currentTime, v.paused,"
                             " v.error && v.error.message])")
    assert len(state) == 2 * 2 * 2 + 2, "each run's 2 videos in its section and the grid; 2 training samples"
    for src, duration, _, paused, error in state:
        assert error is None and paused, src
        assert duration == pytest.approx(expected[src], abs=1e-3), src

    fps = d.execute_script(js_videos + ".map(v => parseFloat(v.dataset.fps))")
    frame_of = f"return Array.from(document.querySelectorAll('video')).map((v, i) => Math.floor(v.currentTime * {fps}[i]))"

    lengths = [round(expected[src] * f) for (src, *_), f in zip(state, fps)]
    longest = lengths.index(max(lengths))  # the page's clock: shorter videos end on their last frame
    snapshot = js_videos + ".map(v => [v.paused, v.ended, v.currentTime * parseFloat(v.dataset.fps)])"

    # Play: every video advances, each at the clock's frame (within two frames). On a busy machine
    # the browser may answer only after the clock ended: then every video ended on its last frame.
    d.find_element(By.ID, "sync-play").click()
    WebDriverWait(d, 30).until(lambda d: d.execute_script(js_videos + ".every(v => v.currentTime > 0)"))
    shot = d.execute_script(snapshot)
    clock_ended, clock = shot[longest][1], shot[longest][2]
    for (paused, ended, f), n, (src, *_) in zip(shot, lengths, state):
        assert clock_ended or ended or not paused, f"{src} paused while the others play"
        assert abs(min(f, n - 1) - min(clock, n - 1)) <= 2, f"{src} at frame {f:.1f}, the clock at {clock:.1f}"

    # Pause: all stop, and stay where they are.
    d.execute_script("const b = document.getElementById('sync-play'); if (b.textContent === 'pause') b.click();")
    WebDriverWait(d, 10).until(lambda d: d.execute_script(js_videos + ".every(v => v.paused)"))
    stopped = d.execute_script(js_videos + ".map(v => v.currentTime)")
    time.sleep(0.3)
    assert d.execute_script(js_videos + ".map(v => v.currentTime)") == stopped

    # The frame slider and the step buttons move every video to the same frame.
    slider = d.find_element(By.ID, "sync-frame")
    d.execute_script("arguments[0].value = 7; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert d.execute_script(frame_of) == [7] * len(state)
    d.find_element(By.ID, "sync-next").click()
    frames = d.execute_script(frame_of)
    assert frames == [min(8, n - 1) for n in lengths]
    assert d.find_element(By.ID, "sync-label").text == "frame 8 / 79"

    assert console_errors(d) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert d.save_screenshot(str(ARTIFACTS / "report.png"))
