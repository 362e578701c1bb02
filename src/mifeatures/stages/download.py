"""Download stage: the official STL-10 archive, md5-checked, and its train split extracted."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import logging
import re
import tarfile
import time
import zlib
from pathlib import Path

import pooch
import requests
from tqdm.auto import tqdm

from mifeatures.workflow import provenance, usage
from mifeatures.core.io import atomic_write

log = logging.getLogger(__name__)

ARCHIVE_NAME = "stl10_binary.tar.gz"
TRAIN_IMAGES = "stl10_binary/train_X.bin"
# The train members and their exact sizes in bytes (5000 images of 3×96×96 bytes, 5000 labels); the class
# names' file is a few lines. A member of another size, or not a regular file, is not STL-10's: it is
# refused from its header, before a byte is written (a 263 KB archive can hold a member of hundreds of MB).
TRAIN_MEMBERS = {TRAIN_IMAGES: 5000 * 3 * 96 * 96, "stl10_binary/train_y.bin": 5000,
                 "stl10_binary/class_names.txt": None}
MAX_CLASS_NAMES_BYTES = 4096
# pooch streams a download into tempfile's "tmp" + 8 characters beside the archive; a killed job leaves it.
POOCH_TEMPORARY = re.compile(r"tmp[a-z0-9_]{8}")
DOWNLOAD_ATTEMPTS = 3  # attempts in all for faults that may heal (dropped connection, timeout, 5xx)
RETRY_BACKOFF_S = 1.0  # wait before retry k: k × this many seconds


def download_stl10(
    url: str,
    md5: str,
    out: str | Path,
    progress: bool = True,
    attempts: int = DOWNLOAD_ATTEMPTS,
    backoff: float = RETRY_BACKOFF_S,
) -> Path:
    """Download the STL-10 archive beside ``out``'s folder, verify its md5 and extract the train split.

    ``out`` is the path of ``stl10_binary/train_X.bin``; the archive is kept in the folder above
    ``stl10_binary`` so a rerun does not download again. Extracted files appear atomically.

    Faults that may heal (connection dropped mid-file or refused, timeout, HTTP 5xx/408/429) are
    retried up to ``attempts`` times in all, waiting ``backoff`` × attempt seconds in between.
    Faults that will not heal are not retried: another HTTP 4xx, or an md5 mismatch on a file
    received in full (a dropped connection is caught by its Content-Length before the md5 check,
    so a mismatch means a wrong URL or md5, and fetching 2.6 GB again would give the same bytes).
    pooch streams each attempt into a temporary file and moves it onto the archive's name only
    after the md5 matched, so a failed attempt leaves nothing behind. An archive that passes the
    md5 but cannot be extracted is deleted (see ``_extract_train_split``).
    """
    out = Path(out)
    if out.name != Path(TRAIN_IMAGES).name or out.parent.name != Path(TRAIN_IMAGES).parent.name:
        raise ValueError(f"out must end in {TRAIN_IMAGES}, got {out}")
    if attempts < 1:
        raise ValueError(f"attempts must be ≥ 1, got {attempts}")
    root = out.parent.parent
    for stale in discard_download_temporaries(root):
        log.warning("removed %s, left by a download killed mid-way", stale)
    remedies = (
        f"Use a mirror (data.stl10.url in params.yaml), place {ARCHIVE_NAME} in {root} by hand, "
        "or use data.dataset: sample"
    )
    for attempt in range(1, attempts + 1):
        try:
            archive = _retrieve(url, md5, root, progress)
            break
        except ValueError as error:
            if "does not match the known hash" not in str(error):  # e.g. an unsupported URL scheme
                raise ValueError(f"cannot download {url}: {error} (data.stl10.url in params.yaml)") from error
            # pooch has already removed the file that failed the check
            raise ValueError(
                f"{url}: checksum failed ({error}). Check data.stl10.url/md5 in params.yaml, "
                f"or place a verified {ARCHIVE_NAME} in {root} by hand"
            ) from error
        except requests.RequestException as error:
            if not _may_heal(error):
                raise ConnectionError(
                    f"could not download {url}: {_describe(error)}; retrying will not help. {remedies}"
                ) from error
            if attempt == attempts:
                raise ConnectionError(
                    f"could not download {url} after {attempts} attempt{'s' if attempts > 1 else ''}: "
                    f"{_describe(error)}. {remedies}"
                ) from error
            wait = backoff * attempt
            log.warning(
                "download of %s failed (attempt %d of %d): %s; retrying in %.3g s",
                url, attempt, attempts, _describe(error), wait,
            )  # fmt: skip
            time.sleep(wait)
    _extract_train_split(Path(archive), root, url)
    return out


def discard_download_temporaries(root: Path) -> list[Path]:
    """Remove the partial downloads pooch left in ``root`` when a job was killed mid-way; return them. Only
    one download job writes there, so when it starts none of them is live."""
    stale = [path for path in root.glob("tmp*") if POOCH_TEMPORARY.fullmatch(path.name) and path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _retrieve(url: str, md5: str, root: Path, progress: bool) -> str:
    """One ``pooch.retrieve`` attempt; its progress bar is erased if the attempt fails, not left dangling."""
    http = url.startswith(("http://", "https://"))
    # pooch sets total to the Content-Length; it treats the bar as on only while total > 0.
    bar = tqdm(total=1, ncols=79, unit="B", unit_scale=True) if progress and http else None
    try:
        downloader = pooch.HTTPDownloader(progressbar=bar) if bar is not None else None
        return pooch.retrieve(
            url, known_hash=f"md5:{md5}", fname=ARCHIVE_NAME, path=root, downloader=downloader,
            progressbar=progress,
        )  # fmt: skip
    except BaseException:
        if bar is not None:
            bar.leave = False  # the warning or error that follows says what happened
        raise
    finally:
        if bar is not None:
            bar.close()  # a no-op when pooch closed it after a complete download


def _may_heal(error: requests.RequestException) -> bool:
    """Whether retrying might succeed: dropped or refused connections, timeouts, HTTP 5xx/408/429."""
    if isinstance(error, requests.HTTPError):
        status = error.response.status_code if error.response is not None else 0
        return status >= 500 or status in (408, 429)
    transient = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    return isinstance(error, transient)


def _describe(error: requests.RequestException) -> str:
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return f"the connection dropped mid-file ({error})"
    return str(error)


def _extract_train_split(archive: Path, root: Path, url: str) -> None:
    """Extract the train members into ``root/stl10_binary``: all of them, or none.

    Every member is checked from its header first (a regular file, of STL-10's size), then written to
    a temporary file; they are renamed into place only after all were read without error. An archive
    that cannot be read or fails a check is deleted, and the message says so: it passed the md5 check,
    so a later run would otherwise reuse it and fail the same way. A failure to write (e.g. a full
    disk) keeps the archive.
    """
    folder = root / Path(TRAIN_IMAGES).parent
    folder_existed = folder.exists()
    try:
        with tarfile.open(archive, "r:gz") as tar, contextlib.ExitStack() as targets:
            members = {member.name: member for member in tar.getmembers()}  # the last of a name, as tar's
            missing = [name for name in TRAIN_MEMBERS if name not in members]
            if missing:
                raise _BadArchive(f"not an STL-10 archive, it lacks {', '.join(missing)}")
            for name, size in TRAIN_MEMBERS.items():
                _check_member(members[name], size)
            for name in TRAIN_MEMBERS:
                source = tar.extractfile(members[name])
                target = targets.enter_context(atomic_write(root / name))
                with source:
                    while chunk := source.read(1 << 20):
                        target.write(chunk)
    except BaseException as error:
        if not folder_existed:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: atomic_write has removed its temporaries already
        if not isinstance(error, (_BadArchive, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)):
            raise
        archive.unlink(missing_ok=True)
        reason = str(error) if isinstance(error, _BadArchive) else f"corrupt or truncated archive ({error})"
        raise ValueError(
            f"{archive}: {reason}. It matched data.stl10.md5, so fetching it again from {url} would give "
            f"the same bytes; the archive has been deleted. Point data.stl10.url at a good copy and set "
            f"data.stl10.md5 to its md5, place a good {ARCHIVE_NAME} in {root} by hand, "
            "or use data.dataset: sample"
        ) from error
    log.info("extracted %s into %s", ", ".join(TRAIN_MEMBERS), root)


def _check_member(member: tarfile.TarInfo, size: int | None) -> None:
    """Refuse, from its header, a train member that is not a regular file of STL-10's size."""
    if not member.isreg():
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                else "a device" if member.isdev() else "a directory" if member.isdir() else "not a regular file")
        raise _BadArchive(f"{member.name} is {kind}, not a regular file; not an STL-10 archive")
    if size is not None and member.size != size:
        raise _BadArchive(f"{member.name} holds {member.size:,} bytes where STL-10's has {size:,}; "
                          "not an STL-10 archive")
    if size is None and member.size > MAX_CLASS_NAMES_BYTES:
        raise _BadArchive(f"{member.name} holds {member.size:,} bytes, more than the {MAX_CLASS_NAMES_BYTES:,} "
                          "a list of class names needs; not an STL-10 archive")


class _BadArchive(Exception):
    """A readable tar.gz that is not an STL-10 archive."""


def main(argv: list[str] | None = None) -> None:
    """CLI: download STL-10."""
    parser = argparse.ArgumentParser(prog="mifeatures download", description=usage.summary(__doc__))
    parser.add_argument("--url", required=True, help="URL of stl10_binary.tar.gz")
    parser.add_argument("--md5", required=True, help="expected md5 of the archive")
    parser.add_argument("--out", required=True, help="path of stl10_binary/train_X.bin to produce")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    download_stl10(args.url, args.md5, args.out)
    # The md5 is the dataset's identity; the URL says only where it came from (a mirror is the same data).
    job = provenance.record("download", {}, {"data.stl10.md5": args.md5}, {"url": args.url})
    provenance.write([args.out], job)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
