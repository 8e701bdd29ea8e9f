"""`FdmError`, the one error type users see (defined in fdm_common.errors; this name is the one
fdm_engine code imports)."""

from fdm_common.errors import FdmError, count, short_list

__all__ = ["FdmError", "count", "short_list"]
