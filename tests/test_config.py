"""config.toml: defaults, resolution, env overrides, and errors that name the key and what was expected."""

import subprocess
import sys

import pytest

from syncd.config import ConfigError, load_config, parse_config


def test_defaults_match_the_contract():
    config = parse_config(b"")
    assert config.daemon.endpoint == "ipc://var/syncd.sock" and config.daemon.socket_mode == "0660"
    assert config.database.dsn == "" and config.database.compat_view is False
    assert config.source.name == "demo" and config.source.demo.stocks == 5300
    assert (config.schedule.timezone, config.schedule.daily_at, config.schedule.missing_at) == ("Asia/Shanghai", "20:00", "21:00")
    assert (config.sync.max_days, config.sync.retries, config.sync.retry_backoff_s) == (12000, 3, 5.0)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\nendpoint = "ipc://run/s.sock"\nstate_dir = "state"\n')
    config = load_config(path, env={})
    assert config.daemon.endpoint == f"ipc://{tmp_path}/run/s.sock"
    assert config.daemon.state_dir == str(tmp_path / "state")


def test_env_overrides_dsn_and_endpoint(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("")
    config = load_config(path, env={"SYNCD_DSN": "postgresql://db/x", "SYNCD_ENDPOINT": "tcp://127.0.0.1:5555"})
    assert config.database.dsn == "postgresql://db/x" and config.daemon.endpoint == "tcp://127.0.0.1:5555"


@pytest.mark.parametrize("text,names", [
    ('[daemon]\nendpoit = "x"\n', ["endpoit", "daemon"]),
    ('[sync]\nretries = "three"\n', ["sync.retries", "int"]),
    ('[schedule]\ndaily_at = "8pm"\n', ["schedule.daily_at", "HH:MM"]),
    ('[schedule]\nmissing_at = "24:00"\n', ["schedule.missing_at", "HH:MM"]),
    ('[schedule]\ntimezone = "Asia/Beijing"\n', ["schedule.timezone", "Asia/Beijing"]),
    ('[source]\nname = "yahoo"\n', ["source.name", "tushare"]),
    ('[daemon]\nsocket_mode = "rw-rw----"\n', ["daemon.socket_mode", "octal"]),
    ('[log]\nlevel = "loud"\n', ["log.level"]),
    ('[sync\n', ["TOML"]),
])
def test_bad_config_names_the_key(text, names):
    with pytest.raises(ConfigError) as error:
        parse_config(text.encode())
    for name in names:
        assert name in str(error.value)


def test_schedule_accepts_seconds():
    assert parse_config(b'[schedule]\ndaily_at = "20:00:30"\n').schedule.daily_at == "20:00:30"


def test_syncd_with_a_bad_config_exits_at_once_naming_the_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[schedule]\ndaily_at = "25:61"\n')
    result = subprocess.run([sys.executable, "-m", "syncd", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert "schedule.daily_at" in result.stderr and "Traceback" not in result.stderr


def test_syncd_with_a_missing_config_file_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "syncd", "--config", str(tmp_path / "nope.toml")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "nope.toml" in result.stderr


def test_endpoint_path_too_long_for_a_unix_socket_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="daemon.endpoint"):
        load_config(_write(tmp_path, f'[daemon]\nendpoint = "ipc://{"x" * 120}/s.sock"\n'), env={})


def _write(folder, text):
    path = folder / "config.toml"
    path.write_text(text)
    return path


def _config_keys(struct: type, prefix: str = ""):
    """(dotted key, default) for every leaf of the config Structs."""
    import msgspec.inspect as mi

    for field in mi.type_info(struct).fields:
        if isinstance(field.type, mi.StructType):
            yield from _config_keys(field.type.cls, f"{prefix}{field.name}.")
        else:
            default = field.default if field.default is not mi.NODEFAULT else field.default_factory()
            yield f"{prefix}{field.name}", default


def test_the_configuration_page_lists_every_key_with_its_default():
    import json
    import re
    from pathlib import Path

    from syncd.config import Config

    page = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)` \|", page, flags=re.MULTILINE))
    in_code = {key: json.dumps(default) for key, default in _config_keys(Config)}
    assert sorted(set(in_code) - set(documented)) == [], "keys missing from docs/configuration.md"
    assert sorted(set(documented) - set(in_code)) == [], "docs/configuration.md lists keys the code does not have"
    assert {k: v for k, v in documented.items() if v != in_code[k]} == {}, "defaults differ from the code's"
