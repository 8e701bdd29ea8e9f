"""Where a dataset lives: `--data-dir`, else `$FDM_DATA_DIR/NAME`, else `datasets/NAME`."""

from __future__ import annotations

import os
from pathlib import Path

from fdm_engine.errors import FdmError

DATA_DIR_ENV = "FDM_DATA_DIR"


def resolve_data_dir(name: str, data_dir=None) -> Path:
    """The folder holding dataset `name`, which must exist.

    `data_dir` (the `--data-dir` flag) wins; else `$FDM_DATA_DIR/NAME` when the variable is set;
    else `datasets/NAME` under the working directory (so the published layout works as written).
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FdmError(f"--data-dir {path}: no such folder")
        return path
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser() / name
        if not path.is_dir():
            raise FdmError(f"dataset {name!r}: no folder {path} ({DATA_DIR_ENV}={env}); "
                           f"pass --data-dir DIR or point {DATA_DIR_ENV} at a folder holding {name}/")
        return path
    path = Path.cwd() / "datasets" / name
    if not path.is_dir():
        raise FdmError(f"dataset {name!r}: no folder {path}; pass --data-dir DIR or set "
                       f"{DATA_DIR_ENV} to a folder holding {name}/")
    return path
