"""Provenance: content credentials (C2PA) read and validated, metadata read, and the verdict's basis.

Every fixture is made here, with no network: a certificate chain (tests/c2pa_fixtures.py), a photo and
a clip signed with c2pa-python's Builder, the same files with one byte changed, unsigned files.
"""
from __future__ import annotations

import csv
import json
import shutil

import jsonschema
import pytest
from click.testing import CliRunner

from deepfake_detect.pipeline.cli import main
from deepfake_detect.pipeline.core.report import REPORT_SCHEMA
from deepfake_detect.pipeline.core.samples import make_sample_photo, make_sample_video
from deepfake_detect.stages.provenance import ABSENT_NOTE, ProvenanceSettings, read_provenance

pytest.importorskip("c2pa", reason="content credentials need c2pa-python (a dependency)")
pytest.importorskip("cryptography", reason="the test certificates are made with cryptography (the test extras)")
from c2pa_fixtures import CAPTURED, make_chain, sign  # noqa: E402


def _flip_byte(src, dest, at: float):
    data = bytearray(src.read_bytes())
    data[int(len(data) * at)] ^= 0x55
    dest.write_bytes(bytes(data))
    return dest


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("c2pa")
    chain, stranger = make_chain(), make_chain()
    photo = make_sample_photo(folder / "photo.jpg")
    clip = make_sample_video(folder / "clip.mp4", 1.0, 25.0, (320, 240), 1, False)
    files = {"photo": photo, "clip": clip,
             "generated": sign(photo, folder / "generated.jpg", chain, "image/jpeg"),
             "captured": sign(photo, folder / "captured.jpg", chain, "image/jpeg", CAPTURED),
             "generated_clip": sign(clip, folder / "generated.mp4", chain, "video/mp4")}
    files["tampered"] = _flip_byte(files["generated"], folder / "tampered.jpg", 0.9)   # in the image data
    files["tampered_clip"] = _flip_byte(files["generated_clip"], folder / "tampered.mp4", 0.6)
    (folder / "roots.pem").write_bytes(chain.root_pem)
    (folder / "other-roots.pem").write_bytes(stranger.root_pem)
    files["roots"], files["other_roots"] = folder / "roots.pem", folder / "other-roots.pem"
    return files


def _trusting(media, key="roots"):
    return ProvenanceSettings(trust_anchors=str(media[key]))


def test_an_unsigned_file_is_absent_and_rules_nothing_out(media):
    found = read_provenance(media["photo"], _trusting(media))
    assert found.c2pa == "absent" and not found.declares_generated and found.note == ABSENT_NOTE


def test_a_signed_generated_photo_under_its_trusted_root_is_valid_and_declares_generation(media):
    found = read_provenance(media["generated"], _trusting(media))
    assert found.c2pa == "valid" and found.declares_generated and found.validation_codes == []
    assert [(a.action, a.software_agent, a.digital_source_type) for a in found.actions] == [
        ("c2pa.created", "Test Diffusion 2.1", "trainedAlgorithmicMedia")]
    assert found.signer_common_name == "Test Signer" and "test-generator" in (found.claim_generator or "")


def test_without_its_root_an_intact_manifest_is_untrusted_not_valid(media):
    for settings in (ProvenanceSettings(), _trusting(media, "other_roots")):
        found = read_provenance(media["generated"], settings)
        assert found.c2pa == "untrusted" and found.declares_generated
        assert "signingCredential.untrusted" in found.validation_codes


def test_one_changed_byte_makes_the_credentials_invalid(media):
    found = read_provenance(media["tampered"], _trusting(media))
    assert found.c2pa == "invalid" and not found.declares_generated
    assert any("dataHash.mismatch" in code for code in found.validation_codes)


def test_a_signed_clip_is_valid_and_a_changed_one_invalid(media):
    assert read_provenance(media["generated_clip"], _trusting(media)).c2pa == "valid"
    found = read_provenance(media["tampered_clip"], _trusting(media))
    assert found.c2pa == "invalid" and any("mismatch" in code for code in found.validation_codes)


def test_a_captured_photo_does_not_declare_generation(media):
    found = read_provenance(media["captured"], _trusting(media))
    assert found.c2pa == "valid" and not found.declares_generated


def test_a_broken_or_hostile_manifest_never_raises(media, tmp_path):
    data = media["generated"].read_bytes()
    start = data.index(b"jumb")
    (tmp_path / "cut.jpg").write_bytes(data[:start + 200])                # truncated inside the JUMBF box
    junk = b"\xff\xd8\xff\xeb\x00\x40JP\x00\x01" + b"\x00\x00\x00\x30jumb" + bytes(range(40)) + data[2:]
    (tmp_path / "junk.jpg").write_bytes(junk[:6] + junk[6:])             # an APP11 segment of nonsense first
    for name in ("cut.jpg", "junk.jpg"):
        found = read_provenance(tmp_path / name, _trusting(media))
        assert found.c2pa in ("invalid", "absent") and not found.declares_generated


def test_photo_metadata_camera_and_gps_presence_only(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "TestMake", "TestModel", "TestEditor 3"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}
    Image.new("RGB", (64, 64), (90, 120, 150)).save(tmp_path / "camera.jpg", exif=exif)
    Image.new("RGB", (64, 64), (90, 120, 150)).save(tmp_path / "bare.jpg")
    meta = read_provenance(tmp_path / "camera.jpg").metadata
    assert (meta.camera_make, meta.camera_model, meta.encoder, meta.gps_present) == ("TestMake", "TestModel",
                                                                                     "TestEditor 3", True)
    assert meta.note is None
    bare = read_provenance(tmp_path / "bare.jpg").metadata
    assert not bare.gps_present and bare.camera_make is None and "stripped" in (bare.note or "")


def test_video_metadata_names_the_encoder(media):
    meta = read_provenance(media["clip"], container_header=_header(media["clip"])).metadata
    assert meta.encoder and meta.encoder.startswith("Lavf") and not meta.gps_present


def _header(path):
    from deepfake_detect.stages.video_probe import ffmpeg_header

    return ffmpeg_header(path)


# -- the verdict and its basis, through the CLI --------------------------------------------------------
def _analyze(media, name, tmp_path, *extra):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["analyze", str(media[name]), "--out", str(out), "--no-render", *extra])
    return result, json.loads((out / f"{media[name].name}.json").read_text()), out


def test_declared_generation_makes_the_headline_fake_with_its_basis(media, tmp_path):
    result, report, out = _analyze(media, "generated", tmp_path, "--trust-anchors", str(media["roots"]))
    assert result.exit_code == 1, result.output                      # fake
    assert report["verdict"] == "fake" and report["verdict_basis"] == "provenance"
    assert report["detector_verdict"] in ("real", "fake", "inconclusive", "no_face")
    assert report["provenance"]["c2pa"] == "valid" and report["provenance"]["declares_generated"]
    assert report["schema_version"] == "1.3" and "fake (c2pa)" in result.output
    jsonschema.validate(report, REPORT_SCHEMA)
    with open(out / "results.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert (row["verdict"], row["verdict_basis"], row["c2pa"]) == ("fake", "provenance", "valid")


def test_invalid_credentials_are_a_warning_and_leave_the_detector_to_decide(media, tmp_path):
    result, report, _ = _analyze(media, "tampered", tmp_path, "--trust-anchors", str(media["roots"]))
    assert report["verdict_basis"] == "detector" and report["verdict"] == report["detector_verdict"]
    assert any(w.startswith("content credentials invalid") for w in report["warnings"])
    assert "warning: " in result.output and "content credentials invalid" in result.output   # on the terminal too


def test_an_unsigned_input_reports_absent_credentials_and_its_metadata(media, tmp_path):
    _, report, _ = _analyze(media, "photo", tmp_path)
    assert report["provenance"]["c2pa"] == "absent" and report["verdict_basis"] == "detector"
    jsonschema.validate(report, REPORT_SCHEMA)
    assert "rules nothing out" in report["provenance"]["note"]


def test_trust_anchors_that_are_not_pem_are_refused_before_any_model_loads(media, tmp_path):
    bad = tmp_path / "roots.txt"
    bad.write_text("not a certificate\n")
    result = CliRunner().invoke(main, ["analyze", str(media["photo"]), "--trust-anchors", str(bad)])
    assert result.exit_code == 2 and "provenance.trust_anchors" in result.output and "PEM" in result.output
    assert len(result.output.strip().splitlines()) == 1
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_nothing_a_file_points_to_is_fetched(tmp_path):
    """A file may name a remote manifest (XMP dcterms:provenance): an uploaded file must not make the
    host request any address, internal ones included."""
    import http.server
    import threading

    from PIL import Image

    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/m.c2pa"
        xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
               f'<rdf:Description xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="{url}"/>'
               '</rdf:RDF></x:xmpmeta>')
        Image.new("RGB", (64, 64), "gray").save(tmp_path / "remote.jpg", xmp=xmp.encode())
        assert b"m.c2pa" in (tmp_path / "remote.jpg").read_bytes()
        found = read_provenance(tmp_path / "remote.jpg")
    finally:
        server.shutdown()
    assert requests == [] and not found.declares_generated


def test_a_format_without_credentials_is_not_called_forged(tmp_path):
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(5):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    found = read_provenance(tmp_path / "clip.avi")
    assert found.c2pa == "absent" and found.validation_codes == []
    (tmp_path / "noise.webm").write_bytes(bytes(range(256)) * 64)   # no format c2pa knows
    found = read_provenance(tmp_path / "noise.webm")
    assert found.c2pa == "absent" and "not checked" in found.note and found.validation_codes == []
