"""Fuzzing: a few hundred malformed copies of the tests' own media, through the real pipeline.

The sources are a 0.5 s 160x120 clip with sound, a 64x64 photo (JPEG and PNG) and a 6-frame GIF;
the variants (seeded, so every run tests the same files) are truncations at many offsets, flipped
bytes in the header and anywhere, zeroed and swapped blocks, and one format's header put on
another's body. Each goes through the `Analyzer` that `deepfake-detect analyze` uses, with a time
cap per file, and must get a verdict or one clean line: never "internal error", never a library's
internals, never a hang, and the decoder's own noise never on the terminal. A folder of them then
goes through the CLI to show the batch goes on. Small on purpose: under a minute on 2 cores.
"""
from __future__ import annotations

import concurrent.futures
import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deepfake_detect.pipeline.cli import main
from deepfake_detect.pipeline.core.config import load_config
from deepfake_detect.pipeline.core.report import REPORT_SCHEMA, report_to_dict
from deepfake_detect.pipeline.core.runner import Analyzer
from deepfake_detect.pipeline.core.samples import make_sample_photo, make_sample_video, render_sample_frame

SEED = 15
PER_SOURCE = 60            # variants of each of the 4 sources
FILE_CAP_S = 30.0          # one malformed file, on a busy 2-core machine
VERDICTS = {"fake", "real", "inconclusive", "no_face", "error"}
INTERNALS = re.compile(r"\.(cc|cpp|h|py)\b|/github/|/workspace/|0x[0-9a-fA-F]{6,}|Traceback|DECORDError|Check failed|"
                       r"internal error")

HEADERS = {  # a format's first bytes, to put on another format's body
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "gif": b"GIF89a\x40\x00\x40\x00",
    "mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
    "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    "mkv": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81",
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00",
    "text": b"#EXTM3U\n#EXT-X-",
}


def _variants(name: str, data: bytes, rng: np.random.Generator, n: int) -> dict[str, bytes]:
    """`n` malformed copies of `data`: truncations, flips, zeroed / swapped blocks, header swaps."""
    out: dict[str, bytes] = {}
    size = len(data)
    cuts = sorted(set(np.unique(np.geomspace(1, size - 1, n // 4).astype(int)).tolist()))
    for cut in cuts:
        out[f"{name}-cut{cut}"] = data[:cut]
    while len(out) < n:
        kind = rng.choice(["flip_head", "flip_any", "zero", "swap", "header"])
        buf = bytearray(data)
        if kind == "flip_head":       # the container / image header, where parsers decide sizes
            for pos in rng.integers(0, min(size, 512), rng.integers(1, 9)):
                buf[pos] ^= int(rng.integers(1, 256))
        elif kind == "flip_any":
            for pos in rng.integers(0, size, rng.integers(1, 65)):
                buf[pos] ^= int(rng.integers(1, 256))
        elif kind == "zero":
            start = int(rng.integers(0, size))
            end = min(size, start + int(rng.integers(16, 2048)))
            buf[start:end] = bytes(end - start)
        elif kind == "swap":
            a, b = sorted(rng.integers(0, size - 256, 2).tolist())
            length = int(rng.integers(16, 256))
            buf[a:a + length], buf[b:b + length] = buf[b:b + length], buf[a:a + length]
        else:
            header = HEADERS[str(rng.choice(list(HEADERS)))]
            buf[: len(header)] = header
        out[f"{name}-{kind}{len(out)}"] = bytes(buf)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    src = root / "src"
    clip = make_sample_video(src / "clip.mp4", seconds=0.5, size=(160, 120), faces=1, audio=True)
    jpeg = make_sample_photo(src / "photo.jpg", size=(64, 64))
    png = make_sample_photo(src / "photo.png", size=(64, 64))
    frames = [Image.fromarray(render_sample_frame(64, 64, i / 6, 1.0, faces=1)) for i in range(6)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    rng = np.random.default_rng(SEED)
    folder = root / "variants"
    folder.mkdir()
    for path in (clip, jpeg, png, src / "anim.gif"):
        for name, data in _variants(path.stem + path.suffix.replace(".", "_"), path.read_bytes(), rng, PER_SOURCE).items():
            (folder / f"{name}{path.suffix}").write_bytes(data)
    return folder


def _check(report: dict) -> None:
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["verdict"] in VERDICTS
    for line in report["errors"] + report["warnings"]:
        assert "\n" not in line and not INTERNALS.search(line), line
    if report["verdict"] == "error":
        assert len(report["errors"]) == 1
    else:
        assert not report["errors"] and report["frames_analysed"] >= 1


def test_malformed_variants_get_a_verdict_or_one_clean_line(weights_dir, corpus, capfd, caplog):
    config = load_config(None, {"weights": str(weights_dir), "device": "cpu", "sampling.value": 2,
                                "limits.max_source_pixels": 4096 * 4096, "limits.max_animation_pixels": 50_000_000})
    analyzer = Analyzer(config)
    files = sorted(corpus.iterdir())
    assert len(files) >= 4 * PER_SOURCE - 20
    outcomes: dict[str, int] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        for path in files:
            future = pool.submit(analyzer.analyze, path)
            try:
                report = report_to_dict(future.result(timeout=FILE_CAP_S))
            except concurrent.futures.TimeoutError:
                pytest.fail(f"{path.name}: no result within {FILE_CAP_S:.0f} s (a hang)")
            _check(report)
            key = report["errors"][0].split(":")[0] if report["errors"] else report["verdict"]
            outcomes[key] = outcomes.get(key, 0) + 1
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    err = capfd.readouterr().err
    assert "@ 0x" not in err and "error while decoding" not in err, err[-2000:]
    # the variants reach every layer: some still decode, some are refused for different reasons
    assert sum(outcomes.get(v, 0) for v in ("fake", "real", "inconclusive", "no_face")) >= 20, outcomes
    assert len([k for k in outcomes if k not in VERDICTS]) >= 4, outcomes


def test_a_folder_of_malformed_files_is_one_batch(weights_dir, corpus, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    picked = sorted(corpus.iterdir())[::12]   # every kind of source, some of each mutation
    for path in picked:
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["analyze", str(folder), "--weights", str(weights_dir), "--device", "cpu",
                                       "--frames", "2", "--no-render", "--out", str(out)], catch_exceptions=False)
    assert "Traceback" not in result.output and "internal error" not in result.output
    reports = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(reports) == len(picked)          # every file got its report: the batch went on
    for report in reports:
        _check(report)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == sum(r["verdict"] == "error" for r in reports)
    assert result.exit_code in (1, 2, 3)
