"""The local server's settings, conf, checks and CLI errors; no database, no Java run."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from circuitstore.cli import cli
from circuitstore.schema.errors import ConfigError, ServerError
from circuitstore.server import assemble, config, process

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def conf_dict(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_conf_is_loopback_only_with_auth(tmp_path):
    conf = conf_dict(config.render_conf(config.ServerSettings(tmp_path)))
    assert conf["server.default_listen_address"] == "127.0.0.1"
    assert conf["dbms.security.auth_enabled"] == "true"
    assert conf["server.https.enabled"] == "false"
    assert conf["dbms.usage_report.enabled"] == "false"
    assert not any("0.0.0.0" in value for value in conf.values())


def test_conf_has_ports_memory_and_folders(tmp_path):
    settings = config.ServerSettings(tmp_path, 17687, 17474, heap="1G", pagecache="512MB")
    conf = conf_dict(config.render_conf(settings))
    assert conf["server.bolt.listen_address"] == ":17687"
    assert conf["server.http.listen_address"] == ":17474"
    assert conf["server.memory.heap.max_size"] == "1g"
    assert conf["server.memory.pagecache.size"] == "512m"
    assert conf["server.directories.data"] == str(tmp_path / "data")
    assert settings.bolt_uri == "bolt://127.0.0.1:17687"
    assert settings.browser_url == "http://127.0.0.1:17474/browser/"


def test_defaults_fit_two_cores_24_gib(tmp_path):
    settings = config.ServerSettings(tmp_path)
    assert (settings.heap, settings.pagecache) == ("2g", "2g")
    assert (settings.bolt_port, settings.http_port) == (7687, 7474)


def test_jvm_command_carries_heap_and_launcher_flags(tmp_path):
    cmd = config.jvm_command(config.ServerSettings(tmp_path, heap="1g"), "java")
    assert cmd[:3] == ["java", "-Xms1g", "-Xmx1g"]
    assert "--add-opens=java.base/java.nio=ALL-UNNAMED" in cmd
    assert "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED" in cmd
    assert cmd[cmd.index("-cp") + 1] == f"{tmp_path}/lib/*:{tmp_path}/conf/*"
    assert cmd[-4:] == [
        "org.neo4j.server.CommunityEntryPoint",
        f"--home-dir={tmp_path}",
        f"--config-dir={tmp_path / 'conf'}",
        "--console-mode",
    ]


@pytest.mark.parametrize(("given", "normal"), [("2g", "2g"), ("512MB", "512m"), ("1GiB", "1g")])
def test_sizes_are_normalised(given, normal):
    assert config.parse_size(given, "--heap") == normal


@pytest.mark.parametrize("bad", ["", "lots", "0g", "1.5g", "12"])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ConfigError, match="--heap"):
        config.ServerSettings(Path("/x"), heap=bad)


def test_bad_ports_are_refused():
    with pytest.raises(ConfigError, match="--bolt-port 0"):
        config.ServerSettings(Path("/x"), bolt_port=0)
    with pytest.raises(ConfigError, match="different ports"):
        config.ServerSettings(Path("/x"), bolt_port=7000, http_port=7000)


def test_password_rules_never_echo_the_password():
    assert config.validate_password("longenough") == "longenough"
    with pytest.raises(ConfigError, match="NEO4J_PASSWORD is not set"):
        config.validate_password(None)
    with pytest.raises(ConfigError, match="at least 8") as info:
        config.validate_password("short7!")
    assert "short7!" not in str(info.value)


def test_port_in_use_is_detected_and_named(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        assert config.port_in_use(busy)
        settings = config.ServerSettings(tmp_path, bolt_port=busy, http_port=busy + 1)
        with pytest.raises(ConfigError, match=f"port {busy} .*--bolt-port"):
            config.check_ports_free(settings)
    assert not config.port_in_use(busy)


def test_default_home_follows_environment(tmp_path):
    assert config.default_home({"CIRCUITSTORE_HOME": str(tmp_path)}) == tmp_path / "neo4j"
    xdg = config.default_home({"XDG_DATA_HOME": str(tmp_path)})
    assert xdg == tmp_path / "circuitstore" / "neo4j"


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("NEO4J_server_memory_pagecache_size", "server.memory.pagecache.size"),
        ("NEO4J_server_memory_heap_max__size", "server.memory.heap.max_size"),
        ("NEO4J_dbms_usage__report_enabled", "dbms.usage_report.enabled"),
        ("NEO4J_AUTH", None),
        ("NEO4J_HOME", None),
        ("JAVA_HOME", None),
    ],
)
def test_env_to_setting_matches_the_official_image(name, setting):
    assert config.env_to_setting(name) == setting


def run_entrypoint(tmp_path: Path, **env: str) -> tuple[dict[str, str], list[str]]:
    """docker/entrypoint.sh in dry-run mode: writes neo4j.conf and prints the java command."""
    base = {"PATH": os.environ["PATH"], "NEO4J_HOME": str(tmp_path)}
    base["CIRCUITSTORE_ENTRYPOINT_DRY_RUN"] = "1"
    out = subprocess.run(
        ["bash", str(ENTRYPOINT)], env={**base, **env}, capture_output=True, text=True, check=True
    )
    return conf_dict((tmp_path / "conf" / "neo4j.conf").read_text()), out.stdout.splitlines()


def test_entrypoint_maps_env_to_settings_and_heap(tmp_path):
    conf, cmd = run_entrypoint(
        tmp_path,
        NEO4J_AUTH="neo4j/containerpw",
        NEO4J_server_memory_heap_max__size="1G",
        NEO4J_server_memory_pagecache_size="512m",
        NEO4J_server_jvm_additional="-Dx.y=1\n-Dx.z=2",
    )
    assert conf["server.default_listen_address"] == "0.0.0.0"
    assert conf["server.memory.pagecache.size"] == "512m"
    assert conf["dbms.security.auth_enabled"] == "true"
    assert "-Xmx1g" in cmd
    assert "-Dx.y=1" in cmd
    assert "-Dx.z=2" in cmd
    assert "server.jvm.additional" not in conf
    assert not any("containerpw" in line for line in cmd)
    assert cmd[-1] == "--console-mode"


def test_entrypoint_auth_none_and_short_password(tmp_path):
    conf, _ = run_entrypoint(tmp_path, NEO4J_AUTH="none")
    assert conf["dbms.security.auth_enabled"] == "false"
    with pytest.raises(subprocess.CalledProcessError) as info:
        run_entrypoint(tmp_path, NEO4J_AUTH="neo4j/short")
    assert "at least 8" in info.value.stderr


def fake_java(tmp_path: Path, version: str) -> Path:
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-01' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return java


def test_java_17_is_accepted_and_11_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path / "a", "17.0.2").parents[1]))
    assert assemble.find_java().endswith("java")
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path / "b", "11.0.20").parents[1]))
    with pytest.raises(ServerError, match=r"Java 11; Neo4j 5\.26 needs Java 17"):
        assemble.find_java()
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path / "c", "1.8.0_392").parents[1]))
    with pytest.raises(ServerError, match="Java 8"):
        assemble.find_java()


def test_missing_java_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerError, match="Java is not installed"):
        assemble.find_java()


def test_unwritable_home_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ServerError, match=f"cannot write to the data directory {blocker}/home"):
        assemble.ensure_writable(blocker / "home")


def test_pom_versions_are_pinned():
    versions = assemble.read_versions(assemble.pom_path())
    assert versions.neo4j.startswith("5.26.")
    assert versions.browser


def test_lib_is_reused_when_marker_matches(tmp_path, monkeypatch):
    versions = assemble.Versions("5.26.30", "5.24.0")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / assemble.MARKER).write_text(versions.marker_text())

    def no_maven(*_args):
        raise AssertionError("Maven must not run")

    monkeypatch.setattr(assemble, "run_maven", no_maven)
    assert assemble.ensure_lib(tmp_path, Path("pom.xml"), versions) is False


def test_maven_failure_is_one_line(tmp_path, monkeypatch):
    mvn = tmp_path / "mvn"
    mvn.write_text(
        "#!/bin/sh\necho '[ERROR] Failed to execute goal: Could not transfer artifact'\nexit 1\n"
    )
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert shutil.which("mvn") == str(mvn)
    with pytest.raises(ServerError) as info:
        assemble.run_maven(Path("pom.xml"), tmp_path / "lib")
    message = str(info.value)
    assert "\n" not in message
    assert "Could not transfer artifact" in message
    assert "Maven Central" in message


def test_status_of_an_empty_home_is_stopped(tmp_path):
    assert process.status(tmp_path).running is False
    (tmp_path / "run").mkdir()
    (tmp_path / process.PID_FILE).write_text(f"{os.getpid()}\n")  # alive, but not a server
    assert process.status(tmp_path).running is False


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["server", "start", "--home", str(tmp_path)], env={"NEO4J_PASSWORD": ""}
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: NEO4J_PASSWORD is not set; export NEO4J_PASSWORD with a password of at least "
        "8 characters"
    ]
    result = runner.invoke(cli, ["server", "logs", "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1


def test_cli_status_and_stop_when_nothing_runs(tmp_path):
    runner = CliRunner()
    assert "stopped" in runner.invoke(cli, ["server", "status", "--home", str(tmp_path)]).output
    result = runner.invoke(cli, ["server", "stop", "--home", str(tmp_path)])
    assert (result.exit_code, result.output.strip()) == (0, "not running")
