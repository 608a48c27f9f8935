"""syncd processes for tests that need more than `syncd_factory`: on the by_stock test source, under libfaketime.

`SpecialSyncd(folder, config, fake_source=..., faketime=...)` is a conftest.SyncdProcess whose
command is syncd on tests/fakesource.py's StockSource (settings as JSON in $SYNCD_FAKE_SOURCE)
and/or under Debian's `faketime` starting at a given wall-clock instant (see
tests/faketime_site/sitecustomize.py for why the monotonic clock stays real).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import SyncdProcess

TESTS = Path(__file__).parent


def libfaketime() -> str | None:
    """Debian's libfaketime for multi-threaded programs (package faketime), if installed."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    return str(found[0]) if found else None


def faketime_available() -> bool:
    return shutil.which("faketime") is not None and libfaketime() is not None


class SpecialSyncd(SyncdProcess):
    def __init__(self, folder: Path, config: dict[str, Any], *, fake_source: dict[str, Any] | None = None,
                 faketime: str | None = None, timezone: str = "Asia/Shanghai") -> None:
        env: dict[str, str] = {}
        if fake_source is not None:
            env["SYNCD_FAKE_SOURCE"] = json.dumps(fake_source)
        if faketime is not None:
            # The library preloaded into syncd itself (what the `faketime -m` command sets up), not
            # that command: it runs the program as its child and does not pass SIGTERM on, so
            # stopping the wrapper would leave syncd running. @: start at that instant, then run on.
            site = str(TESTS / "faketime_site")
            env.update(TZ=timezone, FAKETIME_DONT_FAKE_MONOTONIC="1", LD_PRELOAD=libfaketime() or "",
                       FAKETIME=f"@{faketime}", FAKETIME_NO_CACHE="1",
                       PYTHONPATH=os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p))
        super().__init__(folder, config, env)
        self.fake_source = fake_source
        self.faketime = faketime

    def command(self) -> list[str]:
        program = [str(TESTS / "fakesource.py")] if self.fake_source is not None else ["-m", "syncd"]
        return [sys.executable, *program, "--config", str(self.config_path)]

    def spawn(self) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self.proc
