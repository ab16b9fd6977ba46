"""Settings and the command line: bad input is one line naming the setting, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, Listen, build, load, load_file, parse_listen

REPO = Path(__file__).resolve().parents[1]
BASE = {"upstream": "http://127.0.0.1:5000", "notary": "https://127.0.0.1:4443"}


def pullgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=30)


def test_flags_alone_make_a_config_with_docker_style_gun_prefix() -> None:
    config = build({}, BASE)
    assert config.upstream.registry == "http://127.0.0.1:5000"
    assert config.upstream.gun_prefix == "127.0.0.1:5000"
    assert config.listen == Listen("127.0.0.1", 5050)
    assert config.trust.role_order == ("targets/releases", "targets")


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("listen: 127.0.0.1:6000\nupstream:\n  registry: http://a:1\n  notary: https://n:2\n"
                    "  gun_prefix: registry.example.com\ntrust:\n  refresh_interval: 5\n")
    config = load(path, {"listen": "[::1]:7000", "upstream": None})
    assert config.listen == Listen("::1", 7000)
    assert str(config.listen) == "[::1]:7000"
    assert config.upstream.registry == "http://a:1"
    assert config.upstream.gun_prefix == "registry.example.com"
    assert config.trust.refresh_interval == 5


def test_sample_config_parses() -> None:
    config = load(REPO / "config" / "pullgate.yaml", {})
    assert config.upstream.notary == "https://127.0.0.1:4443"
    assert config.trust.open_blobs == frozenset()
    assert config.state_dir == Path("/var/lib/pullgate")
    assert (config.upstream_timeout, config.client_head_timeout) == (30, 30)


@pytest.mark.parametrize("document, overrides, setting", [
    ({}, {"notary": "https://n"}, "upstream.registry"),
    ({}, {"upstream": "ftp://x", "notary": "https://n"}, "upstream.registry"),
    ({}, {"upstream": "http://x/v2", "notary": "https://n"}, "upstream.registry"),
    ({}, {"upstream": "http://x:99999", "notary": "https://n"}, "upstream.registry"),
    ({}, {"upstream": "http://x"}, "upstream.notary"),
    ({"listen": "nowhere"}, BASE, "listen"),
    ({"listen": "::1:5050"}, BASE, "listen"),
    ({"trust": {"refresh_interval": -1}}, BASE, "trust.refresh_interval"),
    ({"trust": {"roles": ["releases"]}}, BASE, "trust.roles"),
    ({"trust": {"colour": 1}}, BASE, "trust.colour"),
    ({"upstreams": "x"}, BASE, "upstreams"),
    ({"upstreams": [{"registry": "http://a", "notary": "http://n", "colour": 1}]}, {}, "upstreams[0].colour"),
    ({"upstreams": [{"registry": "http://a", "notary": "http://n", "path_prefix": "a/b"}]}, {},
     "upstreams[0].path_prefix"),
    ({"upstreams": [{"registry": "http://a", "notary": "http://n", "namespaces": ["x"]},
                    {"registry": "http://b", "notary": "http://n", "namespaces": ["x"]}]}, {}, "upstreams"),
    ({"trust": {"repositories": {"library/demo": {"roles": []}}}}, BASE, "trust.repositories.library/demo.roles"),
    ({"trust": {"repositories": {"Bad": {"roles": ["targets"]}}}}, BASE, "trust.repositories.Bad"),
    ({"upstream": {"pinning": {"keys": {"g": ["short"]}}}}, BASE, "upstream.pinning.keys"),
    ({"upstream": {"pinning": {"ca": {"g/": "/nonexistent.pem"}}}}, BASE, "upstream.pinning.ca.g/"),
    ({"upstream": {"pinning": {"disable_tofu": "yes"}}}, BASE, "upstream.pinning.disable_tofu"),
    ({"upstream": {"notary_auth": {"username": "u"}}}, BASE, "upstream.notary_auth"),
    ({"timeouts": {"client_head": 0}}, BASE, "timeouts.client_head"),
    ({"timeouts": {"client_send": "slow"}}, BASE, "timeouts.client_send"),
    ({"timeouts": {"shutdown": -1}}, BASE, "timeouts.shutdown"),
    ({"cache": {"manifest_bytes": 1.5}}, BASE, "cache.manifest_bytes"),
    ({"trust": {"max_metadata_bytes": 2048.5}}, BASE, "trust.max_metadata_bytes"),
    ({"timeouts": {"client": 5}}, BASE, "timeouts.client"),
    ({}, {**BASE, "gun_prefix": " "}, "upstream.gun_prefix"),
    ({}, {**BASE, "gun_prefix": "/x"}, "upstream.gun_prefix"),
    ({"upstream": {"gun_prefix": "a\tb"}}, BASE, "upstream.gun_prefix"),
])
def test_bad_settings_name_the_setting(document: dict, overrides: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(document, overrides)
    assert caught.value.setting == setting
    assert str(caught.value).startswith(f"{setting}: ")


def test_parse_listen_accepts_ipv6_in_brackets() -> None:
    assert parse_listen("[::1]:5050") == Listen("::1", 5050)


def test_cli_config_error_is_one_line_and_exit_2() -> None:
    result = pullgate("serve", "--upstream", "http://127.0.0.1:5000")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pullgate: config error: upstream.notary: required: an http:// or https:// URL"
    ]


def test_cli_bad_flag_is_one_line_and_exit_2() -> None:
    result = pullgate("serve", "--listne", "x")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--listne" in result.stderr


def test_cli_unreadable_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("upstream: [unclosed\n")
    result = pullgate("serve", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pullgate: config error: --config: {path} is not valid YAML")


def test_cli_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = pullgate("check", "--config", str(tmp_path / "none.yaml"), "library/demo:v1")
    assert result.returncode == 2
    assert "No such file or directory" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("reference, says", [
    ("Library/Demo", "no tag"), ("BAD:v1", "invalid repository name 'BAD'"), ("demo:-x", "invalid tag '-x'"),
    ("demo@sha256:" + "a" * 64, "a digest names no tag"),
])
def test_check_says_what_is_wrong_with_a_reference(reference: str, says: str) -> None:
    result = pullgate("check", "--upstream", "http://127.0.0.1:5000", "--notary", "https://127.0.0.1:4443",
                      reference)
    assert result.returncode == 2
    assert result.stderr.startswith(f"pullgate: reference: {says}")


def test_upstream_and_upstreams_together_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        build({"upstream": {"registry": "http://a", "notary": "http://n"},
               "upstreams": [{"registry": "http://b", "notary": "http://n"}]}, {})
    assert caught.value.setting == "upstreams" and "not both" in str(caught.value)


def test_htpasswd_in_an_upstream_points_at_the_top_level() -> None:
    with pytest.raises(ConfigError) as caught:
        build({"upstreams": [{"registry": "http://b", "notary": "http://n", "auth": {"htpasswd": "/x"}}]}, {})
    assert "top-level auth: {htpasswd: FILE}" in str(caught.value)


def test_pinning_and_per_repository_roles_are_read(tmp_path: Path) -> None:
    config = build({"trust": {"repositories": {"library/demo": {"roles": ["targets/releases"]}}, "grace": 60},
                    "upstream": {"pinning": {"keys": {"reg/library/demo": ["a" * 64]}, "disable_tofu": True},
                                 "notary_auth": {"username": "u", "password": "p"}}}, BASE)
    assert config.trust.repository_roles == {"library/demo": ("targets/releases",)}
    assert config.trust.grace == 60
    assert config.upstream.pinning.pinned_keys("reg/library/demo") == frozenset({"a" * 64})
    assert config.upstream.pinning.tofu is False
    assert config.upstream.notary_auth is not None and config.upstream.notary_auth.username == "u"


def test_cli_busy_listen_address_is_one_line_and_exit_2() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = pullgate("serve", "--upstream", "http://a", "--notary", "http://b", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pullgate: listen: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_cli_ipv4_mapped_listen_address_is_one_line_and_exit_2() -> None:
    result = pullgate("serve", "--upstream", "http://a", "--notary", "http://b", "--listen", "[::ffff:127.0.0.1]:5999")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pullgate: listen: cannot listen on [::ffff:127.0.0.1]:5999: Invalid argument "
        "(an IPv4-mapped address: give the IPv4 address itself)"
    ]


@pytest.mark.parametrize("flags, line", [
    (("--state-dir", "/proc/pullgate"), "pullgate: config error: state_dir: cannot write in /proc/pullgate/trust: "
                                        "No such file or directory"),
    (("--state-dir", "/etc/hostname/sub"), "pullgate: config error: state_dir: cannot write in "
                                           "/etc/hostname/sub/trust: Not a directory"),
    (("--state-dir", ""), "pullgate: config error: --state-dir: must not be empty"),
    (("--gun-prefix", ""), "pullgate: config error: --gun-prefix: must not be empty"),
    (("--listen", ""), "pullgate: config error: --listen: must not be empty"),
])
def test_cli_unusable_state_dir_and_empty_flags_are_one_line_and_exit_2(flags: tuple[str, ...], line: str) -> None:
    for command in ("serve", "check"):
        args = [command, "--upstream", "http://a", "--notary", "http://b", *flags]
        if command == "check":
            if "--listen" in flags:
                continue
            args.append("library/demo:v1")
        result = pullgate(*args)
        assert (result.returncode, result.stderr.strip().splitlines()) == (2, [line])


def test_a_key_given_twice_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("upstream:\n  registry: http://a:1\nupstream:\n  registry: http://b:1\n")
    result = pullgate("serve", "--config", str(path))
    assert (result.returncode, result.stderr) == (
        2, f"pullgate: config error: --config: {path} is not valid YAML: key 'upstream' is given twice (line 3)\n")


def test_a_key_a_merge_brings_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("defaults: &d {registry: 'http://a:1', notary: 'http://n:2'}\n"
                    "upstream:\n  <<: *d\n  registry: http://b:1\n")
    assert load_file(path)["upstream"] == {"registry": "http://b:1", "notary": "http://n:2"}


def test_check_refuses_a_name_longer_than_the_spec_allows() -> None:
    name = "/".join(["a" * 50] * 6)
    result = pullgate("check", "--upstream", "http://a", "--notary", "http://b", f"{name}:v1")
    assert (result.returncode, result.stderr) == (
        2, f"pullgate: reference: repository name longer than 255 characters, such as library/demo:v1; "
        f"got '{name}:v1'\n")


def test_cli_without_a_command_points_at_help() -> None:
    result = pullgate()
    assert result.returncode == 2
    assert result.stderr.strip() == "pullgate: the following arguments are required: command (see pullgate --help)"


@pytest.mark.parametrize("path, name, kind, reference", [
    ("library/demo/manifests/v1", "library/demo", "manifests", "v1"),
    ("a/manifests/b/blobs/sha256:" + "a" * 64, "a/manifests/b", "blobs", "sha256:" + "a" * 64),
    ("a/blobs/b/manifests/v1", "a/blobs/b", "manifests", "v1"),
    ("a/manifests/b/tags/list", "a/manifests/b", "tags", ""),
])
def test_paths_split_at_the_last_endpoint_word(path: str, name: str, kind: str, reference: str) -> None:
    from proxy.names import RegistryPath, parse_path

    assert parse_path(path) == RegistryPath(name, kind, reference)
