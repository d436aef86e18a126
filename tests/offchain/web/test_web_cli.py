"""`pm web build` and `pm web serve` without a browser: the files, the config, the headers, the
allowlist, and one clear line for every user mistake."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys

import httpx
from chain_testkit import REPO

from offchain.web.site import VENDOR

GATEWAY = "http://127.0.0.1:18000"


def start_pm(*args: str) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PM_")}
    command = [sys.executable, "-m", "offchain.cli", *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def pm(*args: str) -> subprocess.CompletedProcess:
    return finish(start_pm(*args))


def test_build_writes_the_app_with_its_config_and_the_pinned_libraries(web_chain, tmp_path):
    out = tmp_path / "site"
    args = ["web", "build", "--out", str(out), "--rpc-url", web_chain.url, "--gateway", GATEWAY + "/"]
    result = pm(*args, "--deployments", str(web_chain.deployments), "--json")
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    contracts = web_chain.protocol.deployment["contracts"]
    assert config == {
        "version": 1,
        "chainId": web_chain.chain_id,
        "chainName": f"Protocol Models chain {web_chain.chain_id} (local)",
        "rpcUrl": web_chain.url,
        "nativeCurrency": {"name": "Ether", "symbol": "ETH", "decimals": 18},
        "contracts": {
            name: contracts[name]["address"] for name in ("ModelRegistry", "RevenueRouter", "WorkLedger")
        },
        "firstBlock": web_chain.protocol.first_block(),
        "gateways": [GATEWAY],
    }
    for served, source in VENDOR.items():
        assert (out / served).read_bytes() == (REPO / "node_modules" / source).read_bytes()
    index = (out / "index.html").read_text()
    (csp,) = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', index)
    assert "script-src 'self';" in html.unescape(csp)
    assert f"connect-src 'self' {GATEWAY} {web_chain.url};" in html.unescape(csp)
    assert "<script>" not in index and "http" not in index.split("<body>")[1]  # no inline script, no CDN
    assert set(json.loads(result.stdout)["files"]) == {
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != ".pm-web-build"
    }
    again = pm(*args, "--deployments", str(web_chain.deployments))
    assert again.returncode == 0, again.stderr  # a previous build is replaced
    assert again.stdout.startswith(f"web app for chain {web_chain.chain_id}: ")


def test_user_mistakes_are_one_line_and_write_nothing(web_chain, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    chain = ["--rpc-url", web_chain.url, "--deployments", str(web_chain.deployments)]
    cases = {
        ("--out", str(foreign), *chain): f"--out {foreign} is not empty and was not written by pm web build",
        ("--out", str(tmp_path / "a"), "--rpc-url", "ftp://x", "--deployments", str(web_chain.deployments)): (
            "--rpc-url must be an http:// or https:// URL, not 'ftp://x'"
        ),
        ("--out", str(tmp_path / "b"), *chain, "--gateway", "localhost:8000"): "--gateway must be an http://",
        ("--out", str(tmp_path / "c"), "--rpc-url", web_chain.url, "--deployments", str(tmp_path)): (
            f"no deployment for chain {web_chain.chain_id}"
        ),
        ("--out", str(tmp_path / "d"), "--rpc-url", "http://127.0.0.1:9", "--deployments", str(tmp_path)): (
            "cannot reach the RPC URL http://127.0.0.1:9"
        ),
    }
    started = {args: start_pm("web", "build", *args) for args in cases}  # side by side: each is one import
    for args, message in cases.items():
        result = finish(started[args])
        assert result.returncode == 1, (args, result.stdout)
        assert result.stderr.count("\n") == 1 and message in result.stderr, (args, result.stderr)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and (
        foreign / "notes.txt"
    ).read_text() == "keep me"


def test_serve_sends_the_csp_and_only_allowlisted_files(web_url, web_chain):
    index = httpx.get(web_url)
    assert index.status_code == 200 and index.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = index.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and csp.endswith("frame-ancestors 'none'")
    assert f"connect-src 'self' {web_chain.url};" in csp
    assert index.headers["X-Content-Type-Options"] == "nosniff"
    ethers = httpx.get(web_url + "vendor/ethers.min.js")
    assert ethers.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert ethers.content == (REPO / "node_modules/ethers/dist/ethers.min.js").read_bytes()
    assert httpx.get(web_url + "config.json").json()["chainId"] == web_chain.chain_id
    for path in (
        "node_modules/ethers/package.json",
        "vendor/../../pyproject.toml",
        "%2e%2e/pyproject.toml",
        "js",
    ):
        refused = httpx.get(web_url + path)
        assert refused.status_code == 404 and refused.json()["status"] == 404, path
        assert "Content-Security-Policy" in refused.headers
    posted = httpx.post(web_url + "config.json", content=b"{}")
    assert posted.status_code == 405 and posted.json()["error"] == "POST is not allowed"


def test_serve_refuses_a_taken_port_in_one_line(web_url, web_chain):
    port = web_url.rsplit(":", 1)[1].strip("/")
    result = pm(
        "web",
        "serve",
        "--port",
        port,
        "--rpc-url",
        web_chain.url,
        "--deployments",
        str(web_chain.deployments),
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "Traceback" not in result.stderr


def test_gateway_refuses_an_origin_that_is_not_one_in_one_line(web_chain):
    chain = ["--rpc-url", web_chain.url, "--deployments", str(web_chain.deployments)]
    peer = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWBrtC14a6TMVuJ6P8oSYyPSj4oMwcmevPUVcfLkXAjx8G"
    args = [
        "gateway",
        "run",
        "--model",
        "1",
        "--initial-peers",
        peer,
        "--allow-origin",
        "http://127.0.0.1:8080/app",
    ]
    result = pm(*args, *chain)
    assert result.returncode == 1
    expected = "--allow-origin must be '*' or scheme://host[:port], not 'http://127.0.0.1:8080/app'\n"
    assert result.stderr == expected
