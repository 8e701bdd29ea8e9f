"""`Config`, the JSON-round-tripping base of component configs (defined in fdm_common.config)."""

from fdm_common.config import Config

__all__ = ["Config"]
