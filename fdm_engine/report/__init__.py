"""`fdm report`: a static web page (index.html + assets) of samples folders and training runs.

    write_report(["samples/"], "report/")   # -> report/index.html, opens from disk, no server

runs.py reads the folders, media.py makes browser-ready mp4s with the ffmpeg of imageio-ffmpeg,
build.py writes the files, page.py the HTML; assets/report.js synchronises the videos.
"""

from fdm_engine.report.build import write_report

__all__ = ["write_report"]
