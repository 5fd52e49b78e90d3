"""gRPC client against the in-process test stand-in (NOT the TF Serving binary)."""

import json
import threading

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2

from keras_adtrs.serving import client as client_lib
from keras_adtrs.serving.client import ServingClient, ServingError

try:
    import serving_stand_in as stand_in
except ImportError:  # tests/ is a package
    from tests import serving_stand_in as stand_in


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return stand_in.small_exported_model(tmp_path_factory)


@pytest.fixture(scope="module")
def server(exported):
    with stand_in.ServingStandIn(exported[1], "adtrs") as server:
        yield server


@pytest.fixture(scope="module")
def jpeg_paths():
    folder = stand_in.shared_data_dir() / "data/clive_dev/ChallengeDB_release/Images"
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:3]
    if len(paths) < 3:
        pytest.skip(f"need 3 JPEGs in {folder}")
    return [str(p) for p in paths]


@pytest.fixture()
def client(server):
    with ServingClient(server.target, "adtrs", timeout=60.0, batch_size=2, backoff=0.01) as client:
        yield client


def _local(exported, path):
    with open(path, "rb") as f:
        return stand_in.local_score(exported[0], f.read())


def test_signature_comes_from_metadata(client, server):
    assert client.signature()[0] == "image_bytes" and client.signature()[2] == "score"
    status = model_service_pb2_grpc.ModelServiceStub(client.channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "adtrs"}), timeout=10
    )
    assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_round_trip_matches_local(exported, server, client, jpeg_paths):
    rows = client.score_files(jpeg_paths)  # batches of 2 then 1
    assert [r["path"] for r in rows] == jpeg_paths
    expected = [_local(exported, p) for p in jpeg_paths]
    np.testing.assert_allclose([r["score"] for r in rows], expected, atol=1e-4, rtol=0)
    # The uint8 signature: decoded here, same scores.
    with ServingClient(server.target, "adtrs", signature_name="serving_images", timeout=60.0) as images_client:
        assert images_client.signature()[0] == "images"
        rows = images_client.score_files(jpeg_paths)
    np.testing.assert_allclose([r["score"] for r in rows], expected, atol=1e-4, rtol=0)


@pytest.mark.large
def test_concurrent_requests_all_succeed(server, tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"tiny{i}.png"
        path.write_bytes(stand_in.png_bytes(8, 8, seed=i))
        paths.append(str(path))
    failures, counts = [], []

    def worker(k):
        with ServingClient(server.target, "adtrs", timeout=120.0) as c:
            done = 0
            for j in range(25):
                row = c.score_files([paths[(k + j) % 4]])[0]
                if "score" not in row:
                    failures.append(row)
                done += 1
            counts.append(done)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures
    assert sum(counts) == 200


def test_malformed_bytes_invalid_argument_then_recovers(server, client, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    good.write_bytes(stand_in.png_bytes(10, 12))
    bad.write_bytes(b"\xff\xd8\xff garbage that is not a JPEG")
    # Raw call: the server answers INVALID_ARGUMENT.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "adtrs"
    request.inputs["image_bytes"].CopyFrom(client_lib._string_tensor([b"not an image"]))
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Through the client: the bad file fails alone, its batch-mates are scored.
    rows = client.score_files([str(good), str(bad), str(good)])
    assert "score" in rows[0] and "score" in rows[2]
    assert rows[1]["error"].startswith("INVALID_ARGUMENT")
    assert client.score_files([str(good)])[0]["score"] == pytest.approx(rows[0]["score"], abs=1e-5)


def test_pixel_limit_invalid_argument(client, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(stand_in.png_bytes(600, 600))
    row = client.score_files([str(big)])[0]
    assert row["error"].startswith("INVALID_ARGUMENT")
    assert "max_pixels=300000" in row["error"]


def test_unreadable_file_is_reported(client, tmp_path):
    good = tmp_path / "ok.png"
    good.write_bytes(stand_in.png_bytes(16, 16))
    rows = client.score_files([str(tmp_path / "nope.png"), str(good)])
    assert "cannot read file" in rows[0]["error"] and "score" in rows[1]


def test_retries_unavailable(server, tmp_path):
    good = tmp_path / "ok.png"
    good.write_bytes(stand_in.png_bytes(16, 16))
    with ServingClient(server.target, "adtrs", timeout=60.0, max_retries=3, backoff=0.01) as c:
        server.fail_next(3)  # metadata fails 3 times, then succeeds
        before = server.calls
        assert "score" in c.score_files([str(good)])[0]
        assert server.calls - before == 5  # 4 metadata + 1 predict
        server.fail_next(2)  # predict fails twice, then succeeds
        assert "score" in c.score_files([str(good)])[0]
        server.fail_next(4)  # more than max_retries: reported, not raised
        row = c.score_files([str(good)])[0]
        assert row["error"].startswith("UNAVAILABLE")
    with ServingClient(server.target, "adtrs", timeout=60.0, max_retries=1, backoff=0.01) as c:
        server.fail_next(2)
        with pytest.raises(ServingError, match="UNAVAILABLE"):
            c.signature()


def test_deadline_exceeded_is_not_retried(server, tmp_path):
    good = tmp_path / "ok.png"
    good.write_bytes(stand_in.png_bytes(16, 16))
    with ServingClient(server.target, "adtrs", timeout=60.0, backoff=0.01) as c:
        c.signature()
        server.fail_next(1, grpc.StatusCode.DEADLINE_EXCEEDED, "too slow")
        before = server.calls
        row = c.score_files([str(good)])[0]
        assert row["error"].startswith("DEADLINE_EXCEEDED") and server.calls - before == 1


def test_unknown_model_or_signature(server):
    with ServingClient(server.target, "other", max_retries=0) as c, pytest.raises(ServingError, match="NOT_FOUND"):
        c.score_files([])
    with ServingClient(server.target, "adtrs", signature_name="nope") as c, pytest.raises(ServingError, match="nope"):
        c.signature()


def test_cli_json_table_and_exit_status(exported, server, tmp_path, capsys, jpeg_paths):
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(stand_in.png_bytes(16, 20, seed=1))
    (tmp_path / "imgs" / "b.png").write_bytes(stand_in.png_bytes(20, 16, seed=2))
    (tmp_path / "imgs" / "notes.txt").write_text("skipped in folders")
    args = ["--server", server.target, "--model", "adtrs", "--timeout", "60"]
    assert client_lib.main(args + ["--format", "json", str(tmp_path / "imgs")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == [str(tmp_path / "imgs" / "b.png"), str(folder / "a.png")]
    assert all(isinstance(r["score"], float) for r in rows)
    status = client_lib.main(args + [str(tmp_path / "imgs" / "**" / "*.png"), str(tmp_path / "missing.jpg")])
    captured = capsys.readouterr()
    assert status == 1
    assert "a.png" in captured.out and "no such file" in captured.out.lower() and "1 of 3" in captured.err
    assert client_lib.main(["--server", server.target, "--model", "nope", "--retries", "0", jpeg_paths[0]]) == 2
