"""The installed ``topoipam`` console script in a subprocess: the real interpreter start, argv, env, streams, exit codes."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import sqlite_dump

SCRIPT = pathlib.Path(sys.executable).parent / "topoipam"
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason=f"console script not installed next to {sys.executable}")

WIDE_DEFAULT = (
    "NAME                  CIDR             NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   ASSIGNMENTMODE   \n"
    "default-ipv4-ippool   192.168.0.0/16   true   Always     Never       false      false              all()      Automatic        \n"
    "\n"
)


def run(*argv, stdin="", env=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CALICO_", "TOPOIPAM_", "NO_DEFAULT"))}
    return subprocess.run([str(SCRIPT), *argv], input=stdin, text=True, capture_output=True,
                          env={**base, **(env or {})}, timeout=60)


def test_init_and_wide_table_through_env_var(sqlite_url):
    env = {"TOPOIPAM_DATASTORE": sqlite_url}
    r = run("init", env=env)
    assert r.returncode == 0 and r.stderr == "" and "default-ipv4-ippool" in r.stdout
    r = run("get", "ippool", "-o", "wide", env=env)
    assert (r.returncode, r.stdout, r.stderr) == (0, WIDE_DEFAULT, "")


def test_datastore_flag_wins_over_env(tmp_path, sqlite_url):
    run("--datastore", sqlite_url, "init")
    other = f"sqlite://{tmp_path}/other.db"
    r = run("--datastore", sqlite_url, "get", "ippool", env={"TOPOIPAM_DATASTORE": other})
    assert "default-ipv4-ippool" in r.stdout
    assert not (tmp_path / "other.db").exists()


def test_default_datastore_under_user_data_dir(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    r = run("init", env=env)
    assert r.returncode == 0, r.stderr
    db = tmp_path / "data" / "topoipam" / "topoipam.db"
    assert db.exists()
    assert "default-ipv4-ippool" in run("get", "pools", env=env).stdout


def test_bad_input_exit_2_no_traceback_nothing_written(sqlite_url):
    run("--datastore", sqlite_url, "init")
    before = sqlite_dump(sqlite_url)
    r = run("--datastore", sqlite_url, "create", "-f", "-", stdin="kind: IPPool\nmetadata: [\n")
    assert r.returncode == 2 and r.stdout == ""
    assert "cannot parse YAML" in r.stderr and "Traceback" not in r.stderr
    r = run("--datastore", sqlite_url, "create", "-f", "-",
            stdin="apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: x}\nspec: {cidr: 192.168.5.0/24}\n")
    assert r.returncode == 2
    assert r.stderr == ("failed to create 'IPPool' resource: [error with field IPPool.Spec.CIDR = '192.168.5.0/24' "
                        "(IPPool(x) CIDR overlaps with IPPool(default-ipv4-ippool) CIDR 192.168.0.0/16)]\n")
    assert sqlite_dump(sqlite_url) == before


def test_usage_error_and_operation_failure_codes(sqlite_url):
    r = run("--datastore", sqlite_url, "get")
    assert r.returncode == 2 and "KIND" in r.stderr and "Traceback" not in r.stderr
    r = run("--datastore", sqlite_url, "delete", "ippool", "nope")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "Failed to delete 'IPPool' resource: resource does not exist: IPPool(nope) with error: <nil>\n"


def test_unavailable_datastore_exit_3(tmp_path):
    (tmp_path / "dir").mkdir()
    r = run("--datastore", f"sqlite://{tmp_path}/dir", "get", "ippool")
    assert r.returncode == 3 and "Traceback" not in r.stderr and r.stderr.strip()


def test_get_wide_does_not_load_yaml(sqlite_url):
    """JSON/YAML and PyYAML stay off the table path (lean start-up)."""
    run("--datastore", sqlite_url, "init")
    code = ("import sys; from topoipam.cli.main import main; "
            f"rc = main(['--datastore', {sqlite_url!r}, 'get', 'ippool', '-o', 'wide']); "
            "heavy = [m for m in ('yaml', 'topoipam.model.codec', 'uuid') if m in sys.modules]; "
            "print(rc, heavy, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip() == "0 []" and "default-ipv4-ippool" in r.stdout
