"""The daily run's event files: ``YYYY-MM-DD`` in a file's name is the day it was delivered."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from traitflow.config import confine, input_root
from traitflow.events.errors import EventsFileError

EVENT_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
_FILE_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


class MissingInputError(EventsFileError):
    """No event file is dated the run's day (policy "fail"): a delivery problem no retry fixes;
    the run to clear once the file has arrived."""


@dataclass(frozen=True)
class EventFiles:
    """The event files of a folder (resolved paths, as the store records them).

    dated : (day ``YYYY-MM-DD``, path) in (day, name) order
    undated : files without a date in their name (never ingested by the daily run)
    """

    dated: tuple[tuple[str, Path], ...]
    undated: tuple[Path, ...]

    def through(self, day: str) -> list[Path]:
        """Files delivered on ``day`` or earlier."""
        return [path for delivered, path in self.dated if delivered <= day]

    def on(self, day: str) -> list[str]:
        """Sources delivered on ``day``."""
        return [str(path) for delivered, path in self.dated if delivered == day]

    def from_day(self, day: str) -> list[str]:
        """Sources delivered on ``day`` or later."""
        return [str(path) for delivered, path in self.dated if delivered >= day]


def event_files(input_dir: str | Path) -> EventFiles:
    """The CSV/Parquet event files of ``input_dir``, which must lie inside ``input_root()``
    (``traitflow.config.confine``: run parameters name the folder)."""
    folder = confine(input_dir, input_root(), "input_dir", "TRAITFLOW_INPUT_ROOT")
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    dated, undated = [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.endswith(EVENT_FILE_SUFFIXES):
            continue
        match = _FILE_DATE.search(path.name)
        if match is None:
            undated.append(path)
        else:
            dated.append((match.group(1), path))
    return EventFiles(tuple(sorted(dated, key=lambda item: (item[0], item[1].name))), tuple(undated))
