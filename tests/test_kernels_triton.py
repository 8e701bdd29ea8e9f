"""Triton kernels against their reference twins: outputs and gradients over grids of small shapes.

Runs where Triton can: natively on a CUDA GPU, or on the CPU under TRITON_INTERPRET=1, which must be
set before triton is imported, so `tests/test_kernels.py::test_triton_kernels_under_interpreter`
runs this file in a child process with it set. By hand:

    TRITON_INTERPRET=1 .venv/bin/python -m pytest -q tests/test_kernels_triton.py [-m "not slow"]

Interpreter limits: fp32/fp16 only (bf16 is silently wrong there), explicit block sizes, tiny shapes.
Every torch.empty / empty_like is NaN-filled here, so a kernel that leaves outputs unwritten fails.
"""

from __future__ import annotations


import pytest
import torch

from kernels.dispatch import interpreting
from test_kernels import (
    GRAD_VIEWS,
    REAL_GRAD_VIEWS,
    TOLERANCES,
    assert_close,
    attention_inputs,
    check_conj_loss,
    check_incoming_gradient,
    loop_scan,
    random_scan_inputs,
    shape_id,
)

ON_GPU = torch.cuda.is_available() and not interpreting()
pytestmark = [
    pytest.mark.skipif(
        not (ON_GPU or interpreting()),
        reason="needs a CUDA GPU or TRITON_INTERPRET=1 (run by test_kernels.py::test_triton_kernels_under_interpreter)",
    ),
    pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental"),
]
DEVICE = "cuda" if ON_GPU else "cpu"
REAL_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if ON_GPU else [])
COMPLEX_OF = {torch.float32: torch.complex64, torch.float16: torch.complex32}


@pytest.fixture(autouse=True)
def nan_filled_empty(monkeypatch):
    """Uninitialised memory reads as NaN (the fla conftest trick)."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t):
        if t.is_floating_point() or t.is_complex():
            (torch.view_as_real(t) if t.is_complex() else t).fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(empty_like(*a, **k)))


# ---- diag_scan ---------------------------------------------------------------------------------

from kernels.diag_scan import diag_scan, diag_scan_ref  # noqa: E402

SCAN_SHAPES = [(1, 1, 1), (2, 3, 7), (1, 5, 33), (2, 2, 63)]
SLOW_SCAN_SHAPES = [(3, 40, 200), (1, 17, 1000)]


def _triton_scan(a, x, reverse=False, **blocks):
    from kernels.diag_scan.triton import diag_scan_triton

    return diag_scan_triton(a, x, reverse, **blocks)


def _check_scan(shape, reverse, dtype, blocks, seed=0):
    a, x = random_scan_inputs(*shape, dtype=dtype, seed=seed, device=DEVICE)
    a.requires_grad_(), x.requires_grad_()
    a64, x64 = (t.detach().to(torch.complex128).requires_grad_() for t in (a, x))  # same (rounded) values
    ref = diag_scan_ref(a64, x64, reverse)
    out = _triton_scan(a, x, reverse, **blocks)
    assert out.dtype == dtype
    tol = TOLERANCES[dtype]
    assert_close("h", ref, out, tol)
    g = torch.randn(shape, dtype=torch.complex128, device=DEVICE)
    ga_ref, gx_ref = torch.autograd.grad(ref, (a64, x64), g)
    ga, gx = torch.autograd.grad(out, (a, x), g.to(dtype))
    assert_close("da", ga_ref, ga, tol)
    assert_close("dx", gx_ref, gx, tol)


@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex32], ids=["c64", "c32"])
def test_scan_triton_matches_ref(shape, reverse, dtype):
    # Small tiles so L = 33 and 63 span several tiles and the carry between them is exercised.
    _check_scan(shape, reverse, dtype, dict(block_d=4, block_l=16))


@pytest.mark.slow
@pytest.mark.parametrize("shape", SLOW_SCAN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_scan_triton_matches_ref_larger(shape, reverse):
    _check_scan(shape, reverse, torch.complex64, dict(block_d=16, block_l=64))


def test_scan_triton_against_python_loop_and_default_blocks():
    a, x = random_scan_inputs(2, 3, 70, device=DEVICE)
    assert_close("loop", loop_scan(a.cpu(), x.cpu()), _triton_scan(a, x), TOLERANCES[torch.complex64])


def test_scan_triton_reverse_is_flip_and_broadcast_a():
    a, x = random_scan_inputs(2, 5, 37, device=DEVICE)
    blocks = dict(block_d=4, block_l=16)
    assert_close("flip", _triton_scan(a.flip(-1), x.flip(-1), **blocks).flip(-1), _triton_scan(a, x, True, **blocks), 2e-5)
    a_lti = a[:1, :, :1].detach().requires_grad_()  # [1, D, 1]: read with stride 0, never copied
    out = _triton_scan(a_lti, x, **blocks)
    ref = diag_scan_ref(a_lti, x)
    assert_close("broadcast", ref, out, 2e-5)
    g = torch.randn_like(ref)
    assert_close("d a_lti", torch.autograd.grad(ref, a_lti, g)[0], torch.autograd.grad(out, a_lti, g)[0], 2e-5)


def test_scan_dispatch_picks_triton_when_forced(monkeypatch):
    a, x = random_scan_inputs(1, 2, 9, device=DEVICE)
    monkeypatch.setenv("FDM_KERNELS", "triton")
    assert_close("env", diag_scan_ref(a, x), diag_scan(a, x), 2e-5)


# ---- S4D through the Triton scan ---------------------------------------------------------------


def test_s4d_scan_form_with_triton_scan_equals_conv_form():
    from fdm_engine.models.ssm_layers import S4D, S4DConfig
    from kernels.s4d import s4d_conv, s4d_scan

    torch.manual_seed(0)
    m = S4D(S4DConfig(channels=4, state_size=8)).to(DEVICE)
    u = torch.randn(2, 4, 45, device=DEVICE)
    dtA, Ct = m.discrete()
    assert_close("s4d", s4d_conv(u, dtA, Ct, m.D), s4d_scan(u, dtA, Ct, m.D, chunk=8, impl="triton"), 1e-4)


# ---- temporal attention ------------------------------------------------------------------------

from kernels.temporal_attention import temporal_attention, temporal_attention_ref  # noqa: E402

# (B, S, n, F, D): odd and non-power-of-two frame counts, several batch / position / head / width counts.
ATTN_SHAPES = [(1, 1, 1, 1, 16), (1, 2, 2, 7, 8), (2, 1, 1, 20, 16), (1, 3, 2, 33, 4), (2, 2, 1, 5, 32), (1, 2, 1, 9, 24), (1, 1, 2, 63, 16)]
SLOW_ATTN_SHAPES = [(2, 4, 4, 100, 32), (1, 2, 2, 257, 64)]
CASES = [(True, True), (True, False), (False, True), (False, False)]


def _triton_attention(*args, **blocks):
    from kernels.temporal_attention.triton import temporal_attention_triton

    return temporal_attention_triton(*args, **blocks)


def _check_attention(shape, dtype, with_rel, with_mask, seed=0, **blocks):
    q, k, v, r, m = attention_inputs(*shape, dtype=torch.float32, rel=with_rel, mask=with_mask, seed=seed)
    ins = [t.to(DEVICE, dtype).requires_grad_() for t in (q, k, v) + ((r,) if with_rel else ())]
    m = m.to(DEVICE) if m is not None else None
    ins64 = [t.detach().double().requires_grad_() for t in ins]  # the same rounded values, in float64
    ref = temporal_attention_ref(*ins64[:3], ins64[3] if with_rel else None, m)
    out = _triton_attention(*ins[:3], ins[3] if with_rel else None, m, **blocks)
    assert out.dtype == dtype
    tol = TOLERANCES[dtype]
    assert_close("out", ref, out, tol)
    g = torch.randn_like(ref)
    names = ["dq", "dk", "dv", "drel"]
    for name, a, b in zip(names, torch.autograd.grad(ref, ins64, g), torch.autograd.grad(out, ins, g.to(dtype))):
        assert b.dtype == dtype
        assert_close(name, a, b, tol)


@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("case", CASES, ids=lambda c: ("rel" if c[0] else "norel") + ("-mask" if c[1] else ""))
@pytest.mark.parametrize("dtype", REAL_DTYPES, ids=str)
def test_attention_triton_matches_ref(shape, case, dtype):
    _check_attention(shape, dtype, *case)


@pytest.mark.slow
@pytest.mark.parametrize("shape", SLOW_ATTN_SHAPES, ids=shape_id)
def test_attention_triton_matches_ref_larger(shape):
    _check_attention(shape, torch.float32, True, True, block_m=32, block_n=16)


def test_attention_triton_rectangular_tiles():
    _check_attention((1, 1, 2, 21, 8), torch.float32, True, True, block_m=32, block_n=16)
    _check_attention((1, 1, 2, 21, 8), torch.float32, True, True, block_m=16, block_n=32)


def test_attention_dispatch_and_fdm_denoiser_path(monkeypatch):
    """FDM_KERNELS=triton sends the colleague's dispatch (fdm_engine.models.attention) to the kernel."""
    from fdm_engine.models.attention import temporal_attention as model_dispatch

    from kernels.temporal_attention import IMPLEMENTATIONS

    calls = []
    triton_fn = IMPLEMENTATIONS["triton"]
    monkeypatch.setitem(IMPLEMENTATIONS, "triton", lambda *a: calls.append("triton") or triton_fn(*a))
    q, k, v, r, m = (t.to(DEVICE) if t is not None else None for t in attention_inputs(1, 2, 2, 9, 8, dtype=torch.float32))
    ref = temporal_attention_ref(q, k, v, r, m)
    monkeypatch.setenv("FDM_KERNELS", "triton")
    assert_close("kernels dispatch", ref, temporal_attention(q, k, v, r, m), 2e-5)
    assert_close("model dispatch", ref, model_dispatch(q, k, v, r, m), 2e-5)
    assert calls == ["triton", "triton"]


# ---- incoming gradients in any layout (test_kernels.py runs these in the fast set) -------------


@pytest.mark.parametrize("view", list(GRAD_VIEWS))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_incoming_gradient_scan_triton(view, reverse):
    a, x = (t.requires_grad_() for t in random_scan_inputs(2, 3, 9, device=DEVICE))
    check_incoming_gradient(lambda a, x: _triton_scan(a, x, reverse, block_d=4, block_l=16),
                            lambda a, x: diag_scan_ref(a, x, reverse), (a, x), view, TOLERANCES[torch.complex64])


def test_incoming_gradient_scan_triton_conj_loss_and_view_inputs():
    """The reported failure: backward of (h.conj() * g).real.sum() through the Triton scan."""
    a, x = random_scan_inputs(2, 3, 9, device=DEVICE)
    check_conj_loss(lambda a, x: diag_scan(a, x, impl="triton"), a, x, TOLERANCES[torch.complex64])
    ref = diag_scan_ref(a.conj().resolve_conj(), -x)
    assert_close("conj/neg inputs", ref, diag_scan(a.conj(), torch._neg_view(x), impl="triton"), TOLERANCES[torch.complex64])


@pytest.mark.parametrize("view", REAL_GRAD_VIEWS)
def test_incoming_gradient_attention_triton(view):
    q, k, v, r, m = (t.to(DEVICE) for t in attention_inputs(2, 2, 2, 5, 8, dtype=torch.float32))
    ins = tuple(t.requires_grad_() for t in (q, k, v, r))
    check_incoming_gradient(lambda *t: _triton_attention(*t, m), lambda *t: temporal_attention_ref(*t, m),
                            ins, view, TOLERANCES[torch.float32])


def test_incoming_gradient_attention_triton_negative_view_inputs():
    q, k, v, r, m = (t.to(DEVICE) for t in attention_inputs(2, 2, 2, 5, 8, dtype=torch.float32))
    ref = temporal_attention_ref(-q, k, -v, -r, m)
    out = _triton_attention(torch._neg_view(q), k, torch._neg_view(v), torch._neg_view(r), m)
    assert_close("negative-view inputs", ref, out, TOLERANCES[torch.float32])
