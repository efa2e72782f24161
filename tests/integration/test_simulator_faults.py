"""The simulator's fault modes over real HTTP, and how the client reports each one.

Per report the push code must tell acknowledged (a result) / rejected (BusinessError) / unknown
(TransportError, retryable) apart: every fault here ends in exactly one of those.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hurren import crypto
from hurren.platform import (
    BusinessError,
    ConnectError,
    Credential,
    HTTPStatusError,
    PlatformClient,
    PlatformError,
    RemoteProtocolError,
    TimeoutError,
    TransportError,
)
from hurren.spec import DEFAULT_OPTIONS
from hurren_testkit import samples
from hurren_testkit.simulator import Faults, FaultsError, Simulator, SimulatorConfig
from hurren_testkit.simulator.faults import FaultInjector

PRIVATE, _ = crypto.generate_keypair()
CREDENTIAL = Credential(org_code="457759922", org_name="某医院", visitor_code="v", visitor_key="k")
ID_NO = samples.SAMPLE_ID_NO


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(config=SimulatorConfig(port=0, private_key=PRIVATE)) as s:
        yield s


@pytest.fixture(scope="module")
def client(sim: Simulator) -> Iterator[PlatformClient]:
    with PlatformClient(
        endpoint=sim.url,
        credential=CREDENTIAL,
        public_key=sim.public_key,
        timeout=0.6,
        connect_timeout=0.6,
        spec_options=DEFAULT_OPTIONS,
    ) as c:
        yield c


@pytest.fixture(autouse=True)
def clean(sim: Simulator, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    sim.platform.reset()
    caplog.set_level(logging.INFO, logger="hurren_testkit.simulator")
    yield
    sim.platform.reset()
    assert "Traceback" not in caplog.text


def faults(sim: Simulator, **values: Any) -> dict[str, Any]:
    response = httpx.post(f"{sim.admin_url}/faults", json=values, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def counts(client: PlatformClient) -> Any:
    return client.archive_daily_counts(samples.daily_counts())


def stored_counts(sim: Simulator) -> int:
    return httpx.get(f"{sim.admin_url}/received", timeout=5).json()["stored"].get("lab_exam_report", 0)


def outcome(call: Any) -> str:
    try:
        call()
    except BusinessError:
        return "rejected"
    except TransportError as exc:
        return type(exc).__name__
    return "ok"


# --------------------------------------------------------------------------------------------
# each fault mode
# --------------------------------------------------------------------------------------------


def test_latency(sim: Simulator, client: PlatformClient) -> None:
    faults(sim, latency_ms=250)
    started = time.perf_counter()
    assert counts(client).text is None
    assert time.perf_counter() - started >= 0.25


def test_error_answers_store_nothing(sim: Simulator, client: PlatformClient) -> None:
    faults(sim, error_rate=1.0)
    with pytest.raises(BusinessError, match="simulated failure") as info:
        counts(client)
    assert not info.value.retryable
    assert stored_counts(sim) == 0


def test_http_500(sim: Simulator, client: PlatformClient) -> None:
    faults(sim, http500_rate=1.0)
    with pytest.raises(HTTPStatusError, match="HTTP 500") as info:
        counts(client)
    assert info.value.status_code == 500 and info.value.retryable
    assert stored_counts(sim) == 0


def test_dropped_connection_after_processing(sim: Simulator, client: PlatformClient) -> None:
    faults(sim, drop_rate=1.0)
    with pytest.raises(RemoteProtocolError, match="closed the connection without answering") as info:
        counts(client)
    assert info.value.retryable
    assert stored_counts(sim) == 2  # processed, answer lost: the retry is an upsert
    faults(sim, drop_rate=0.0)
    assert counts(client).text is None and stored_counts(sim) == 2


def test_time_out(sim: Simulator, client: PlatformClient) -> None:
    faults(sim, timeout_rate=1.0, timeout_s=1.5)
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="timed out waiting for the answer") as info:
        client.get_check_lab_list(id_no=ID_NO, id_type="01")
    assert time.perf_counter() - started < 1.4
    assert isinstance(info.value, builtins.TimeoutError) and isinstance(info.value, PlatformError)
    assert info.value.retryable and info.value.method == "GetCheckLabList"


def test_down_window_then_back(sim: Simulator, client: PlatformClient) -> None:
    counts(client)  # a pooled keep-alive connection exists: it must be refused too
    status = faults(sim, down_for_s=0.8)
    assert 0 < status["down_remaining_s"] <= 0.8
    with pytest.raises(ConnectError, match="reset the connection|cannot connect") as info:
        counts(client)
    assert info.value.retryable
    assert httpx.get(f"{sim.admin_url}/health", timeout=5).json() == {"status": "ok"}  # admin stays up
    time.sleep(0.9)
    assert counts(client).text is None


def test_down_until_reset(sim: Simulator, client: PlatformClient) -> None:
    faults(sim, down=True)
    for _ in range(3):
        with pytest.raises(ConnectError):
            counts(client)
    httpx.post(f"{sim.admin_url}/reset", json={"data": False}, timeout=5).raise_for_status()
    assert counts(client).text is None


def test_faults_only_for_some_methods(sim: Simulator, client: PlatformClient) -> None:
    faults(sim, error_rate=1.0, methods=["GetLabInfo"])
    assert counts(client).text is None
    with pytest.raises(BusinessError, match="simulated"):
        client.get_lab_info(id_no=ID_NO, id_type="01")


def test_rates_are_deterministic_with_a_seed(sim: Simulator, client: PlatformClient) -> None:
    def run() -> list[str]:
        faults(sim, error_rate=0.3, http500_rate=0.2, drop_rate=0.2, seed=7)
        return [outcome(lambda: counts(client)) for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {"ok", "rejected", "HTTPStatusError", "RemoteProtocolError"}
    injected = httpx.get(f"{sim.admin_url}/faults", timeout=5).json()["injected"]
    assert injected["error"] == 2 * first.count("rejected")  # counted over both runs


def test_a_client_through_every_fault_mode_tells_the_outcomes_apart(
    sim: Simulator, client: PlatformClient
) -> None:
    seen = {}
    for mode, settings in {
        "ok": {},
        "error": {"error_rate": 1.0},
        "http500": {"http500_rate": 1.0},
        "drop": {"drop_rate": 1.0},
        "timeout": {"timeout_rate": 1.0, "timeout_s": 1.0},
        "down": {"down": True},
    }.items():
        httpx.post(f"{sim.admin_url}/reset", json={"data": False}, timeout=5)
        if settings:
            faults(sim, **settings)
        seen[mode] = outcome(lambda: client.submit_quote(samples.quote_records()))
    assert seen == {
        "ok": "ok",
        "error": "rejected",
        "http500": "HTTPStatusError",
        "drop": "RemoteProtocolError",
        "timeout": "TimeoutError",
        "down": "ConnectError",
    }


def test_nothing_listening_is_a_connect_error() -> None:
    with PlatformClient(
        endpoint="http://127.0.0.1:9/Myhealth",
        credential=CREDENTIAL,
        public_key=crypto.generate_keypair()[1],
        wsdl=None,
        timeout=1,
        connect_timeout=1,
        spec_options=DEFAULT_OPTIONS,
    ) as nowhere:
        with pytest.raises(ConnectError, match="cannot connect to the platform"):
            nowhere.get_check_lab_list(id_no=ID_NO, id_type="01")


def test_live_wsdl_from_a_down_platform_is_a_transport_error(sim: Simulator) -> None:
    with PlatformClient(
        endpoint="http://127.0.0.1:9/Myhealth",
        credential=CREDENTIAL,
        public_key=sim.public_key,
        wsdl="live",
        timeout=1,
        connect_timeout=1,
        wsdl_timeout=1,
        spec_options=DEFAULT_OPTIONS,
    ) as nowhere:
        with pytest.raises(ConnectError, match="loading the WSDL"):
            nowhere.get_check_lab_list(id_no=ID_NO, id_type="01")


# --------------------------------------------------------------------------------------------
# admin endpoints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,message",
    [
        ({"error_rate": 1.5}, "between 0 and 1"),
        ({"error_rate": 0.6, "drop_rate": 0.6}, "add up to more than 1"),
        ({"latency_ms": -1}, ">= 0"),
        ({"nonsense": 1}, "unknown fault setting"),
        ({"down": "yes"}, "true or false"),
        ({"seed": "x"}, "integer"),
    ],
    ids=["rate>1", "sum>1", "negative", "unknown", "down-not-bool", "seed"],
)
def test_bad_fault_settings_are_refused(sim: Simulator, body: dict[str, Any], message: str) -> None:
    response = httpx.post(f"{sim.admin_url}/faults", json=body, timeout=5)
    assert response.status_code == 400 and message in response.json()["error"]
    assert httpx.get(f"{sim.admin_url}/faults", timeout=5).json()["error_rate"] == 0.0


def test_admin_endpoints(sim: Simulator, client: PlatformClient) -> None:
    assert httpx.get(f"{sim.admin_url}/public-key", timeout=5).json() == {"public_key": sim.public_key}
    assert httpx.post(f"{sim.admin_url}/faults", content=b"{not json", timeout=5).status_code == 400
    assert httpx.get(f"{sim.admin_url}/nope", timeout=5).status_code == 404
    client.archive_lab_report(*samples.lab_report(items=2))
    received = httpx.get(f"{sim.admin_url}/received", timeout=5).json()
    assert received["calls"] == {"ArchiveAutoReport": 1} and received["decrypted_payloads"] == 1
    assert received["stored"]["labmaster"] == 1 and received["stored"]["lab_subitem"] == 2
    reports = httpx.get(f"{sim.admin_url}/reports", timeout=5)
    assert reports.json()["reports"][0]["items"] == 2 and ID_NO not in reports.text
    reset = httpx.post(f"{sim.admin_url}/reset", timeout=5).json()
    assert reset == {"reset": {"data": True, "faults": True, "counters": True}}
    assert httpx.get(f"{sim.admin_url}/received", timeout=5).json()["stored"]["labmaster"] == 0


def test_admin_token() -> None:
    config = SimulatorConfig(port=0, private_key=PRIVATE, admin_token="t0ken")
    with Simulator(config=config) as guarded:
        assert httpx.get(f"{guarded.admin_url}/received", timeout=5).status_code == 401
        assert httpx.post(f"{guarded.admin_url}/reset", json={}, timeout=5).status_code == 401
        ok = httpx.get(f"{guarded.admin_url}/received", headers={"X-Admin-Token": "t0ken"}, timeout=5)
        assert ok.status_code == 200


def test_faults_set_at_start(sim: Simulator) -> None:
    config = SimulatorConfig(port=0, private_key=PRIVATE, faults=Faults(error_rate=1.0, seed=1))
    with (
        Simulator(config=config) as failing,
        PlatformClient(
            endpoint=failing.url,
            credential=CREDENTIAL,
            public_key=failing.public_key,
            spec_options=DEFAULT_OPTIONS,
        ) as c,
    ):
        with pytest.raises(BusinessError, match="simulated"):
            counts(c)


def test_injector_down_window_uses_its_clock() -> None:
    now = [100.0]
    injector = FaultInjector(clock=lambda: now[0])
    injector.update({"down_for_s": 5})
    assert injector.is_down()
    now[0] = 104.9
    assert injector.is_down()
    now[0] = 105.0
    assert not injector.is_down() and injector.down_remaining_s() is None
    with pytest.raises(FaultsError):
        injector.update({"down_for_s": -1})
