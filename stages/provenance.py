"""Provenance stage: what a file says about where it came from, beside what the detector sees.

Two sources, neither of which the detector's score depends on:
- **C2PA content credentials** (read and validated by `c2pa-python`, nothing fetched from the
  network): absent, valid (intact and signed by a trusted root), untrusted (intact, but its signer is
  not in the trust anchors), or invalid (the manifest no longer matches the file, or cannot be read);
  its claim generator, signer, actions with their software agent and digital source type, ingredients.
- **Metadata** of the container or the photo: encoder or writing application, creation time, camera
  make and model, whether GPS data is present (never the position).

An absent manifest rules nothing out: most cameras, editors and platforms write none, or strip it.
Reading never raises: a broken or hostile manifest becomes `invalid` with the reason.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

# IPTC digital source types that declare the content, or part of it, made by a generative model
GENERATED_SOURCE_TYPES = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")
ABSENT_NOTE = "no content credentials: that rules nothing out (most cameras and platforms write none, or strip them)"

C2paState = Literal["absent", "valid", "untrusted", "invalid"]


def pem_file(path: str) -> str:
    """`path` when it is a readable PEM file of certificates (the settings' check, before any model loads)."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return path


@dataclass(frozen=True)
class ProvenanceSettings:
    enabled: bool = True
    # PEM file of trusted signer roots; None: an intact manifest is "untrusted", never "valid"
    trust_anchors: Annotated[str, AfterValidator(pem_file)] | None = None


@dataclass
class C2paAction:
    action: str
    software_agent: str | None = None
    digital_source_type: str | None = None   # the IPTC term's last part, e.g. "trainedAlgorithmicMedia"


@dataclass
class C2paIngredient:
    title: str | None = None
    relationship: str | None = None
    format: str | None = None


@dataclass
class Metadata:
    encoder: str | None = None          # the container's encoder or the photo's writing software
    creation_time: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    gps_present: bool = False
    note: str | None = None             # e.g. that the metadata looks stripped


@dataclass
class Provenance:
    c2pa: C2paState = "absent"
    validation_codes: list[str] = field(default_factory=list)   # failures, for invalid and untrusted
    claim_generator: str | None = None
    signer_issuer: str | None = None
    signer_common_name: str | None = None
    signed_at: str | None = None
    actions: list[C2paAction] = field(default_factory=list)
    ingredients: list[C2paIngredient] = field(default_factory=list)
    declares_generated: bool = False     # an intact manifest declares generative-model content
    metadata: Metadata = field(default_factory=Metadata)
    note: str = ABSENT_NOTE

    @property
    def intact(self) -> bool:
        return self.c2pa in ("valid", "untrusted")


def read_provenance(path: Path, settings: ProvenanceSettings = ProvenanceSettings(),
                    container_header: str = "") -> Provenance:
    """The provenance of the file at `path` (`container_header`: ffmpeg's description of a video, whose
    metadata lines are read; empty for photos, whose EXIF and XMP are read)."""
    found = _c2pa(path, settings)
    found.metadata = _video_metadata(container_header) if container_header else _photo_metadata(path)
    return found


# Nothing is fetched: no remote manifest a file points to (an uploaded file could name any address,
# internal ones included), no OCSP responder. A file is judged by what it holds.
OFFLINE = {"verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False},
           "core": {"allowed_network_hosts": []}}


def _c2pa(path: Path, settings: ProvenanceSettings) -> Provenance:
    try:
        from c2pa import C2paError, Context, Reader, Settings
    except ImportError:  # an install without it still analyses; the report says what was not checked
        return Provenance(note="content credentials not checked: c2pa-python is not installed")
    try:
        anchors = Path(settings.trust_anchors).read_text() if settings.trust_anchors else None
        options: dict[str, Any] = {**OFFLINE, **({"trust": {"trust_anchors": anchors}} if anchors else {})}
        with open(path, "rb") as stream, Reader(stream, context=Context(Settings.from_dict(options))) as reader:
            data = json.loads(reader.json())
        return _from_manifest_store(data, trusted_roots=anchors is not None)
    except C2paError.ManifestNotFound:
        return Provenance()
    except (C2paError.NotSupported, C2paError.RemoteManifest) as exc:
        # a format the library cannot carry credentials in (WebM, AVI, ...), or a manifest only by reference
        return Provenance(note=f"content credentials not checked: {_first_line(exc)}")
    except C2paError.Other as exc:
        if "could not be parsed" in str(exc):   # the container itself, before any manifest was found
            return Provenance(note=f"content credentials not checked: {_first_line(exc)}")
        return _unreadable(exc)
    except C2paError as exc:   # a manifest was found but is broken or hostile
        return _unreadable(exc)
    except Exception as exc:  # noqa: BLE001 - never fail an analysis over credentials (e.g. a malformed store)
        return _unreadable(exc)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _unreadable(exc: BaseException) -> Provenance:
    return Provenance(c2pa="invalid", validation_codes=[f"manifest.unreadable: {_first_line(exc)}"],
                      note="content credentials present but unreadable: treat the file's claims as unverified")


def _from_manifest_store(data: dict[str, Any], trusted_roots: bool) -> Provenance:
    state = data.get("validation_state")
    codes = [str(s.get("code")) for s in data.get("validation_status") or [] if s.get("code")]
    manifest = (data.get("manifests") or {}).get(data.get("active_manifest") or "", {})
    c2pa: C2paState = "valid" if state == "Trusted" else "untrusted" if state == "Valid" else "invalid"
    signature = manifest.get("signature_info") or {}
    generators = manifest.get("claim_generator_info") or []
    generator = manifest.get("claim_generator") or ", ".join(
        f"{g.get('name')} {g.get('version') or ''}".strip() for g in generators if isinstance(g, dict) and g.get("name"))
    actions = [C2paAction(str(a.get("action")), _agent(a.get("softwareAgent")),
                          _source_type(a.get("digitalSourceType")))
               for assertion in manifest.get("assertions") or []
               if str(assertion.get("label", "")).startswith("c2pa.actions")
               for a in (assertion.get("data") or {}).get("actions") or []]
    ingredients = [C2paIngredient(i.get("title"), i.get("relationship"), i.get("format"))
                   for i in manifest.get("ingredients") or []]
    intact = c2pa in ("valid", "untrusted")
    generated = intact and any(a.digital_source_type in GENERATED_SOURCE_TYPES for a in actions)
    if c2pa == "valid":
        note = "content credentials intact, signed by a trusted root"
    elif c2pa == "untrusted":
        note = ("content credentials intact, but the signer is not in the trust anchors"
                + ("" if trusted_roots else " (none given: --trust-anchors PEM)"))
    else:
        note = "content credentials do not match the file: it was changed after signing, or they were forged"
    return Provenance(c2pa=c2pa, validation_codes=codes if c2pa != "valid" else [], claim_generator=generator or None,
                      signer_issuer=signature.get("issuer"), signer_common_name=signature.get("common_name"),
                      signed_at=signature.get("time"), actions=actions, ingredients=ingredients,
                      declares_generated=generated, note=note)


def _agent(agent: Any) -> str | None:
    if isinstance(agent, dict):
        return " ".join(str(agent[k]) for k in ("name", "version") if agent.get(k)) or None
    return str(agent) if agent else None


def _source_type(uri: Any) -> str | None:
    return str(uri).rstrip("/").rsplit("/", 1)[-1] if uri else None


_STRIPPED = "no encoder, camera or date metadata: stripped or never written (common after re-encoding or upload)"


def _video_metadata(header: str) -> Metadata:
    """The container's metadata lines in ffmpeg's description of the file (the first value of each key)."""
    values: dict[str, str] = {}
    for match in re.finditer(r"^\s+([\w.\-:]+)\s*:\s(.*)$", header, re.M):
        values.setdefault(match.group(1).lower(), match.group(2).strip())
    found = Metadata(encoder=values.get("encoder") or values.get("com.apple.quicktime.software"),
                     creation_time=values.get("creation_time") or values.get("com.apple.quicktime.creationdate"),
                     camera_make=values.get("com.apple.quicktime.make") or values.get("make"),
                     camera_model=values.get("com.apple.quicktime.model") or values.get("model"),
                     gps_present=any(k in values for k in ("location", "com.apple.quicktime.location.iso6709",
                                                           "location-eng")))
    if not (found.encoder or found.creation_time or found.camera_make or found.camera_model):
        found.note = _STRIPPED
    return found


def _photo_metadata(path: Path) -> Metadata:
    """EXIF (software, make, model, original date, GPS present) and XMP's CreatorTool of a photo."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
            original = exif.get_ifd(0x8769).get(0x9003)   # Exif IFD: DateTimeOriginal
            gps = bool(exif.get_ifd(0x8825))
    except Exception:  # noqa: BLE001 - metadata is optional: a photo the decoder read is analysed anyway
        return Metadata(note="metadata unreadable")
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else str(xmp)
    tool = re.search(r"CreatorTool(?:>|=\")([^<\"]+)", text)
    found = Metadata(encoder=_text(exif.get(0x0131)) or (tool.group(1).strip() if tool else None),
                     creation_time=_text(original) or _text(exif.get(0x0132)),
                     camera_make=_text(exif.get(0x010F)), camera_model=_text(exif.get(0x0110)), gps_present=gps)
    if not (found.encoder or found.creation_time or found.camera_make or found.camera_model):
        found.note = _STRIPPED
    return found


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip("\x00 ").strip()
    return text or None
