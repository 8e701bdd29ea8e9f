"""`Registry`, name -> constructor maps extendable by entry points (defined in fdm_common.registry)."""

from fdm_common.registry import Registry

__all__ = ["Registry"]
