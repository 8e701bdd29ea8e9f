"""Inputs as kernels read them: values in memory, not behind a lazy conjugate or negative view."""

from __future__ import annotations

import torch


def resolved(t: torch.Tensor) -> torch.Tensor:
    """`t` with a pending conjugation or negation applied (a copy only when one is pending).

    Autograd hands backward passes such views (the gradient through `h.conj()` is a conjugate
    view); `torch.view_as_real` refuses a conjugate view, and a Triton kernel reads raw memory,
    where the pending sign is not applied.
    """
    return t.resolve_conj().resolve_neg()
