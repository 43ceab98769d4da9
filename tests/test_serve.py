"""``oplab serve``: the HTTP routes (in process), batching of concurrent requests, a real uvicorn
server in a subprocess, and the page rendered by a headless Chromium."""

import asyncio
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from html import unescape

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import oplab  # noqa: E402
from oplab import models  # noqa: E402
from oplab.errors import OplabError  # noqa: E402

NPY = {"Content-Type": "application/x-npy"}
# Starlette 1.x asks for httpx2 under its TestClient; httpx still works
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")


@pytest.fixture(scope="module")
def run(darcy17, tmp_path_factory):
    """A tiny FNO trained for one epoch on the 17 x 17 Darcy set (test samples 40-47)."""
    torch.manual_seed(0)
    ds = oplab.data.open(darcy17)
    model = models.create("fno", in_channels=1, out_channels=1, modes=[4, 4], width=8, n_layers=2,
                          lifting_channels=16, projection_channels=16)
    out = tmp_path_factory.mktemp("serve") / "darcy-fno"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        oplab.train(model, ds, epochs=1, batch_size=8, n_train=40, n_test=8, eval_every=1, out=out, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def op(run):
    return oplab.load(run)


@pytest.fixture(scope="module")
def client(run):
    from fastapi.testclient import TestClient

    from oplab.deploy.serve import create_app

    with TestClient(create_app([run], max_wait_ms=1, max_bytes=64_000)) as c:
        yield c


def _inputs(darcy17, n=3):
    return oplab.data.open(darcy17).arrays(range(n))[0]  # [n, 1, 17, 17]


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _close(got, want):
    got, want = np.asarray(got, dtype=np.float32), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


# --------------------------------------------------------------------------- in process
def test_serving_imports_no_training_code(run):
    code = ("import sys; from oplab.deploy.serve import create_app; create_app([sys.argv[1]]); "
            "bad = [m for m in sys.modules if m.startswith('oplab.train')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(run)], check=True, timeout=60)


def test_health_and_metadata(client, run, op):
    health = client.get("/health").json()
    assert health["status"] == "ok" and set(health["models"]) == {"darcy-fno"}
    assert client.get("/models").json()["models"] == [{"name": "darcy-fno", "problem": "darcy", "task": "map",
                                                        "model": "fno"}]
    meta = client.get("/models/darcy-fno").json()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert meta["problem"] == "darcy" and meta["model"]["name"] == "fno" and meta["checkpoint"] == "best"
    assert meta["input"]["shape"] == [1, 17, 17] and meta["output"]["shape"] == [1, 17, 17]
    assert [a["name"] for a in meta["input"]["axes"]] == ["x", "y"] and meta["input"]["axes"][0]["n"] == 17
    assert meta["errors"]["test"]["17"]["l2"] == records[-1]["test"]["17"]["l2"]
    assert meta["errors"]["validation"]["l2"] == records[-1]["val"]["l2"]
    assert meta["errors"]["train_loss"] == records[-1]["train_loss"]
    assert meta["oplab_version"] == oplab.__version__ == meta["trained_with"]
    assert meta["model"]["parameters"] == sum(p.numel() for p in op.bundle.model.parameters())


def test_json_answers_equal_the_loaded_operator_in_every_input_form(client, op, darcy17):
    x = _inputs(darcy17)
    for a in (x, x[:, 0], x[0], x[0, 0], x[:1]):  # [B,C,S], [B,S], [C,S], [S], [1,C,S]
        r = client.post("/models/darcy-fno/predict", json={"input": a.tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["shape"] == list(op(a).shape)
        _close(body["output"], op(a))
    coarse = oplab.data.open(darcy17, resolution=9).arrays(range(2))[0]  # another resolution
    _close(client.post("/models/darcy-fno/predict", json={"input": coarse.tolist()}).json()["output"], op(coarse))


def test_npy_answers_equal_the_loaded_operator(client, op, darcy17):
    x = _inputs(darcy17)
    for kind in ("application/x-npy", "application/octet-stream"):
        r = client.post("/models/darcy-fno/predict", content=_npy(x), headers={"Content-Type": kind})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
        y = np.load(io.BytesIO(r.content), allow_pickle=False)
        assert y.dtype == np.float32
        _close(y, op(x))
    as_json = client.post("/models/darcy-fno/predict", content=_npy(x[0, 0].astype(np.float64)),
                          headers={**NPY, "Accept": "application/json"})
    _close(as_json.json()["output"], op(x[0, 0]))
    as_npy = client.post("/models/darcy-fno/predict", json={"input": x[1].tolist()},
                         headers={"Accept": "application/x-npy"})
    _close(np.load(io.BytesIO(as_npy.content)), op(x[1]))


def _message(op, a) -> str:
    with pytest.raises(OplabError) as info:
        op(a)
    return str(info.value)


def test_refused_inputs_answer_the_predictors_one_line_message(client, op, darcy17):
    x = _inputs(darcy17, 2)
    nan = x.copy()
    nan[1, 0, 3, 3] = np.nan
    bad = {"wrong channels": np.zeros((2, 3, 17, 17)), "one axis": np.zeros(17), "NaN": nan,
           "empty": np.zeros((0, 1, 17, 17)), "complex": np.zeros((1, 17, 17), dtype=np.complex64)}
    for what, a in bad.items():
        want = _message(op, a)
        assert "\n" not in want
        r = client.post("/models/darcy-fno/predict", content=_npy(a), headers=NPY)
        assert (r.status_code, r.json()) == (422, {"error": want}), what
        if a.dtype.kind == "f" and a.size:  # (an empty list loses its shape in JSON)
            r = client.post("/models/darcy-fno/predict", content=json.dumps({"input": a.tolist()}),
                            headers={"Content-Type": "application/json"})
            assert (r.status_code, r.json()) == (422, {"error": want}), what
    for what, a in {"ragged": [[1.0, 2.0], [3.0]], "strings": [["a", "b"], ["c", "d"]]}.items():
        r = client.post("/models/darcy-fno/predict", json={"input": a})
        assert (r.status_code, r.json()) == (422, {"error": _message(op, a)}), what
    assert "expected numbers of shape [1, x, y]" in _message(op, [[1.0, 2.0], [3.0]])


def test_malformed_requests_unknown_models_and_oversized_bodies(client, darcy17):
    url = "/models/darcy-fno/predict"
    r = client.post("/models/nope/predict", json={"input": [1.0]})
    assert r.status_code == 404 and r.json()["error"] == "no model 'nope'; served: ['darcy-fno']"
    assert client.get("/models/nope").status_code == 404
    cases = [({"Content-Type": "application/json"}, b"{not json", 400, "not valid JSON"),
             ({"Content-Type": "application/json"}, b'{"inputs": [1]}', 400, 'expected an object {"input"'),
             (NPY, b"garbage", 400, "not a .npy file"),
             ({"Content-Type": "text/plain"}, b"1 2 3", 415, "expected application/json")]
    obj = io.BytesIO()
    np.save(obj, np.array([1, None], dtype=object), allow_pickle=True)
    cases.append((NPY, obj.getvalue(), 400, "Object arrays cannot be loaded"))  # no pickle
    for headers, body, status, text in cases:
        r = client.post(url, content=body, headers=headers)
        assert r.status_code == status and text in r.json()["error"], (status, r.text)
        assert "\n" not in r.json()["error"]
    big = _npy(np.zeros((20, 1, 17, 17), dtype=np.float32))  # 23 kB ... 64 kB limit: 3 of them are over
    assert client.post(url, content=big, headers=NPY).status_code == 200
    r = client.post(url, content=big * 3, headers=NPY)  # by Content-Length
    assert r.status_code == 413 and "over this server's limit of 64000 bytes" in r.json()["error"]
    r = client.post(url, content=iter([big] * 3), headers=NPY)  # chunked, no Content-Length: by the bytes read
    assert "content-length" not in r.request.headers and r.status_code == 413


def test_examples_are_the_runs_test_samples(client, op, darcy17, run, tmp_path):
    listing = client.get("/models/darcy-fno/examples").json()
    assert [e["sample"] for e in listing["examples"]] == [40, 41, 42, 43]
    ex = client.get("/models/darcy-fno/examples/1").json()
    item = oplab.data.open(darcy17)[41]
    np.testing.assert_array_equal(np.array(ex["input"], dtype=np.float32), item["x"].numpy())
    np.testing.assert_array_equal(np.array(ex["truth"], dtype=np.float32), item["y"].numpy())
    assert client.get("/models/darcy-fno/examples/4").status_code == 404
    # a run whose data file is elsewhere: no examples, and why
    from fastapi.testclient import TestClient

    from oplab.deploy.serve import create_app

    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    config = json.loads((moved / "config.json").read_text())
    for part in [config["data"]["split"]["train"], config["data"]["split"]["val"], *config["data"]["split"]["tests"]]:
        part["file"] = str(tmp_path / "gone.h5")
    (moved / "config.json").write_text(json.dumps(config))
    with TestClient(create_app([f"elsewhere={moved}"])) as c:
        listing = c.get("/models/elsewhere/examples").json()
        assert listing["examples"] == [] and "is not on this machine; upload a .npy" in listing["source"]
        assert c.get("/models/elsewhere/examples/0").status_code == 404


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(run, op, darcy17):
    from oplab.deploy.serve import create_app

    app = create_app([run], max_batch=8, max_wait_ms=300)
    batches = []
    app.state.batchers["darcy-fno"].on_batch = lambda requests, samples: batches.append((requests, samples))
    x = oplab.data.open(darcy17).arrays(range(12))[0]
    coarse = oplab.data.open(darcy17, resolution=9).arrays(range(2))[0]
    requests = [x[i] for i in range(10)] + [x[10:12], coarse[0], coarse[1], np.zeros((2, 3, 17, 17))]

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.post("/models/darcy-fno/predict", json={"input": a.tolist()})
                                          for a in requests))

    answers = asyncio.run(ask())
    for a, r in zip(requests[:-1], answers[:-1]):
        assert r.status_code == 200, r.text
        _close(r.json()["output"], op(a))
    assert (answers[-1].status_code, answers[-1].json()) == (422, {"error": _message(op, requests[-1])})
    # 12 samples on 17 x 17 in batches of <= 8 samples (>= 2 batches), 2 on 9 x 9 in one
    assert sum(r for r, _ in batches) == 13 and sum(s for _, s in batches) == 14
    assert all(s <= 8 for _, s in batches) and len(batches) <= 4, batches
    assert max(r for r, _ in batches) >= 4, batches  # requests really were grouped
    assert app.state.batchers["darcy-fno"].stats == {"requests": 13, "batches": len(batches), "samples": 14}


def test_several_runs_by_name(run, op, darcy17):
    from fastapi.testclient import TestClient

    from oplab.deploy.serve import create_app

    with pytest.raises(OplabError, match="two runs named 'darcy-fno'"):
        create_app([run, run])
    with TestClient(create_app([f"a={run}", f"b={run}"])) as c:
        assert [m["name"] for m in c.get("/models").json()["models"]] == ["a", "b"]
        x = _inputs(darcy17, 1)
        _close(c.post("/models/b/predict", json={"input": x.tolist()}).json()["output"], op(x))


def test_cli_refuses_a_bad_run_folder_and_a_taken_port(run, tmp_path, capsys):
    from oplab.cli import main

    assert main(["serve", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder (no config.json)" in err
    wider = tmp_path / "wider"  # weights that do not fit the config
    shutil.copytree(run, wider)
    config = json.loads((wider / "config.json").read_text())
    config["model"]["width"] = 12
    (wider / "config.json").write_text(json.dumps(config))
    assert main(["serve", str(wider)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"weights.safetensors: does not fit the model in {wider}/config.json" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(run), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port}: cannot listen there" in err


# --------------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    """``oplab serve RUN --port 0`` in a subprocess; yields its base URL and the process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp_path_factory.mktemp("server") / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "oplab", "serve", str(run), "--port", "0", "--max-wait-ms",
                                 "20", "--max-mb", "0.05", "--log-level", "warning"],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    line = proc.stdout.readline()  # "serving NAME at http://127.0.0.1:PORT/ (Ctrl-C to stop)"
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        proc.kill()
        pytest.fail(f"oplab serve did not start: {line!r} {log.read_text()[-2000:]}")
    url = match.group(0)
    for _ in range(100):
        try:
            httpx.get(url + "health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_real_server_answers_over_loopback(server, op, darcy17):
    url, proc = server
    x = _inputs(darcy17, 4)
    with httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/health").json()["status"] == "ok"
        times = []
        for _ in range(15):  # on one kept-alive connection; without TCP_NODELAY on the server's sockets,
            t0 = time.perf_counter()  # each answer (headers, then body) waits for a delayed ACK: >= 40 ms
            c.get("/health")
            times.append(time.perf_counter() - t0)
        assert np.median(times) < 0.03, times
        r = c.post("/models/darcy-fno/predict", content=_npy(x), headers=NPY)
        _close(np.load(io.BytesIO(r.content), allow_pickle=False), op(x))
        _close(c.post("/models/darcy-fno/predict", json={"input": x[0].tolist()}).json()["output"], op(x[0]))
        r = c.post("/models/darcy-fno/predict", content=_npy(np.zeros((60, 1, 17, 17), np.float32)), headers=NPY)
        assert r.status_code == 413 and "limit of 52428 bytes" in r.json()["error"]
        r = c.post("/models/darcy-fno/predict", content=_npy(np.zeros((2, 2, 17, 17))), headers=NPY)
        assert r.status_code == 422 and r.json()["error"] == _message(op, np.zeros((2, 2, 17, 17)))

    async def many():
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            return await asyncio.gather(*(c.post("/models/darcy-fno/predict", content=_npy(x[i % 4]), headers=NPY)
                                          for i in range(16)))

    before = httpx.get(url + "health").json()["models"]["darcy-fno"]
    for i, r in enumerate(asyncio.run(many())):
        _close(np.load(io.BytesIO(r.content)), op(x[i % 4]))
    after = httpx.get(url + "health").json()["models"]["darcy-fno"]
    assert after["requests"] - before["requests"] == 16 and after["batches"] - before["batches"] < 16


def _chromium(url: str, *args: str) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                             *args, url], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _attributes(dom: str, element_id: str) -> dict:
    tag = re.search(rf'<\w+ id="{element_id}"([^>]*)>([^<]*)', dom)
    assert tag, f"no #{element_id} in the page"
    attrs = {k: unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag.group(1))}
    return {**attrs, "text": unescape(tag.group(2))}


@pytest.mark.parametrize("via", ["json", "npy"])
def test_page_renders_prediction_truth_and_error_in_chromium(server, op, darcy17, via):
    url, _ = server
    dom = _chromium(f"{url}?model=darcy-fno&example=2&via={via}", "--dump-dom")
    status = _attributes(dom, "status")
    assert status["data-state"] == "done", status
    item = oplab.data.open(darcy17)[42]
    x, truth = item["x"].numpy(), item["y"].numpy()
    pred = op(x)
    rel = float(np.linalg.norm(pred - truth) / np.linalg.norm(truth))
    assert float(status["data-rel-l2"]) == pytest.approx(rel, rel=1e-4)
    assert status["text"].startswith(f"relative L2 error {rel:.4f}") and status["data-via"] == via
    assert status["data-output-shape"] == "1x17x17"
    drawn = {name: _attributes(dom, f"c-{name}") for name in ("input", "prediction", "truth", "error")}
    assert all(c["data-drawn"] == "1" and c["data-dims"] == "17x17" for c in drawn.values()), drawn
    for name, field in (("input", x), ("prediction", pred), ("truth", truth), ("error", np.abs(pred - truth))):
        lo, hi = float(drawn[name]["data-min"]), float(drawn[name]["data-max"])
        assert lo == pytest.approx(field.min(), rel=1e-5, abs=1e-9) and hi == pytest.approx(field.max(), rel=1e-5), name


def test_page_reports_an_unknown_model(server):
    url, _ = server
    status = _attributes(_chromium(f"{url}?model=nope&example=0", "--dump-dom"), "status")
    assert status["data-state"] == "error" and 'no model "nope"' in status["text"]


def test_server_stops_on_ctrl_c(server):
    _, proc = server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
