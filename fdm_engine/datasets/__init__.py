"""Video datasets by name: the published formats, video folders, and procedural datasets.

Opening one split:

    ds = open_dataset("carla_no_traffic", data_dir=None, split="train", skip_bad=False,
                      image_size=None, channels=None, min_length=None)   # -> VideoDataset

The folder is `data_dir` (`--data-dir`), else `$FDM_DATA_DIR/NAME`, else `datasets/NAME` under the
working directory (`resolve_data_dir`). Names (`DATASETS.names()`): carla_no_traffic, minerl,
mazes_cwvae, folder, bouncing-balls, moving-digits, revisit-world; plug-ins add theirs with the
entry-point group `fdm.datasets` (a factory with `open_dataset`'s keyword arguments).

The dataset object (`VideoDataset`), pixels as everywhere in fdm (`fdm_engine.video_io`):

    len(ds)                       videos in the split
    ds.read(i, max_frames=None)   uint8 [T, H, W, C] as stored
    ds.clip(i, length, start=0)   float [T, C, S, S] in [-1, 1]; start may be a numpy Generator
                                  (uniformly random window); frames centre-cropped and resized to S
    ds.windows(length, train=True, seed=0)
                                  torch Dataset (`VideoClips`) of [T, C, S, S] windows: random and
                                  seeded by (seed, epoch, i) in training (`set_epoch`), from frame 0
                                  in evaluation; a DataLoader batches them to [B, T, C, S, S]
    ds.video_length               frames in the shortest video
    ds.image_size, ds.channels    S and C of what `clip` returns (image_size=, channels= at open
                                  convert: crop + resize, grey <-> RGB); ds.frame_shape = stored (H, W, C)
    ds.num_frames(i), ds.path(i)  per video
    ds.state(i)                   ground truth saved beside video i ({} if none): procedural
                                  state, CARLA coords
    ds.info()                     DatasetInfo summary; `validate(ds)` decodes every file

Bad data (missing folder or split, no videos, corrupt or truncated file, wrong dtype or shape,
too few frames) raises FdmError naming the file. With skip_bad=True each bad file is a
BadVideoWarning instead and is left out: at open (headers), in `validate` (full decode), or when a
window fails to read (the next video stands in).

Making procedural data: `make_dataset(name, out, num_videos, length, size, seed, format)`; the
generators (`GENERATORS`) are bouncing-balls, moving-digits and revisit-world.

`parse_dataset_ref("minerl:test:3")` reads the `--obs NAME[:split[:index]]` form.
"""

from fdm_engine.datasets.base import (
    DATASETS,
    FORMATS,
    BadVideoWarning,
    DatasetInfo,
    DatasetRef,
    VideoDataset,
    open_dataset,
    parse_dataset_ref,
)
from fdm_engine.datasets.folder import VideoFolderDataset
from fdm_engine.datasets.paths import DATA_DIR_ENV, resolve_data_dir
from fdm_engine.datasets.procedural import GENERATORS, make_dataset, read_manifest
from fdm_engine.datasets.published import CarlaDataset, NpySplitDataset
from fdm_engine.datasets.validate import ValidationReport, detect_dataset, split_names, validate
from fdm_engine.datasets.windows import VideoClips

__all__ = [
    "DATASETS", "FORMATS", "GENERATORS", "DATA_DIR_ENV", "BadVideoWarning", "CarlaDataset",
    "DatasetInfo", "DatasetRef", "NpySplitDataset", "ValidationReport", "VideoClips", "VideoDataset",
    "VideoFolderDataset", "detect_dataset", "make_dataset", "open_dataset", "parse_dataset_ref",
    "read_manifest", "resolve_data_dir", "split_names", "validate",
]
