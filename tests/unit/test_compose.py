"""docker-compose.yml cannot run here (no Docker engine): check it statically against the
files and settings of the local stack, so both keep describing the same system."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from callrec.ari.client import REST_CONNECTIONS
from callrec.settings import Settings
from devstack.asterisk import load_defaults, render_conf
from devstack.paths import ASTERISK_CONF, REPO
from devstack.stack import SERVICE_NICE

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
ENV_EXAMPLE = dict(
    line.split("=", 1) for line in (REPO / "deploy/env.example").read_text().splitlines()
    if line and not line.startswith("#")
)


def _interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:?message} with values from deploy/env.example."""
    return re.sub(r"\$\{(\w+)(:\?[^}]*)?\}", lambda m: ENV_EXAMPLE[m.group(1)], value)


def _env(service: str) -> dict[str, str]:
    return {k: _interpolate(str(v)) for k, v in COMPOSE["services"][service]["environment"].items()}


def test_services_and_build_files_exist() -> None:
    assert set(COMPOSE["services"]) == {"asterisk", "postgres", "callrec"}
    for name in ("asterisk", "callrec"):
        context = REPO / COMPOSE["services"][name]["build"]
        dockerfile = context / "Dockerfile"
        assert dockerfile.is_file(), dockerfile
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    matches = list(context.glob(src))
                    assert matches, f"{dockerfile}: COPY source {src} does not exist"


def test_bind_mounted_files_exist() -> None:
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source


def test_asterisk_environment_names_only_known_placeholders() -> None:
    defaults = load_defaults()
    assert set(_env("asterisk")) <= set(defaults)
    assert _env("asterisk")["SIP_PORT"] == defaults["SIP_PORT"] == "5060"
    assert _env("asterisk")["ARI_PORT"] == defaults["ARI_PORT"] == "8088"
    published = COMPOSE["services"]["asterisk"]["ports"]
    assert f"{defaults['SIP_PORT']}:{defaults['SIP_PORT']}/udp" in published
    rtp = f"{defaults['RTP_START']}-{defaults['RTP_END']}"
    assert f"{rtp}:{rtp}/udp" in published


def test_callrec_environment_is_a_complete_configuration() -> None:
    env = _env("callrec")
    settings = Settings.from_env(env)  # raises ConfigError for anything missing
    assert settings.ari_url == f"http://asterisk:{_env('asterisk')['ARI_PORT']}"
    assert settings.ari_password == _env("asterisk")["ARI_PASSWORD"]
    assert settings.ari_user == _env("asterisk")["ARI_USER"]
    assert settings.app_name == _env("asterisk")["ARI_APP"]
    assert f"127.0.0.1:{settings.web_port}:{settings.web_port}" in (
        COMPOSE["services"]["callrec"]["ports"])
    assert "callrec_app" in settings.database_url  # the service never runs as the owner
    assert "@postgres:5432/" in settings.database_url
    # routing and prompts are edited in the console: in the volume, seeded from the image
    volume_root = next(v.split(":")[1] for v in COMPOSE["services"]["callrec"]["volumes"])
    for path in (settings.config_path, settings.prompts_dir):
        assert Path(path).is_relative_to(volume_root), path
    start = (REPO / "deploy" / "start-callrec.sh").read_text()
    assert "$seed/config/demo.toml" in start and (REPO / "config" / "demo.toml").is_file()
    # Every CALLREC_ variable the local stack sets for the service exists in compose too.
    stack_keys = {"CALLREC_DATABASE_URL", "CALLREC_DATABASE_OWNER_URL", "CALLREC_ARI_URL",
                  "CALLREC_ARI_USER", "CALLREC_ARI_PASSWORD", "CALLREC_SIP_HOST",
                  "CALLREC_SIP_PORT", "CALLREC_WEB_URL", "CALLREC_ARCHIVE_DIR",
                  "CALLREC_CONFIG", "CALLREC_SECRET_KEY"}
    assert stack_keys <= set(env)


def test_callrec_has_the_same_cpu_priority_as_on_the_local_stack() -> None:
    # the kernel's weights (kernel/sched/core.c, sched_prio_to_weight): nice 0 is 1024
    weight = {0: 1024, -5: 3121, -10: 9548, -15: 29154}
    assert COMPOSE["services"]["callrec"]["cpu_shares"] == weight[SERVICE_NICE]
    assert "cpu_shares" not in COMPOSE["services"]["asterisk"]


def test_postgres_roles_match_the_callrec_urls() -> None:
    pg = _env("postgres")
    env = _env("callrec")
    assert f"callrec_app:{pg['CALLREC_APP_PASSWORD']}@" in env["CALLREC_DATABASE_URL"]
    assert f"callrec_owner:{pg['CALLREC_OWNER_PASSWORD']}@" in env["CALLREC_DATABASE_OWNER_URL"]


def test_no_default_password_reaches_compose() -> None:
    """Outside the demo profile no password has a default: compose refuses to start."""
    raw = (REPO / "docker-compose.yml").read_text()
    for key in ("ARI_PASSWORD", "POSTGRES_PASSWORD", "CALLREC_SECRET_KEY",
                "CALLREC_OWNER_PASSWORD", "CALLREC_APP_PASSWORD", "AGENT1_PASSWORD"):
        assert re.search(r"\$\{" + key + r":\?", raw), key


@pytest.mark.timeout(30)
def test_docker_rendering_equals_the_local_stack_rendering(tmp_path: Path) -> None:
    """render-conf.sh (Docker image) and devstack.render_conf (make up) give the same files."""
    values = {"SIP_PORT": "5999", "ARI_PASSWORD": "s3cret&|/x", "AGENT_HOST": "10.0.0.5"}
    docker_out = tmp_path / "docker"
    subprocess.run([str(ASTERISK_CONF / "render-conf.sh"), str(docker_out)], check=True,
                   env={**os.environ, **values})
    local_out = tmp_path / "local"
    render_conf(values, local_out)
    names = sorted(p.name for p in local_out.iterdir())
    assert names == sorted(p.name for p in docker_out.iterdir())
    for name in names:
        assert (docker_out / name).read_text() == (local_out / name).read_text(), name
    assert "bind = 127.0.0.1:5999" in (local_out / "pjsip.conf").read_text()
    assert "password = s3cret&|/x" in (local_out / "ari.conf").read_text()


def test_asterisk_takes_every_connection_callrec_may_open() -> None:
    """Up to REST_CONNECTIONS requests at once plus the events websocket: Asterisk must not
    turn one of them away under load."""
    text = (ASTERISK_CONF / "http.conf").read_text()
    limit = re.search(r"^sessionlimit\s*=\s*(\d+)", text, re.MULTILINE)
    assert limit is not None, "http.conf sets no sessionlimit (Asterisk's default is 100)"
    assert int(limit.group(1)) > REST_CONNECTIONS + 1


def test_the_containers_refuse_the_example_secrets(tmp_path: Path) -> None:
    """deploy/env.example copied as it is would run with passwords anyone can read here."""
    start = [str(REPO / "deploy" / "start-callrec.sh"), "--check-only"]
    base = {"PATH": os.environ["PATH"]}
    refused = subprocess.run(start, env={**base, **_env("callrec")}, capture_output=True,
                             text=True, timeout=10)
    assert refused.returncode == 1
    assert "CALLREC_SECRET_KEY" in refused.stderr and "CALLREC_ARI_PASSWORD" in refused.stderr
    real = {k: v.replace("change-me", "s3cret") for k, v in _env("callrec").items()}
    assert subprocess.run(start, env={**base, **real}, timeout=10).returncode == 0
    rendered = subprocess.run([str(ASTERISK_CONF / "render-conf.sh"), str(tmp_path / "out")],
                              env={**os.environ, **_env("asterisk")}, capture_output=True,
                              text=True, timeout=10)
    assert rendered.returncode == 1 and "ARI_PASSWORD" in rendered.stderr
    init = (REPO / "deploy" / "postgres-init.sh").read_text()
    assert "change-me*)" in init and init.index("change-me*)") < init.index("psql")


def test_compose_keeps_what_must_outlive_a_container() -> None:
    assert "asterisk-spool:/var/spool/asterisk" in COMPOSE["services"]["asterisk"]["volumes"]
    grace = COMPOSE["services"]["callrec"]["stop_grace_period"]
    from callrec.calls.manager import HANDBACK_TIMEOUT, WRITES_DRAIN_TIMEOUT
    assert int(grace.rstrip("s")) > HANDBACK_TIMEOUT + WRITES_DRAIN_TIMEOUT
