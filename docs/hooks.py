"""mkdocs hook: the figures the pages show live with their results, outside `docs/`.

Every PNG under `benchmarks/results/` and `examples/results/` is added to the site at the same
relative path, so a page links `examples/results/compare_snake16/compare.png` as the README does.
"""

import pathlib

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIGURE_DIRS = ("benchmarks/results", "examples/results")


def on_files(files, config):
  for folder in FIGURE_DIRS:
    for path in sorted((ROOT / folder).rglob("*.png")):
      uri = path.relative_to(ROOT).as_posix()
      files.append(File.generated(config, uri, abs_src_path=str(path)))
  return files
