"""The production coturn file keeps refusing to relay to private and loopback addresses; only
the test's rendering (tests/coturn_stack.py) allows the loopback peer."""

from __future__ import annotations

from pathlib import Path

from tests.coturn_stack import TEMPLATE, refuses_expired_allocate, render, start_turnserver


def test_production_file_denies_private_and_loopback_peers() -> None:
    lines = {line.strip() for line in TEMPLATE.read_text().splitlines()}
    assert "use-auth-secret" in lines and "static-auth-secret=${TURN_SECRET}" in lines
    assert "no-loopback-peers" in lines and "no-multicast-peers" in lines
    for denied in (
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ):
        assert denied in lines, denied
    assert not any(line.startswith(("allowed-peer-ip", "allow-loopback-peers")) for line in lines)


def test_the_test_rendering_changes_only_what_loopback_needs(tmp_path: Path) -> None:
    text = render(secret="s3cret", port=3478, workdir=tmp_path, relay_ports=(40000, 40099))
    lines = [line.strip() for line in text.splitlines()]
    assert "static-auth-secret=s3cret" in lines and "use-auth-secret" in lines
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in lines  # the rest still denied
    assert "allowed-peer-ip=127.0.0.1" in lines and "no-loopback-peers" not in lines


def test_a_started_turnserver_answers_at_once(tmp_path: Path) -> None:
    """start_turnserver returns only once coturn answers a signed Allocate: the browser
    test's expired credential must meet a running server (it failed once in CI, error 701)."""
    server = start_turnserver(tmp_path, "s3cret")
    try:
        assert refuses_expired_allocate(server.port, timeout=1.0)
    finally:
        server.stop()
