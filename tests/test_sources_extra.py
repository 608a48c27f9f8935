"""Choosing a real source whose extra is not installed stops syncd with one line and the pip command."""

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.parametrize("source", ["akshare", "baostock"])
def test_missing_extra_stops_syncd_with_the_pip_command(short_tmp, source):
    if importlib.util.find_spec(source) is not None:
        pytest.skip(f"{source} is installed here")
    config = short_tmp / "config.toml"
    config.write_text(f'[daemon]\nendpoint = "ipc://s.sock"\nstate_dir = "st"\n[source]\nname = "{source}"\n')
    result = subprocess.run([sys.executable, "-m", "syncd", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"pip install -e '.[{source}]'" in lines[0]
    assert not (short_tmp / "st" / "pgdata").exists()  # refused before starting anything


def test_source_modules_import_without_their_libraries():
    import syncd.sources.akshare  # noqa: F401
    import syncd.sources.baostock  # noqa: F401
    import syncd.sources.tushare  # noqa: F401


@pytest.mark.parametrize("source", ["akshare", "baostock"])
def test_the_daemon_process_never_imports_a_source_library(source):
    """The libraries run in child processes (isolation.py): building the source imports none of them here."""
    pytest.importorskip(source)
    code = (f"import sys; from syncd.config import SourceConfig; from syncd.sources import load_source; "
            f"s = load_source(SourceConfig(name='{source}')); s.close(); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in ('akshare', 'baostock', 'pandas')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
