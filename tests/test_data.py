"""Tests of the data stage: STL-10 layout, embedded sample, download against a local server, CLI."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mifeatures.stages.download import download_stl10
from mifeatures.stages.download import main as download_main
from mifeatures.stages.sample import main as sample_main
from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.stl10 import IMAGE_BYTES, read_stl10_images, write_stl10_images
from mifeatures.workflow.params import load_params

SIDE = 96
CHANNEL_BYTES = SIDE * SIDE  # 9216


# --------------------------------------------------------------------------- helpers


def _random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, SIDE, SIDE, 3), dtype=np.uint8)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _stl10_bytes(images: np.ndarray, tmp: Path, name: str) -> bytes:
    path = tmp / name
    write_stl10_images(images, path)
    return path.read_bytes()


def _stl10_split(images: np.ndarray) -> np.ndarray:
    """``images`` first, then black ones up to the 5000 of STL-10's train split, whose size the download checks."""
    return np.concatenate([images, np.zeros((5000 - len(images), SIDE, SIDE, 3), np.uint8)])


def _make_tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stl10_members(tmp_path_factory) -> dict[str, bytes]:
    """The members of a tiny archive in the genuine STL-10 layout."""
    tmp = tmp_path_factory.mktemp("members")
    class_names = "airplane bird car cat deer dog horse monkey ship truck".split()
    return {
        "stl10_binary/train_X.bin": _stl10_bytes(_stl10_split(make_sample(3, 0)), tmp, "train_X.bin"),
        "stl10_binary/train_y.bin": np.resize(np.array([1, 5, 10], dtype=np.uint8), 5000).tobytes(),
        "stl10_binary/test_X.bin": _stl10_bytes(_random_images(2, 1), tmp, "test_X.bin"),
        "stl10_binary/test_y.bin": np.array([3, 7], dtype=np.uint8).tobytes(),
        "stl10_binary/unlabeled_X.bin": _stl10_bytes(_random_images(1, 2), tmp, "unlabeled_X.bin"),
        "stl10_binary/class_names.txt": ("\n".join(class_names) + "\n").encode(),
        "stl10_binary/fold_indices.txt": b"0 1\n2\n",
    }


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that records every request path in ``self.requests``.

    Each GET first takes the next entry of ``self.faults``, if any: ``"drop"`` announces the
    file's full Content-Length, sends only its first half and closes the socket; an int answers
    with that HTTP status instead of the file.
    """

    def __init__(self, *args, requests: list[str], faults: list, **kwargs):
        self.requests = requests
        self.faults = faults
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requests.append(self.path)
        fault = self.faults.pop(0) if self.faults else None
        if fault == "drop":
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True  # the server then closes the socket mid-file
        elif isinstance(fault, int):
            self.send_error(fault)
        else:
            super().do_GET()

    def do_HEAD(self):  # noqa: N802
        self.requests.append(self.path)
        super().do_HEAD()

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass


class LocalServer:
    """A static HTTP server on 127.0.0.1 serving ``root``; ``requests`` lists the paths asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        self.faults: list = []
        handler = functools.partial(
            _CountingHandler, requests=self.requests, faults=self.faults, directory=str(root)
        )
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def publish(self, name: str, data: bytes) -> tuple[str, str]:
        """Serve ``data`` as ``/name``; return its URL and md5."""
        (self.root / name).write_bytes(data)
        return f"http://127.0.0.1:{self.port}/{name}", hashlib.md5(data).hexdigest()

    def fail_next(self, *faults) -> None:
        """Answer the next GET requests with these faults ("drop" or an HTTP status), in order."""
        self.faults.extend(faults)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving a temp folder, shut down after the test."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    local = LocalServer(served)
    yield local
    local.close()


@pytest.fixture
def download_root(tmp_path) -> Path:
    """The folder the download stage writes into (archive plus stl10_binary/)."""
    return tmp_path / "raw" / "stl10"


# --------------------------------------------------------------------------- STL-10 layout


def test_write_stl10_images_uses_channel_by_channel_column_major_layout(tmp_path):
    """Byte i*27648 + c*9216 + x*96 + y of the written file is images[i, y, x, c]."""
    images = _random_images(2, seed=42)
    path = tmp_path / "train_X.bin"
    write_stl10_images(images, path)
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    assert raw.size == 2 * IMAGE_BYTES == 2 * 27648
    i, y, x, c = np.meshgrid(np.arange(2), np.arange(SIDE), np.arange(SIDE), np.arange(3), indexing="ij")
    offsets = i * 27648 + c * CHANNEL_BYTES + x * SIDE + y
    np.testing.assert_array_equal(raw[offsets], images)
    # A few hand-picked positions, spelled out, so the formula above is not the only witness.
    assert raw[0] == images[0, 0, 0, 0]
    assert raw[1] == images[0, 1, 0, 0]  # next byte walks down the column (y), not along the row
    assert raw[SIDE] == images[0, 0, 1, 0]
    assert raw[CHANNEL_BYTES] == images[0, 0, 0, 1]
    assert raw[27648 + 2 * CHANNEL_BYTES + 5 * SIDE + 7] == images[1, 7, 5, 2]


def test_stl10_round_trip_is_exact(tmp_path):
    """read_stl10_images(write_stl10_images(x)) returns x exactly, as a contiguous uint8 array."""
    images = _random_images(2, seed=7)
    path = tmp_path / "sub" / "train_X.bin"  # the parent folder is created on the fly
    write_stl10_images(images, path)
    back = read_stl10_images(path)
    assert back.dtype == np.uint8
    assert back.shape == (2, SIDE, SIDE, 3)
    assert back.flags.c_contiguous
    np.testing.assert_array_equal(back, images)
    assert read_stl10_images(str(path)).tobytes() == images.tobytes()  # str paths work too


def test_read_stl10_images_reads_a_file_written_by_hand_in_stl10_order(tmp_path):
    """A file built directly as (N, C, W, H) bytes reads back as (N, H, W, C) images."""
    images = _random_images(3, seed=3)
    path = tmp_path / "hand.bin"
    path.write_bytes(images.transpose(0, 3, 2, 1).tobytes())
    np.testing.assert_array_equal(read_stl10_images(path), images)


# --------------------------------------------------------------------------- read/write errors


def test_read_stl10_images_rejects_size_not_multiple_of_image_bytes(tmp_path):
    """A file whose size is not a multiple of 27648 raises ValueError naming the path and 27648."""
    path = tmp_path / "short.bin"
    path.write_bytes(bytes(27648 + 100))
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*27748 bytes.*27648"):
        read_stl10_images(path)


def test_read_stl10_images_rejects_empty_file(tmp_path):
    """An empty file raises ValueError (0 bytes is not a positive multiple of 27648)."""
    path = tmp_path / "empty.bin"
    path.touch()
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": 0 bytes is not a positive multiple of 27648"):
        read_stl10_images(path)


def test_read_stl10_images_missing_file_raises_file_not_found(tmp_path):
    """A missing file raises FileNotFoundError naming the path."""
    path = tmp_path / "nope" / "train_X.bin"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_stl10_images(path)


def test_read_stl10_images_rejects_a_directory(tmp_path):
    """A directory in place of the file raises FileNotFoundError, not IsADirectoryError."""
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        read_stl10_images(tmp_path)


@pytest.mark.parametrize(
    "images",
    [
        pytest.param(np.zeros((2, SIDE, SIDE, 3), dtype=np.float32), id="float32"),
        pytest.param(np.zeros((2, SIDE, SIDE, 3), dtype=np.int64), id="int64"),
        pytest.param(np.zeros((2, SIDE, SIDE), dtype=np.uint8), id="no-channels"),
        pytest.param(np.zeros((2, 3, SIDE, SIDE), dtype=np.uint8), id="channels-first"),
        pytest.param(np.zeros((2, SIDE, SIDE, 4), dtype=np.uint8), id="rgba"),
        pytest.param(np.zeros((2, 32, 32, 3), dtype=np.uint8), id="32px"),
        pytest.param(np.zeros((SIDE, SIDE, 3), dtype=np.uint8), id="single-image-3d"),
    ],
)
def test_write_stl10_images_rejects_wrong_dtype_or_shape(tmp_path, images):
    """Anything but uint8 (N, 96, 96, 3) raises ValueError and writes nothing."""
    path = tmp_path / "out" / "train_X.bin"
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, 96, 96, 3\), got " + str(images.dtype)):
        write_stl10_images(images, path)
    assert not path.exists()
    assert _files_under(tmp_path) == []


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    """A rejected write leaves an existing file byte-identical and no temporary file beside it."""
    path = tmp_path / "train_X.bin"
    original = _random_images(1, seed=5)
    write_stl10_images(original, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="expected uint8"):
        write_stl10_images(np.zeros((1, SIDE, SIDE, 3), dtype=np.float64), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train_X.bin"]


def test_write_failing_after_the_temporary_is_written_leaves_no_temporary(tmp_path):
    """When the final rename fails (target is a folder), the error propagates and no .tmp file remains."""
    target = tmp_path / "train_X.bin"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        write_stl10_images(_random_images(1), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_X.bin"]
    assert [p.name for p in target.iterdir()] == ["keep"]


# --------------------------------------------------------------------------- embedded sample


@pytest.fixture(scope="module")
def sample15() -> np.ndarray:
    """make_sample(15, 0): one crop of each of the 15 photos."""
    return make_sample(15, 0)


def test_make_sample_shape_and_dtype():
    """make_sample(n, seed) returns uint8 (n, 96, 96, 3)."""
    images = make_sample(4, 0)
    assert images.shape == (4, SIDE, SIDE, 3)
    assert images.dtype == np.uint8


def test_make_sample_is_deterministic(sample15):
    """Two calls with the same arguments are byte-identical."""
    assert make_sample(15, 0).tobytes() == sample15.tobytes()


def test_make_sample_prefix_is_stable_in_n(sample15):
    """The first k images do not depend on how many images are asked for."""
    assert make_sample(5, 0).tobytes() == sample15[:5].tobytes()


def test_make_sample_depends_on_seed(sample15):
    """A different seed gives different crops for every image."""
    other = make_sample(15, 1)
    assert other.shape == sample15.shape
    assert all(not np.array_equal(a, b) for a, b in zip(sample15, other))


def test_make_sample_images_come_from_varied_real_photos(sample15):
    """Images are not constant and their statistics vary as across different photos."""
    flat = sample15.reshape(15, -1).astype(np.float64)
    assert (flat.std(axis=1) > 5).all()  # every crop has texture, none is flat
    means = flat.mean(axis=1)
    assert means.max() - means.min() > 80  # e.g. the dark Hubble field vs the bright coffee photo
    assert len(np.unique(means.round())) >= 12  # not a handful of repeats
    # No two images are the same crop.
    assert len({image.tobytes() for image in sample15}) == 15


def test_make_sample_cycles_through_grayscale_and_colour_photos(sample15):
    """Grayscale photos (brick, camera, coins...) give R == G == B; colour ones (astronaut) do not."""

    def is_gray(image):
        return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())

    gray = [is_gray(image) for image in sample15]
    # Order of SAMPLE_PHOTOS: astronaut, brick, camera, chelsea, coffee, coins, grass, gravel,
    # hubble_deep_field, immunohistochemistry, moon, retina, rocket, then the two motorcycle views.
    assert [i for i, g in enumerate(gray) if g] == [1, 2, 5, 6, 7, 10]
    # Image 15 comes from photo 0 again (astronaut, colour); image 16 from brick (grayscale).
    more = make_sample(17, 0)
    assert not is_gray(more[15]) and is_gray(more[16])


@pytest.mark.parametrize("n_images", [0, -1])
def test_make_sample_rejects_non_positive_count(n_images):
    """n_images < 1 raises ValueError naming the value."""
    with pytest.raises(ValueError, match=rf"n_images must be ≥ 1, got {n_images}"):
        make_sample(n_images, 0)


# --------------------------------------------------------------------------- download


@pytest.mark.network
def test_download_extracts_only_the_train_split_and_keeps_the_archive(server, download_root, stl10_members):
    """download_stl10 fetches, verifies and extracts train_X/train_y/class_names only; the archive stays."""
    archive_bytes = _make_tar_gz(stl10_members)
    url, md5 = server.publish("stl10_binary.tar.gz", archive_bytes)
    out = download_root / "stl10_binary" / "train_X.bin"

    result = download_stl10(url, md5, out, progress=False)

    assert Path(result) == out
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]
    np.testing.assert_array_equal(read_stl10_images(out), _stl10_split(make_sample(3, 0)))
    folder = download_root / "stl10_binary"
    assert sorted(p.name for p in folder.iterdir()) == ["class_names.txt", "train_X.bin", "train_y.bin"]
    assert (folder / "train_y.bin").read_bytes() == stl10_members["stl10_binary/train_y.bin"]
    assert (folder / "class_names.txt").read_bytes() == stl10_members["stl10_binary/class_names.txt"]
    assert not (folder / "unlabeled_X.bin").exists()
    assert not (folder / "test_X.bin").exists()
    # The archive is kept beside the stl10_binary folder, byte-identical, and nothing else lies there.
    archive = download_root / "stl10_binary.tar.gz"
    assert archive.read_bytes() == archive_bytes
    assert sorted(p.name for p in download_root.iterdir()) == ["stl10_binary", "stl10_binary.tar.gz"]
    assert server.requests == ["/stl10_binary.tar.gz"]


@pytest.mark.network
def test_download_second_call_does_not_hit_the_server(server, download_root, stl10_members):
    """A rerun reuses the verified archive: no new request, even after train_X.bin was deleted."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    out = download_root / "stl10_binary" / "train_X.bin"
    download_stl10(url, md5, out, progress=False)
    assert len(server.requests) == 1

    assert download_stl10(url, md5, out, progress=False) == out
    out.unlink()
    assert download_stl10(url, md5, out, progress=False) == out

    assert len(server.requests) == 1
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]


@pytest.mark.network
def test_download_redownloads_a_tampered_archive(server, download_root, stl10_members):
    """An archive on disk whose md5 no longer matches is fetched again and replaced."""
    archive_bytes = _make_tar_gz(stl10_members)
    url, md5 = server.publish("stl10_binary.tar.gz", archive_bytes)
    download_root.mkdir(parents=True)
    (download_root / "stl10_binary.tar.gz").write_bytes(b"not the archive")
    out = download_root / "stl10_binary" / "train_X.bin"

    download_stl10(url, md5, out, progress=False)

    assert len(server.requests) == 1
    assert (download_root / "stl10_binary.tar.gz").read_bytes() == archive_bytes
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]


@pytest.mark.network
def test_download_wrong_md5_raises_and_leaves_nothing(server, download_root, stl10_members):
    """A checksum mismatch raises ValueError naming the URL and both md5s; no retry, nothing left."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    wrong = "0" * 32
    assert wrong != md5
    out = download_root / "stl10_binary" / "train_X.bin"
    with pytest.raises(ValueError, match=re.escape(url) + r": checksum failed \(.*md5.*\)") as info:
        download_stl10(url, wrong, out, progress=False, attempts=3, backoff=0)
    message = str(info.value)
    assert wrong in message and md5 in message  # pooch's expected vs actual hash
    assert "params.yaml" in message
    assert len(server.requests) == 1  # a file received in full with the wrong md5 is not fetched again
    assert not out.exists()
    assert _files_under(download_root) == []  # neither archive nor pooch's temporary file


@pytest.mark.network
def test_download_http_404_raises_connection_error_without_retrying(server, download_root):
    """A 404 raises ConnectionError naming URL, status and remedies after one request; nothing left."""
    url = f"http://127.0.0.1:{server.port}/missing/stl10_binary.tar.gz"
    out = download_root / "stl10_binary" / "train_X.bin"
    expected = (
        r"could not download " + re.escape(url) + r": HTTP 404 [^;]*; retrying will not help\. "
        r"Use a mirror \(data\.stl10\.url in params\.yaml\), place stl10_binary\.tar\.gz in "
        + re.escape(str(download_root)) + r" by hand, or use data\.dataset: sample$"
    )
    with pytest.raises(ConnectionError, match=expected):
        download_stl10(url, "0" * 32, out, progress=False, attempts=3, backoff=0)
    assert server.requests == ["/missing/stl10_binary.tar.gz"]  # a 404 will not heal: no retry
    assert not out.exists()
    assert _files_under(download_root) == []


@pytest.mark.network
def test_download_nothing_listening_raises_connection_error(download_root, monkeypatch):
    """A refused connection is retried, then raises ConnectionError naming the URL and the three remedies."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/stl10_binary.tar.gz"
    out = download_root / "stl10_binary" / "train_X.bin"
    expected = r"could not download " + re.escape(url) + " after 3 attempts: "
    with pytest.raises(ConnectionError, match=expected) as info:
        download_stl10(url, "0" * 32, out, progress=False, attempts=3, backoff=0)
    assert type(info.value) is ConnectionError  # the wrapper, not requests' own exception
    message = str(info.value)
    assert "Use a mirror (data.stl10.url in params.yaml)" in message
    assert f"place stl10_binary.tar.gz in {download_root} by hand" in message
    assert message.endswith("or use data.dataset: sample")
    assert not out.exists()
    assert _files_under(download_root) == []


@pytest.mark.network
def test_download_corrupt_archive_raises_value_error_and_deletes_it(server, download_root):
    """Garbage with the right md5 raises 'corrupt or truncated archive'; deleted, nothing extracted."""
    garbage = np.random.default_rng(0).integers(0, 256, size=5000, dtype=np.uint8).tobytes()
    url, md5 = server.publish("garbage.tar.gz", garbage)
    out = download_root / "stl10_binary" / "train_X.bin"
    archive = download_root / "stl10_binary.tar.gz"
    expected = (
        re.escape(str(archive)) + r": corrupt or truncated archive \(.*\)\. It matched data\.stl10\.md5, so "
        r"fetching it again from " + re.escape(url) + r" would give the same bytes; "
        r"the archive has been deleted\. Point data\.stl10\.url at a good copy and set data\.stl10\.md5 "
        r"to its md5, place a good stl10_binary\.tar\.gz in " + re.escape(str(download_root))
        + r" by hand, or use data\.dataset: sample$"
    )
    with pytest.raises(ValueError, match=expected):
        download_stl10(url, md5, out, progress=False)
    assert not out.exists()
    assert not (download_root / "stl10_binary").exists()
    assert _files_under(download_root) == []  # the bad archive is gone: a rerun will not reuse it


@pytest.mark.network
def test_download_truncated_archive_raises_value_error(server, download_root, stl10_members):
    """A real archive cut in half (with the md5 of the cut bytes) is reported as truncated and deleted."""
    whole = _make_tar_gz(stl10_members)
    url, md5 = server.publish("stl10_binary.tar.gz", whole[: len(whole) // 2])
    out = download_root / "stl10_binary" / "train_X.bin"
    archive = download_root / "stl10_binary.tar.gz"
    expected = re.escape(str(archive)) + r": corrupt or truncated archive .*has been deleted"
    with pytest.raises(ValueError, match=expected):
        download_stl10(url, md5, out, progress=False)
    assert not out.exists()
    assert not (download_root / "stl10_binary").exists()
    assert _files_under(download_root) == []  # neither the archive nor any temporary


@pytest.mark.network
def test_download_retries_a_dropped_connection_and_succeeds(server, download_root, stl10_members):
    """Two drops mid-file are retried; the third, full attempt is verified and extracted; no temporary."""
    archive_bytes = _make_tar_gz(stl10_members)
    url, md5 = server.publish("stl10_binary.tar.gz", archive_bytes)
    server.fail_next("drop", "drop")
    out = download_root / "stl10_binary" / "train_X.bin"

    assert download_stl10(url, md5, out, progress=False, attempts=3, backoff=0) == out

    assert server.requests == ["/stl10_binary.tar.gz"] * 3
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]
    assert (download_root / "stl10_binary.tar.gz").read_bytes() == archive_bytes
    assert sorted(p.name for p in download_root.iterdir()) == ["stl10_binary", "stl10_binary.tar.gz"]


@pytest.mark.network
@pytest.mark.parametrize("attempts", [1, 3])
def test_download_dropped_on_every_attempt_raises_and_leaves_nothing(
    server, download_root, stl10_members, attempts
):
    """Every attempt dropped mid-file: ConnectionError naming URL, attempts, remedies; nothing left."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    server.fail_next(*["drop"] * attempts)
    out = download_root / "stl10_binary" / "train_X.bin"
    plural = "s" if attempts > 1 else ""
    expected = (
        r"could not download " + re.escape(url) + rf" after {attempts} attempt{plural}: "
        r"the connection dropped mid-file \(.*IncompleteRead.*\)\. "
        r"Use a mirror \(data\.stl10\.url in params\.yaml\)"
    )
    with pytest.raises(ConnectionError, match=expected):
        download_stl10(url, md5, out, progress=False, attempts=attempts, backoff=0)
    assert server.requests == ["/stl10_binary.tar.gz"] * attempts
    assert _files_under(download_root) == []


@pytest.mark.network
def test_download_restarted_after_dropped_attempts_completes(server, download_root, stl10_members):
    """A rerun after every attempt dropped fetches the whole archive again, md5-checked, byte-identical."""
    archive_bytes = _make_tar_gz(stl10_members)
    url, md5 = server.publish("stl10_binary.tar.gz", archive_bytes)
    out = download_root / "stl10_binary" / "train_X.bin"
    server.fail_next("drop", "drop")
    with pytest.raises(ConnectionError, match=re.escape(url) + " after 2 attempts"):
        download_stl10(url, md5, out, progress=False, attempts=2, backoff=0)
    assert _files_under(download_root) == []

    assert download_stl10(url, md5, out, progress=False, attempts=2, backoff=0) == out

    assert len(server.requests) == 3
    archive = download_root / "stl10_binary.tar.gz"
    assert hashlib.md5(archive.read_bytes()).hexdigest() == md5
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]
    train_y = download_root / "stl10_binary" / "train_y.bin"
    assert train_y.read_bytes() == stl10_members["stl10_binary/train_y.bin"]


@pytest.mark.network
def test_download_retries_http_503_then_succeeds(server, download_root, stl10_members):
    """A 503 (server busy) may heal: it is retried, and the next full answer is used."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    server.fail_next(503)
    out = download_root / "stl10_binary" / "train_X.bin"
    assert download_stl10(url, md5, out, progress=False, attempts=3, backoff=0) == out
    assert server.requests == ["/stl10_binary.tar.gz"] * 2
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]


@pytest.mark.network
def test_download_waits_backoff_times_attempt_between_attempts(server, download_root, stl10_members):
    """With backoff b, two failed attempts cost at least b + 2b seconds of waiting before the third."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    server.fail_next("drop", "drop")
    out = download_root / "stl10_binary" / "train_X.bin"
    start = time.monotonic()
    download_stl10(url, md5, out, progress=False, attempts=3, backoff=0.1)
    assert time.monotonic() - start >= 0.3
    assert len(server.requests) == 3


@pytest.mark.network
@pytest.mark.parametrize("attempts", [0, -1])
def test_download_rejects_fewer_than_one_attempt(server, download_root, stl10_members, attempts):
    """attempts < 1 raises ValueError naming the value, before any request."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    with pytest.raises(ValueError, match=rf"attempts must be ≥ 1, got {attempts}"):
        download_stl10(url, md5, download_root / "stl10_binary" / "train_X.bin", attempts=attempts)
    assert server.requests == []
    assert not download_root.exists()


@pytest.mark.network
def test_download_rerun_after_a_corrupt_archive_downloads_again(server, download_root, stl10_members):
    """After a corrupt archive was deleted, a rerun with a fixed md5 fetches the good one and extracts it."""
    good = _make_tar_gz(stl10_members)
    url, bad_md5 = server.publish("stl10_binary.tar.gz", good[: len(good) // 2])
    out = download_root / "stl10_binary" / "train_X.bin"
    with pytest.raises(ValueError, match="corrupt or truncated archive"):
        download_stl10(url, bad_md5, out, progress=False)
    _, md5 = server.publish("stl10_binary.tar.gz", good)  # the mirror now serves the whole file

    assert download_stl10(url, md5, out, progress=False) == out

    assert len(server.requests) == 2
    assert (download_root / "stl10_binary.tar.gz").read_bytes() == good
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]


@pytest.mark.network
def test_download_archive_without_train_images_names_the_missing_member(server, download_root, stl10_members):
    """An archive lacking stl10_binary/train_X.bin raises ValueError naming it; deleted, nothing extracted."""
    members = {k: v for k, v in stl10_members.items() if k != "stl10_binary/train_X.bin"}
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(members))
    out = download_root / "stl10_binary" / "train_X.bin"
    archive = download_root / "stl10_binary.tar.gz"
    lacks = r": not an STL-10 archive, it lacks stl10_binary/train_X\.bin\. .*deleted"
    expected = re.escape(str(archive)) + lacks
    with pytest.raises(ValueError, match=expected):
        download_stl10(url, md5, out, progress=False)
    assert not (download_root / "stl10_binary").exists()
    assert not archive.exists()


@pytest.mark.network
def test_download_archive_without_any_train_member_lists_them_all(server, download_root):
    """An unrelated tar.gz names every missing train member in the error."""
    url, md5 = server.publish("other.tar.gz", _make_tar_gz({"readme.txt": b"hello"}))
    out = download_root / "stl10_binary" / "train_X.bin"
    expected = "stl10_binary/train_X.bin, stl10_binary/train_y.bin, stl10_binary/class_names.txt"
    with pytest.raises(ValueError, match=re.escape(f"it lacks {expected}")):
        download_stl10(url, md5, out, progress=False)
    assert not out.exists()


@pytest.mark.network
@pytest.mark.parametrize(
    "relative",
    ["stl10/train_X.bin", "stl10_binary/test_X.bin", "train_X.bin", "stl10_binary/train_X.bin/extra"],
)
def test_download_rejects_out_not_ending_in_stl10_binary_train_x(server, tmp_path, stl10_members, relative):
    """An out path not ending in stl10_binary/train_X.bin raises ValueError before any request."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    out = tmp_path / "dl" / relative
    with pytest.raises(ValueError, match=r"out must end in stl10_binary/train_X\.bin, got " + re.escape(str(out))):
        download_stl10(url, md5, out, progress=False)
    assert server.requests == []
    assert not (tmp_path / "dl").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_sample_writes_the_sample(tmp_path, capsys):
    """`sample --n-images 3 --seed 1 --out P` writes make_sample(3, 1) in STL-10 layout at P."""
    path = tmp_path / "data" / "train_X.bin"
    sample_main(["--n-images", "3", "--seed", "1", "--out", str(path)])
    images = read_stl10_images(path)
    assert images.shape == (3, SIDE, SIDE, 3)
    np.testing.assert_array_equal(images, make_sample(3, 1))
    assert f"wrote {path}" in capsys.readouterr().out


def test_cli_sample_rejects_zero_images(tmp_path):
    """`sample --n-images 0` raises ValueError and writes nothing."""
    path = tmp_path / "train_X.bin"
    with pytest.raises(ValueError, match="n_images must be ≥ 1, got 0"):
        sample_main(["--n-images", "0", "--seed", "1", "--out", str(path)])
    assert not path.exists()


@pytest.mark.parametrize("main", [sample_main, download_main], ids=["sample", "download"])
def test_cli_requires_its_arguments(main, capsys):
    """Running without arguments exits with argparse's usage error (status 2) naming what is required."""
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "the following arguments are required: --" in capsys.readouterr().err


@pytest.mark.network
def test_cli_download_produces_train_images(server, download_root, stl10_members, capsys):
    """`download --url U --md5 M --out P` downloads and extracts train_X.bin at P."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    out = download_root / "stl10_binary" / "train_X.bin"
    download_main(["--url", url, "--md5", md5, "--out", str(out)])
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.network
def test_cli_download_retries_a_drop_with_the_progress_bar_on(server, download_root, stl10_members, caplog):
    """The CLI (progress bar on, default 3 attempts) logs a warning for a dropped attempt, then succeeds."""
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    server.fail_next("drop")
    out = download_root / "stl10_binary" / "train_X.bin"
    with caplog.at_level("WARNING", logger="mifeatures.stages.download"):
        download_main(["--url", url, "--md5", md5, "--out", str(out)])
    assert out.read_bytes() == stl10_members["stl10_binary/train_X.bin"]
    assert len(server.requests) == 2
    warning = re.escape(url) + r" failed \(attempt 1 of 3\): the connection dropped mid-file"
    assert re.search(warning, caplog.text)


# md5 of the default sample (200 images, seed 78) as first generated, which data.dvc pinned until
# data/ became an output of the DVC stage: a change of scikit-image's photos or resize would move it.
DEFAULT_SAMPLE_MD5 = "add6c6efa5da7b62f4e793613d98f544"


def test_default_sample_is_the_one_this_repository_was_built_on(tmp_path):
    """A fresh generation of params.yaml's sample is byte for byte the pinned one."""
    repo = Path(__file__).resolve().parents[1]
    sample = load_params([repo / "params.yaml"])["data"]["sample"]
    out = tmp_path / "data/sample/stl10_binary/train_X.bin"
    sample_main(["--n-images", str(sample["n_images"]), "--seed", str(sample["seed"]), "--out", str(out)])
    assert hashlib.md5(out.read_bytes()).hexdigest() == DEFAULT_SAMPLE_MD5


def _tar_gz_with(member: tarfile.TarInfo, data: bytes | None, members: dict[str, bytes]) -> bytes:
    """An archive of ``members`` (train_X.bin left out) plus ``member``, written as given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, content in members.items():
            if name != member.name:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        tar.addfile(member, None if data is None else io.BytesIO(data))
    return buffer.getvalue()


def _link(kind: bytes) -> tarfile.TarInfo:
    member = tarfile.TarInfo("stl10_binary/train_X.bin")
    member.type, member.linkname = kind, "stl10_binary/train_y.bin"
    return member


def _device() -> tarfile.TarInfo:
    member = tarfile.TarInfo("stl10_binary/train_X.bin")
    member.type = tarfile.CHRTYPE
    return member


def _oversized() -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo("stl10_binary/train_X.bin")
    member.size = 2 * 138_240_000  # 276 MB of zeros: a few hundred KB compressed
    return member, bytes(member.size)


@pytest.mark.network
@pytest.mark.parametrize(("member", "reason"), [
    (lambda: (_link(tarfile.SYMTYPE), None), "stl10_binary/train_X.bin is a symbolic link, not a regular file"),
    (lambda: (_link(tarfile.LNKTYPE), None), "stl10_binary/train_X.bin is a hard link, not a regular file"),
    (lambda: (_device(), None), "stl10_binary/train_X.bin is a device, not a regular file"),
    (_oversized, "stl10_binary/train_X.bin holds 276,480,000 bytes where STL-10's has 138,240,000"),
], ids=["symlink", "hardlink", "device", "oversized"])
def test_link_or_oversized_member_gave_a_keyerror_traceback_kept_the_archive_or_filled_the_disk(
        server, download_root, stl10_members, member, reason):
    """A link member named train_X.bin gave a KeyError traceback and the archive was kept, so every rerun failed
    the same way; a 263 KB archive holding a 276 MB member filled the disk. Each is refused from its header,
    before a byte is written, and the archive is deleted."""
    info, data = member()
    url, md5 = server.publish("stl10_binary.tar.gz", _tar_gz_with(info, data, stl10_members))
    out = download_root / "stl10_binary" / "train_X.bin"
    with pytest.raises(ValueError, match=re.escape(reason) + ".*the archive has been deleted"):
        download_stl10(url, md5, out, progress=False)
    assert _files_under(download_root) == []


@pytest.mark.network
def test_download_killed_mid_way_left_poochs_temporary_for_ever(server, download_root, stl10_members):
    """A download killed mid-way left pooch's tmpXXXXXXXX (mode 0600) in data/stl10/, inside a DVC output, for
    ever; the next download job removes it, and nothing else there."""
    download_root.mkdir(parents=True)
    stale, kept = download_root / "tmpk3j_x9ab", download_root / "notes.txt"
    stale.write_bytes(b"part of an archive")
    kept.write_text("mine")
    url, md5 = server.publish("stl10_binary.tar.gz", _make_tar_gz(stl10_members))
    download_stl10(url, md5, download_root / "stl10_binary" / "train_X.bin", progress=False)
    assert not stale.exists() and kept.exists()


def test_each_sample_image_names_the_photo_it_is_cut_from():
    """The figures and the findings name a sample image's photo by index (core.data.photos): one name per photo
    the sample cuts from, in its order, and image i comes from photo i mod that count."""
    from mifeatures.core.data.photos import PHOTO_NAMES, source_photo, source_photo_index
    from mifeatures.core.data.sample import _sample_photos

    photos = _sample_photos()
    assert len(photos) == len(PHOTO_NAMES)
    assert source_photo_index(len(photos) + 3) == 3 and source_photo(10) == "moon"
