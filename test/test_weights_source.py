"""Weights sources: local files, HF hub directories, and downloads from a loopback HTTP server."""
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dpt_ros.model.errors import (
    WeightsHashMismatchError,
    WeightsLayoutError,
    WeightsNotFoundError,
    WeightsOfflineError,
    WeightsTruncatedError,
)
from dpt_ros.model.weights_source import (
    cached_path,
    download_checkpoint,
    read_state_dict,
    sha256_prefix_from_name,
)


def small_state_dict():
    generator = torch.Generator().manual_seed(0)
    return {
        "pretrained.model.cls_token": torch.randn(1, 1, 8, generator=generator),
        "scratch.output_conv.0.weight": torch.randn(4, 8, 3, 3, generator=generator),
        "scratch.output_conv.0.bias": torch.arange(4, dtype=torch.float32),
    }


def assert_same_state(actual, expected):
    assert sorted(actual) == sorted(expected)  # safetensors stores keys sorted
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype
        assert torch.equal(actual[key], tensor), key


def checkpoint_bytes(state, tmp_path) -> bytes:
    scratch = tmp_path / "scratch.pt"
    torch.save(state, scratch)
    return scratch.read_bytes()


class LoopbackServer:
    """http.server on 127.0.0.1:<free port> serving in-memory files, counting requests per path.

    ``routes[path] = (status, body, content_length_override)``.  With an override larger than the
    body the handler sends the short body and closes: a truncated transfer.
    """

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes, int | None]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                status, body, announced = server.routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                self.send_header("Content-Length", str(announced or len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib honours *_proxy variables; loopback requests must never go through a proxy."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    instance = LoopbackServer()
    yield instance
    instance.close()


@pytest.fixture
def official_checkpoint(tmp_path, server):
    """A checkpoint served under an official-style name carrying its real sha256 prefix."""
    state = small_state_dict()
    body = checkpoint_bytes(state, tmp_path)
    prefix = hashlib.sha256(body).hexdigest()[:8]
    path = f"/releases/dpt_tiny-midas-{prefix}.pt"
    server.routes[path] = (200, body, None)
    return state, body, path, prefix


def test_name_hash_convention():
    assert sha256_prefix_from_name("dpt_hybrid-midas-501f0c75.pt") == "501f0c75"
    assert sha256_prefix_from_name("dpt_large-ade20k-b12dca68.pt") == "b12dca68"
    assert sha256_prefix_from_name("model.safetensors") is None
    assert sha256_prefix_from_name("dpt_large-midas.pt") is None


def test_download_then_cache_hit_makes_no_request(tmp_path, server, official_checkpoint):
    state, body, path, _ = official_checkpoint
    cache = tmp_path / "cache"
    first = download_checkpoint(server.url(path), cache_dir=cache, progress=False)
    assert first == cache / Path(path).name
    assert first.read_bytes() == body
    assert server.requests == [path]
    # No temporary file is left behind next to the finished download.
    assert sorted(p.name for p in cache.iterdir()) == [first.name]

    second = download_checkpoint(server.url(path), cache_dir=cache, progress=False)
    assert second == first
    assert server.requests == [path]  # served from the cache, re-verified, no request
    assert_same_state(read_state_dict(server.url(path), cache_dir=cache), state)
    assert server.requests == [path]


def test_cache_dir_environment_variable_is_honoured(tmp_path, server, official_checkpoint, monkeypatch):
    _, body, path, _ = official_checkpoint
    monkeypatch.setenv("DPT_ROS_CACHE", str(tmp_path / "env_cache"))
    downloaded = download_checkpoint(server.url(path), progress=False)
    assert downloaded == tmp_path / "env_cache" / Path(path).name
    assert downloaded.read_bytes() == body
    assert cached_path(server.url(path)) == downloaded


def test_progress_line_goes_to_stderr(tmp_path, server, official_checkpoint, capsys):
    _, body, path, _ = official_checkpoint
    download_checkpoint(server.url(path), cache_dir=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert Path(path).name in err and "100.0%" in err


def test_hash_mismatch_removes_file(tmp_path, server, official_checkpoint):
    _, body, _, prefix = official_checkpoint
    wrong_prefix = "0" * 8 if not prefix.startswith("0") else "f" * 8
    path = f"/releases/dpt_tiny-midas-{wrong_prefix}.pt"
    server.routes[path] = (200, body, None)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsHashMismatchError) as caught:
        download_checkpoint(server.url(path), cache_dir=cache, progress=False)
    message = str(caught.value)
    assert wrong_prefix in message
    assert hashlib.sha256(body).hexdigest() in message
    assert "removed" in message
    assert list(cache.iterdir()) == []


def test_explicit_hash_prefix_overrides_name(tmp_path, server, official_checkpoint):
    _, body, _, prefix = official_checkpoint
    server.routes["/plain.pt"] = (200, body, None)
    path = download_checkpoint(
        server.url("/plain.pt"), tmp_path, expected_sha256_prefix=prefix, progress=False
    )
    assert path.read_bytes() == body
    with pytest.raises(WeightsHashMismatchError, match="expected a digest starting with abcdef12"):
        download_checkpoint(
            server.url("/plain.pt"), tmp_path / "b", expected_sha256_prefix="abcdef12", progress=False
        )


def test_corrupted_cache_entry_is_downloaded_again(tmp_path, server, official_checkpoint, capsys):
    state, body, path, _ = official_checkpoint
    cache = tmp_path / "cache"
    cached = download_checkpoint(server.url(path), cache_dir=cache, progress=False)
    cached.write_bytes(body[:-10] + b"0123456789")  # same size, different content
    again = download_checkpoint(server.url(path), cache_dir=cache, progress=False)
    assert again.read_bytes() == body
    assert server.requests == [path, path]
    assert "failed verification" in capsys.readouterr().err


def test_corrupted_cache_entry_offline_reports_it(tmp_path, official_checkpoint):
    _, body, path, _ = official_checkpoint
    url = f"http://127.0.0.1:{closed_port()}{path}"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / Path(path).name).write_bytes(b"garbage")
    with pytest.raises(WeightsOfflineError, match="cached copy .* was removed"):
        download_checkpoint(url, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_truncated_transfer(tmp_path, server, official_checkpoint):
    _, body, path, _ = official_checkpoint
    short = body[: len(body) // 2]
    server.routes[path] = (200, short, len(body))
    cache = tmp_path / "cache"
    with pytest.raises(WeightsTruncatedError) as caught:
        download_checkpoint(server.url(path), cache_dir=cache, progress=False)
    message = str(caught.value)
    assert f"announced {len(body)} bytes" in message
    assert f"received {len(short)}" in message
    assert list(cache.iterdir()) == []  # neither the partial nor a final file is kept


def test_http_404_is_offline_error_with_advice(tmp_path, server):
    url = server.url("/missing/dpt_large-midas-2f21e586.pt")
    with pytest.raises(WeightsOfflineError) as caught:
        download_checkpoint(url, cache_dir=tmp_path, progress=False)
    message = str(caught.value)
    assert url in message and "HTTP 404" in message
    assert str(tmp_path / "dpt_large-midas-2f21e586.pt") in message
    assert "local path" in message


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_unreachable_host_is_offline_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/dpt_hybrid-midas-501f0c75.pt"
    with pytest.raises(WeightsOfflineError) as caught:
        read_state_dict(url, cache_dir=tmp_path)
    message = str(caught.value)
    assert url in message and "unreachable" in message
    assert str(tmp_path / "dpt_hybrid-midas-501f0c75.pt") in message
    assert list(tmp_path.iterdir()) == []


def test_hub_directory_with_safetensors(tmp_path):
    state = small_state_dict()
    (tmp_path / "config.json").write_text("{}")
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save({"decoy": torch.zeros(1)}, tmp_path / "pytorch_model.bin")  # safetensors preferred
    assert_same_state(read_state_dict(tmp_path), state)


def test_hub_directory_with_pytorch_model_bin(tmp_path):
    state = small_state_dict()
    (tmp_path / "config.json").write_text("{}")
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert_same_state(read_state_dict(str(tmp_path)), state)


def test_hub_directory_with_sharded_safetensors(tmp_path):
    state = small_state_dict()
    keys = list(state)
    save_file({k: state[k] for k in keys[:1]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: state[k] for k in keys[1:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: f"model-0000{1 if i == 0 else 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = read_state_dict(tmp_path)
    assert sorted(loaded) == sorted(keys)
    for key in keys:
        assert torch.equal(loaded[key], state[key])


def test_directory_without_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsNotFoundError) as caught:
        read_state_dict(tmp_path)
    message = str(caught.value)
    assert "model.safetensors" in message and "pytorch_model.bin" in message
    assert "config.json" in message  # lists what it did find


def test_single_safetensors_file(tmp_path):
    state = small_state_dict()
    save_file(state, str(tmp_path / "weights.safetensors"))
    assert_same_state(read_state_dict(tmp_path / "weights.safetensors"), state)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_original_checkpoint_wrapper_is_unwrapped(tmp_path, wrapper):
    state = small_state_dict()
    torch.save({wrapper: state, "epoch": 7, "optimizer": {"lr": 1e-4}}, tmp_path / "dpt.pt")
    assert_same_state(read_state_dict(tmp_path / "dpt.pt"), state)


def test_plain_original_checkpoint(tmp_path):
    state = small_state_dict()
    torch.save(state, tmp_path / "dpt.pt")
    assert_same_state(read_state_dict(tmp_path / "dpt.pt"), state)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope" / "dpt_large-midas-2f21e586.pt"
    with pytest.raises(WeightsNotFoundError, match="does not exist") as caught:
        read_state_dict(missing)
    assert str(missing) in str(caught.value)


def test_truncated_local_pt_and_safetensors(tmp_path):
    state = small_state_dict()
    torch.save(state, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsTruncatedError, match="cut.pt.*truncated or corrupt"):
        read_state_dict(tmp_path / "cut.pt")

    save_file(state, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 7])
    with pytest.raises(WeightsTruncatedError, match="cut.safetensors.*truncated or corrupt"):
        read_state_dict(tmp_path / "cut.safetensors")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")
    with pytest.raises(WeightsTruncatedError, match="weights_only=True"):
        read_state_dict(tmp_path / "module.pt")


def test_non_tensor_content_is_a_layout_error(tmp_path):
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(WeightsLayoutError, match="non-tensor entries \\['weights'\\]"):
        read_state_dict(tmp_path / "odd.pt")


def test_auto_weights_without_a_hash_in_the_name_are_checked_against_the_variants_digest(tmp_path, server,
                                                                                        monkeypatch):
    """Depth Anything V2's official files carry no hash in their names: build_model(weights="auto")
    downloads the variant's URL and checks it against the digest of the variants table."""
    from dpt_ros.model import build_model, to_original_state_dict
    from dpt_ros.model.testing import tiny_depth_anything

    spec = tiny_depth_anything()
    source = build_model(spec, seed=4)
    body = checkpoint_bytes(to_original_state_dict(source), tmp_path)
    server.routes["/depth-anything/resolve/main/depth_anything_v2_tiny.pth"] = (200, body, None)

    def official(sha256_prefix):
        return spec.replace(task=dict(checkpoint_file="depth_anything_v2_tiny.pth", sha256_prefix=sha256_prefix,
                                      checkpoint_base_url=server.url("/depth-anything/resolve/main/"),
                                      licence="Apache-2.0"))

    monkeypatch.setenv("DPT_ROS_CACHE", str(tmp_path / "cache"))
    loaded = build_model(official(hashlib.sha256(body).hexdigest()), weights="auto")
    assert_same_state(loaded.state_dict(), source.state_dict())
    assert (tmp_path / "cache" / "depth_anything_v2_tiny.pth").read_bytes() == body

    monkeypatch.setenv("DPT_ROS_CACHE", str(tmp_path / "other_cache"))
    with pytest.raises(WeightsHashMismatchError, match="expected a digest starting with 0123abcd"):
        build_model(official("0123abcd"), weights="auto")
    assert not (tmp_path / "other_cache" / "depth_anything_v2_tiny.pth").exists()
