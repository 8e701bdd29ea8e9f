"""kernels/: references against loops, the CPU paths against the references, the S4D forms,
dispatch (the S4D layers themselves: test_ssm_layers.py). The Triton kernels are tested in
test_kernels_triton.py, run here in a subprocess under TRITON_INTERPRET=1 (so this process never
imports triton in interpreter mode)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fdm_engine.errors import FdmError
from fdm_engine.models.ssm_layers import S4D, S4DConfig  # the layer holds the parameters the ops take
from kernels.diag_scan import IMPLEMENTATIONS as SCAN_IMPLS
from kernels.diag_scan import diag_scan, diag_scan_cpu, diag_scan_ref
from kernels.dispatch import resolve_impl
from kernels.s4d import factored_kernel, mode_powers, s4d_conv, s4d_kernel, s4d_scan
from kernels.temporal_attention import temporal_attention, temporal_attention_cpu, temporal_attention_ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")

# ---- shared helpers (test_kernels_triton.py imports these) ------------------------------------

# Max |ref - out| / max |ref| allowed, per dtype of the tensors compared (outputs and gradients).
TOLERANCES = {
    torch.float64: 1e-10,
    torch.complex128: 1e-10,
    torch.float32: 2e-5,
    torch.complex64: 2e-5,
    torch.float16: 5e-3,
    torch.complex32: 5e-3,
    torch.bfloat16: 3e-2,
}


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, tol: float) -> None:
    """max |ref - out| <= tol * max(|ref|, 1): one relative-to-scale criterion for every check."""
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    ref64, out64 = ref.detach().to(torch.complex128 if ref.is_complex() else torch.float64).cpu(), out.detach().cpu()
    out64 = out64.to(ref64.dtype)
    assert torch.isfinite(torch.view_as_real(out64) if out64.is_complex() else out64).all(), f"{name}: non-finite values"
    err = (ref64 - out64).abs().max().item() if ref64.numel() else 0.0
    scale = max(ref64.abs().max().item() if ref64.numel() else 0.0, 1.0)
    assert err <= tol * scale, f"{name}: max error {err:.3e} > {tol:.1e} x scale {scale:.3e}"


def random_scan_inputs(B, D, L, dtype=torch.complex64, seed=0, device="cpu"):
    """a on the unit disc (|a| in [0.3, 1), all phases), x standard complex normal; [B, D, L]."""
    g = torch.Generator().manual_seed(seed)
    mag = 0.3 + 0.7 * torch.rand(B, D, L, generator=g, dtype=torch.float64)
    a = torch.polar(mag, 2 * torch.pi * torch.rand(B, D, L, generator=g, dtype=torch.float64))
    x = torch.randn(B, D, L, generator=g, dtype=torch.complex128)
    return a.to(dtype).to(device), x.to(dtype).to(device)


def loop_scan(a, x, reverse=False):
    """The recurrence with Python scalars: the independent oracle for diag_scan_ref."""
    B, D, L = x.shape
    h = torch.zeros(B, D, L, dtype=torch.complex128)
    for b in range(B):
        for d in range(D):
            state = 0j
            for t in reversed(range(L)) if reverse else range(L):
                state = complex(a[b, d, t]) * state + complex(x[b, d, t])
                h[b, d, t] = state
    return h



# Incoming gradients as autograd may hand them to a custom backward: lazy conjugate and negative
# views (the gradient through `h.conj()` is a conjugate view), a transposed layout and a
# stride-0 broadcast. Each maps a dense gradient to a view of the same shape.
GRAD_VIEWS = {
    "conj": lambda g: g.conj(),
    "neg": torch._neg_view,
    "conj-neg": lambda g: torch._neg_view(g.conj()),
    "transposed": lambda g: g.transpose(-1, -2).contiguous().transpose(-1, -2),
    "broadcast": lambda g: g[:1].expand(g.shape),
}
REAL_GRAD_VIEWS = [name for name in GRAD_VIEWS if "conj" not in name]  # conj of a real tensor is no view


def check_incoming_gradient(fn, ref_fn, inputs, view: str, tol: float) -> None:
    """fn(*inputs) backpropagates the gradient view GRAD_VIEWS[view](g) as ref_fn does its values."""
    out, ref = fn(*inputs), ref_fn(*inputs)
    g = GRAD_VIEWS[view](torch.randn(ref.shape, dtype=ref.dtype).to(ref.device))
    assert g.is_conj() or g.is_neg() or not g.is_contiguous(), f"{view}: not the layout under test"
    want = torch.autograd.grad(ref, inputs, g.resolve_conj().resolve_neg().clone(), retain_graph=True)
    got = torch.autograd.grad(out, inputs, g)
    for i, (w, o) in enumerate(zip(want, got)):
        assert_close(f"{view}: gradient of input {i}", w, o, tol)


def check_conj_loss(scan, a, x, tol: float) -> None:
    """The issue's case: (scan(a, x).conj() * g).real.sum().backward() gives the reference's gradients."""
    a, x = a.detach().requires_grad_(), x.detach().requires_grad_()
    g = torch.randn(x.shape, dtype=x.dtype).to(x.device)
    (scan(a, x).conj() * g).real.sum().backward()
    a_ref, x_ref = a.detach().requires_grad_(), x.detach().requires_grad_()
    (diag_scan_ref(a_ref, x_ref).conj() * g).real.sum().backward()
    assert_close("da", a_ref.grad, a.grad, tol)
    assert_close("dx", x_ref.grad, x.grad, tol)


SCAN_SHAPES = [(1, 1, 1), (2, 3, 7), (1, 5, 33), (3, 2, 63), (2, 4, 100)]


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


# ---- diag_scan ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_scan_ref_matches_python_loop(shape, reverse):
    a, x = random_scan_inputs(*shape, dtype=torch.complex128)
    assert_close("ref", loop_scan(a, x, reverse), diag_scan_ref(a, x, reverse), 1e-12)


@pytest.mark.parametrize("shape", SCAN_SHAPES + [(1, 3, 1000), (2, 1, 4097), (40000, 1, 5)], ids=shape_id)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["c64", "c128"])
def test_scan_cpu_matches_ref_with_gradients(shape, reverse, dtype):
    a, x = random_scan_inputs(*shape, dtype=dtype)
    a.requires_grad_(), x.requires_grad_()
    ref = diag_scan_ref(a, x, reverse)
    out = diag_scan_cpu(a, x, reverse)
    tol = TOLERANCES[dtype]
    assert out.dtype == dtype
    assert_close("h", ref, out, tol)
    g = torch.randn_like(ref)
    ga_ref, gx_ref = torch.autograd.grad(ref, (a, x), g)
    ga, gx = torch.autograd.grad(out, (a, x), g)
    assert_close("da", ga_ref, ga, tol)
    assert_close("dx", gx_ref, gx, tol)


@pytest.mark.parametrize("view", list(GRAD_VIEWS))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_scan_cpu_backward_takes_any_incoming_gradient(view, reverse):
    a, x = (t.requires_grad_() for t in random_scan_inputs(2, 3, 9))
    check_incoming_gradient(lambda a, x: diag_scan_cpu(a, x, reverse), lambda a, x: diag_scan_ref(a, x, reverse),
                            (a, x), view, TOLERANCES[torch.complex64])


def test_scan_cpu_conj_loss_and_view_inputs():
    a, x = random_scan_inputs(2, 3, 9)
    check_conj_loss(diag_scan_cpu, a, x, TOLERANCES[torch.complex64])
    ref = diag_scan_ref(a.conj().resolve_conj(), -x)
    assert_close("conj/neg inputs", ref, diag_scan_cpu(a.conj(), torch._neg_view(x)), TOLERANCES[torch.complex64])


@pytest.mark.parametrize("view", REAL_GRAD_VIEWS)
def test_s4d_scan_backward_takes_any_incoming_gradient(view):
    """s4d_scan's autograd.Function (row-block recomputation) against autograd through s4d_conv."""
    m = make_s4d(H=3, N=8)
    dtA, Ct = m.discrete()
    u = torch.randn(2, 3, 20, dtype=torch.float64, requires_grad=True)
    inputs = (u, dtA, Ct, m.D)
    check_incoming_gradient(lambda *t: s4d_scan(*t, chunk=4, impl="cpu"), s4d_conv, inputs, view, 1e-9)


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_scan_reverse_is_flip(impl):
    a, x = random_scan_inputs(2, 3, 29)
    rev = diag_scan(a, x, reverse=True, impl=impl)
    flipped = diag_scan(a.flip(-1), x.flip(-1), impl=impl).flip(-1)
    assert_close("reverse", flipped, rev, TOLERANCES[torch.complex64])


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_scan_broadcast_a_and_complex32(impl):
    """A time-invariant a [1, D, 1] broadcasts (S4D's use); complex32 is computed in complex64."""
    a, x = random_scan_inputs(2, 3, 17)
    a_small = a[:1, :, :1]
    assert_close("broadcast", diag_scan_ref(a_small.expand(2, 3, 17).clone(), x), diag_scan(a_small, x, impl=impl), 2e-5)
    h32 = diag_scan(a.to(torch.complex32), x.to(torch.complex32), impl=impl)
    assert h32.dtype == torch.complex32
    ref = diag_scan_ref(a.to(torch.complex32).to(torch.complex64), x.to(torch.complex32).to(torch.complex64))
    assert_close("complex32", ref, h32.to(torch.complex64), TOLERANCES[torch.complex32])


def test_scan_cpu_no_overflow_when_products_underflow():
    """|a| tiny makes in-chunk products underflow to 0; the blocked scan must stay finite and exact."""
    a = torch.full((1, 2, 3000), 1e-3, dtype=torch.complex64)
    a[..., ::50] = 0  # exact zeros reset the state
    x = torch.randn(1, 2, 3000, dtype=torch.complex64)
    assert_close("tiny a", diag_scan_ref(a, x), diag_scan_cpu(a, x), 2e-5)


def test_scan_bad_arguments():
    x = torch.randn(2, 3, 4, dtype=torch.complex64)
    with pytest.raises(FdmError, match="complex"):
        diag_scan(x.real, x)
    with pytest.raises(FdmError, match=r"\[B, D, L\]"):
        diag_scan(x[0], x[0])
    with pytest.raises(FdmError, match="broadcast"):
        diag_scan(torch.ones(5, dtype=torch.complex64), x)


# ---- dispatch ----------------------------------------------------------------------------------


def test_dispatch_defaults_env_and_errors(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("FDM_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert resolve_impl("op", None, cpu) == "cpu"
    assert resolve_impl("op", "ref", cpu) == "ref"
    monkeypatch.setenv("FDM_KERNELS", "ref")
    assert resolve_impl("op", None, cpu) == "ref"
    assert resolve_impl("op", "cpu", cpu) == "cpu"  # an explicit argument beats the environment
    monkeypatch.setenv("FDM_KERNELS", "triton")
    with pytest.raises(FdmError, match="TRITON_INTERPRET"):
        resolve_impl("op", None, cpu)
    monkeypatch.setenv("FDM_KERNELS", "fast")
    with pytest.raises(FdmError, match="FDM_KERNELS"):
        resolve_impl("op", None, cpu)
    with pytest.raises(FdmError, match="unknown kernel implementation 'x'"):
        resolve_impl("op", "x", cpu)


def test_dispatch_routes_calls(monkeypatch):
    calls = []
    for name in ("ref", "cpu"):
        fn = SCAN_IMPLS[name]
        monkeypatch.setitem(SCAN_IMPLS, name, lambda a, x, r, _n=name, _f=fn: calls.append(_n) or _f(a, x, r))
    a, x = random_scan_inputs(1, 2, 5)
    monkeypatch.delenv("FDM_KERNELS", raising=False)
    diag_scan(a, x)
    monkeypatch.setenv("FDM_KERNELS", "ref")
    diag_scan(a, x)
    diag_scan(a, x, impl="cpu")
    assert calls == ["cpu", "ref", "cpu"]


def test_import_has_no_triton_side_effect():
    code = "import sys, kernels; kernels.diag_scan; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": ROOT})


# ---- S4D ---------------------------------------------------------------------------------------


def make_s4d(H=6, N=16, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return S4D(S4DConfig(channels=H, state_size=N)).to(dtype)


def test_s4d_kernel_matches_recurrence():
    """The Vandermonde kernel is the impulse response of h_t = a h_{t-1} + u_t, y = 2 Re C~ h."""
    m = make_s4d()
    dtA, Ct = m.discrete()
    L = 12
    K = s4d_kernel(dtA, Ct, L)  # [H, L]
    a = torch.exp(dtA)  # [H, N2]
    h = torch.zeros_like(a)
    for t in range(L):
        h = a * h + (1.0 if t == 0 else 0.0)
        assert_close(f"K[{t}]", 2 * (Ct * h).sum(-1).real, K[:, t], 1e-12)


@pytest.mark.parametrize("L", [1, 2, 7, 64, 100])
def test_factored_powers_and_kernel_match_vandermonde(L):
    m = make_s4d()
    dtA, Ct = m.discrete()
    powers = torch.exp(dtA[:, :, None] * torch.arange(L, dtype=torch.float64))
    assert_close("powers", powers, mode_powers(dtA, L), 1e-12)
    assert_close("kernel", s4d_kernel(dtA, Ct, L), factored_kernel(dtA, Ct, L), 1e-12)


@pytest.mark.parametrize("L,chunk", [(1, 0), (9, 1), (7, 3), (33, 8), (63, 16), (64, 16), (100, 0), (300, 0), (65, 64)])
def test_s4d_scan_form_equals_conv_form(L, chunk):
    m = make_s4d()
    u = torch.randn(3, 6, L, dtype=torch.float64, requires_grad=True)
    dtA, Ct = m.discrete()
    conv = s4d_conv(u, dtA, Ct, m.D)
    scan = s4d_scan(u, dtA, Ct, m.D, chunk=chunk, impl="ref")
    assert_close("y", conv, scan, 1e-10)
    g = torch.randn_like(conv)
    params = [u, m.log_dt, m.log_A_real, m.A_imag, m.C, m.D]
    for name, a, b in zip(["u", "log_dt", "log_A_real", "A_imag", "C", "D"],
                          torch.autograd.grad(conv, params, g, retain_graph=True), torch.autograd.grad(scan, params, g)):
        assert_close(f"d{name}", a, b, 1e-9)


# ---- temporal attention (CPU paths) -----------------------------------------------------------


def attention_inputs(B, S, n, Fr, D, dtype=torch.float64, rel=True, mask=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, S, n, Fr, D, generator=g, dtype=dtype) for _ in range(3))
    r = 0.5 * torch.randn(B, n, Fr, Fr, D, generator=g, dtype=dtype) if rel else None
    m = None
    if mask:
        valid = torch.rand(B, Fr, generator=g) > 0.3
        valid[:, 0] = True
        m = valid[:, :, None] == valid[:, None, :]  # padding attends to padding only
    return q, k, v, r, m


@pytest.mark.parametrize("rel", [True, False], ids=["rel", "norel"])
@pytest.mark.parametrize("mask", [True, False], ids=["mask", "nomask"])
def test_attention_cpu_and_dispatch_match_the_reference(rel, mask):
    """The FDM denoiser calls this dispatch; its reference is checked against a naive loop in
    tests/test_fdm_unet.py."""
    q, k, v, r, m = attention_inputs(2, 3, 2, 7, 4, rel=rel, mask=mask)
    ref = temporal_attention_ref(q, k, v, r, m)
    assert_close("cpu", ref, temporal_attention_cpu(q, k, v, r, m), 1e-12)
    assert_close("dispatch", ref, temporal_attention(q, k, v, r, m), 1e-12)


def test_attention_bad_arguments():
    q, k, v, r, m = attention_inputs(1, 2, 2, 5, 4)
    with pytest.raises(FdmError, match="rel"):
        temporal_attention(q, k, v, r[:, :1], m)
    with pytest.raises(FdmError, match="mask"):
        temporal_attention(q, k, v, r, m.float())


# ---- the Triton suite, under the interpreter ---------------------------------------------------


def run_triton_suite(*pytest_args: str) -> str:
    """Runs tests/test_kernels_triton.py (with `pytest_args`) in a child with TRITON_INTERPRET=1,
    this process unaffected; asserts it passed and returns pytest's summary line."""
    pytest.importorskip("triton")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels_triton.py", *pytest_args]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("FDM_KERNELS", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"interpreter suite: {summary}")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in summary, summary
    return summary


NATIVE_TRITON = pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the Triton tests run natively in this process")


@pytest.mark.slow
@NATIVE_TRITON
def test_triton_kernels_under_interpreter():
    """The whole Triton suite under the interpreter. FDM_TRITON_SLOW=1 includes the tests marked slow."""
    run_triton_suite(*([] if os.environ.get("FDM_TRITON_SLOW") == "1" else ["-m", "not slow"]))


@pytest.mark.slow  # ~7 s: a TRITON_INTERPRET process
@NATIVE_TRITON
def test_triton_scan_backward_takes_a_conjugate_gradient():
    """The reported failure, kept in the fast set: backward of (h.conj() * g).real.sum() through
    the Triton scan (a conjugate-view gradient); the slow suite runs every gradient layout."""
    run_triton_suite("-k", "incoming_gradient_scan_triton_conj_loss")


# ---- the benchmark script runs and prints the documented JSON ----------------------------------


@pytest.mark.slow
def test_bench_temporal_layers_smoke():
    cmd = [sys.executable, "benchmarks/bench_temporal_layers.py", "--frames", "8", "--json", "--repeats", "1",
           "--layers", "attention-materialised,bi-s4d-scan", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout)
    assert [(r["layer"], r["frames"]) for r in result["runs"]] == [("attention-materialised", 8), ("bi-s4d-scan", 8)]
    for r in result["runs"]:
        assert r["seconds"] > 0 and r["peak_bytes"] >= 0
