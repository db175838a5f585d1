"""Berth's stand-in for py-consul's Docker fixtures: each test gets a fresh `berth-server -dev`."""
from __future__ import annotations

import collections
import os
import socket
import subprocess
import time
import uuid

import pytest
import requests

ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# py-consul's tests aim their HTTP checks at Consul's own API on 127.0.0.1:8500, as seen from
# inside its container; so the server under test listens there too.
HTTP_PORT = 8500


def _start_berth(extra_args=(), token=None):
    binary = os.environ["BERTH_SERVER_BIN"]
    http, rpc = HTTP_PORT, _free_port()
    headers = {"X-Consul-Token": token} if token else {}
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", http))
        except OSError as e:
            raise RuntimeError(f"127.0.0.1:{http} is in use; py-consul's tests need it for berth-server: {e}") from e
    proc = subprocess.Popen(
        [binary, "-dev", "-http-addr", f"127.0.0.1:{http}", "-rpc-addr", f"127.0.0.1:{rpc}", "-log-level", "warn",
         *extra_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            r = requests.get(f"http://127.0.0.1:{http}/v1/status/leader", timeout=1)
            # Ready once a leader exists and has registered this server in the catalog, as
            # py-consul's own fixture waits for Consul to answer catalog reads.
            nodes = requests.get(f"http://127.0.0.1:{http}/v1/catalog/nodes", headers=headers, timeout=1)
            if r.status_code == 200 and r.json() and nodes.status_code == 200 and nodes.json():
                version = requests.get(f"http://127.0.0.1:{http}/v1/agent/self", headers=headers, timeout=2).json()[
                    "Config"
                ]["Version"]
                return proc, http, version
        except requests.RequestException:
            pass
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("berth-server did not become ready")


# py-consul tests that cannot pass against Berth, each with the reason. Everything else in the
# selected files must pass.
DESELECTED = {
    "test_agent.py::TestAgent::test_agent_checks": "registers script checks (Args), which Berth does not run",
    "test_catalog.py::TestCatalog::test_catalog_gateway_services": "ingress gateways are not part of Berth",
    "test_health.py::TestHealth::test_health_ingress": "ingress gateways are not part of Berth",
}


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        key = item.nodeid.split("/")[-1]
        (drop if key in DESELECTED else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        for item in drop:
            print(f"deselected {item.nodeid}: {DESELECTED[item.nodeid.split('/')[-1]]}")


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token():
    os.environ.pop("CONSUL_HTTP_TOKEN", None)


@pytest.fixture
def consul_instance():
    proc, port, version = _start_berth()
    yield ConsulInstance(proc, port, version)
    proc.kill()
    proc.wait()


@pytest.fixture
def acl_consul_instance(tmp_path):
    # As py-consul's own fixture configures Consul: ACLs on, default deny, a known
    # initial management token.
    token = str(uuid.uuid4())
    config = tmp_path / "acl.hcl"
    config.write_text(
        'acl {\n  enabled = true\n  default_policy = "deny"\n'
        f'  tokens {{\n    initial_management = "{token}"\n  }}\n}}\n'
    )
    proc, port, version = _start_berth(["-config-file", str(config)], token=token)
    yield ConsulInstance(proc, port, version), token
    proc.kill()
    proc.wait()


@pytest.fixture
def consul_port(consul_instance):
    return consul_instance.port, consul_instance.version
