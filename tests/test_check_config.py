"""`syncd --check-config PATH` and the install lines the docs give.

--check-config validates as a start would, prints the resolved config with its secrets masked, and
exits 0 or 78 without starting anything: no database connection, no socket, no lock, no state_dir.
Every install line in README.md, docs/ and systemd/ works from a checkout (no `syncd[...]` package
name, which is not on any index), and names only extras pyproject.toml declares; the pages say each
heading once, and a README section named elsewhere exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from test_fault_startup import closed_port

from syncd.checkconfig import mask_url
from syncd.control.curve import generate_keypair
from syncd.sources import SourceUnavailable
from syncd.sources.base import require_extra

REPO = Path(__file__).resolve().parent.parent
EX_CONFIG = 78
PASSWORD = "pw-s3cr3t-7788"
TOKEN = "tushare-token-0123456789abcdef"


def check_config(folder: Path, text: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = folder / "config.toml"
    path.write_text(text)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    return subprocess.run([sys.executable, "-m", "syncd", "--check-config", str(path)], cwd=folder, capture_output=True,
                          text=True, timeout=60, env={**base, **(env or {})})


def test_a_valid_config_prints_resolved_and_masked_and_starts_nothing(short_tmp):
    public, secret = generate_keypair()
    dsn = f"postgresql://syncd:{PASSWORD}@127.0.0.1:{closed_port()}/market"  # nothing listens: never connected to
    webhook = "https://oapi.dingtalk.com/robot/send?access_token=abcdef0123456789"
    text = (f'[daemon]\nendpoint = "tcp://0.0.0.0:7788"\nstate_dir = "state"\ncurve_public_key = "{public}"\n'
            f'curve_secret_key = "{secret}"\n[database]\ndsn = "{dsn}"\nschema = "syncd"\n'
            f'[source]\nname = "tushare"\n[source.tushare]\ntoken = "{TOKEN}"\n[alert]\nwebhook_url = "{webhook}"\n')
    began = time.monotonic()
    result = check_config(short_tmp, text)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 30  # no connect timeout waited out
    printed = tomllib.loads(result.stdout)
    assert printed["daemon"]["state_dir"] == str(short_tmp / "state")  # resolved
    assert printed["database"]["schema"] == "syncd" and printed["source"]["name"] == "tushare"
    assert printed["daemon"]["curve_public_key"] == public
    for secret_text in (PASSWORD, secret, TOKEN, "abcdef0123456789"):
        assert secret_text not in result.stdout + result.stderr
    assert printed["alert"]["webhook_url"] == "https://oapi.dingtalk.com/robot/send?access_token=***"
    assert not (short_tmp / "state").exists()  # no state_dir, no lock, no embedded database


def test_environment_overrides_show_in_the_resolved_config(short_tmp):
    result = check_config(short_tmp, "", env={"SYNCD_DSN": f"host=db.internal dbname=market password={PASSWORD}"})
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["database"]["dsn"] == "host=db.internal dbname=market password=***"


@pytest.mark.parametrize("text,names", [
    ('[schedule]\ndaily_at = "25:00"\n', ["schedule.daily_at"]),
    ('[daemon]\nendpoint = "tcp://0.0.0.0:7788"\n', ["daemon.endpoint", "curve"]),
    ('[database]\nlock_dsn = "host=x"\n', ["database.lock_dsn", "database.dsn"]),
    ('[database]\ndsn = "host=x options=\'-F\'"\n', ["database.dsn", "'-F'"]),
    ('[database]\ndsn = "host=x options=\'-c search_path=a\'"\nschema = "b"\n', ["database.schema", "search_path"]),
    ('[source]\nname = "tushare"\n', ["tushare", "token"]),
    ('[source]\nname = "demo"\nfallback = ["tushare"]\n', ["source.fallback[0]", "tushare", "token"]),
    ('[daemon]\ncurve_public_key = "x"\n', ["curve_public_key"]),
])
def test_a_bad_config_exits_78_with_one_line_naming_the_key(short_tmp, text, names):
    result = check_config(short_tmp, text)
    assert result.returncode == EX_CONFIG, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("syncd: "), result.stderr
    for name in names:
        assert name in lines[0]
    assert result.stdout == ""


def test_a_missing_file_exits_78(short_tmp):
    result = subprocess.run([sys.executable, "-m", "syncd", "--check-config", str(short_tmp / "nope.toml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EX_CONFIG and "cannot read config file" in result.stderr


def test_the_shipped_configs_check_clean(short_tmp):
    for name in ("config.toml", "systemd/config.production.toml"):
        text = (REPO / name).read_text()
        result = check_config(short_tmp, text, env={"SYNCD_DSN": "host=db.internal dbname=market"})
        assert result.returncode == 0, f"{name}: {result.stderr}"


@pytest.mark.parametrize("url,masked", [
    ("https://oapi.dingtalk.com/robot/send?access_token=abc123def456", "https://oapi.dingtalk.com/robot/send?access_token=***"),
    ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***"),
    ("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
     "https://hooks.slack.com/services/***/***/***"),
    ("https://user:pw@alerts.example/hook", "https://user:***@alerts.example/hook"),
    ("", ""),
])
def test_webhook_urls_keep_their_host_and_lose_their_tokens(url, masked):
    assert mask_url(url) == masked


def test_the_systemd_unit_checks_the_config_before_starting():
    unit = (REPO / "systemd/syncd.service").read_text()
    assert "ExecStartPre=/opt/syncd/venv/bin/syncd --check-config /etc/syncd/config.toml" in unit


# --- install lines -----------------------------------------------------------------------------

def _doc_files() -> list[Path]:
    return [REPO / "README.md", REPO / "config.toml", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "systemd").iterdir()),
            *sorted((REPO / "syncd").rglob("*.py"))]


def test_no_install_line_names_a_package_that_is_on_no_index():
    offenders = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in _doc_files()
                 for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\bsyncd\[", line)]
    assert offenders == []


def test_every_extra_the_docs_install_is_declared():
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {extra for path in _doc_files() for extra in re.findall(r"\.\[([a-z,]+)\]", path.read_text())
             for extra in extra.split(",")}
    assert named and named <= declared, named - declared


def test_a_missing_extra_names_the_install_line_that_works_from_a_checkout():
    with pytest.raises(SourceUnavailable, match=r"pip install -e '\.\[akshare\]'"):
        require_extra("syncd_no_such_module", "akshare")


def test_the_configuration_page_shows_check_config():
    page = (REPO / "docs/configuration.md").read_text()
    assert "syncd --check-config" in page and "python -c" not in page



def test_every_page_has_each_section_heading_once():
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        headings = [line for line in page.read_text().splitlines() if re.match(r"#{2,3} ", line)]
        assert len(headings) == len(set(headings)), (page.name, sorted({h for h in headings if headings.count(h) > 1}))


def test_every_readme_section_named_elsewhere_exists():
    """config.toml once pointed at a README "Configuration" section that was not there."""
    headings = {line.lstrip("#").strip() for line in (REPO / "README.md").read_text().splitlines() if line.startswith("#")}
    named = {(path.name, name) for path in [*_doc_files(), *sorted((REPO / "syncctl").rglob("*.py"))]
             for name in re.findall(r'README(?:\.md)?,? "([^"]+)"', path.read_text())}
    assert named and {(where, name) for where, name in named if name not in headings} == set()
