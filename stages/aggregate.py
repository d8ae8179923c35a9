"""Aggregate stage: face scores -> a score per track (person) -> the video's verdict and keyframes.

A video is as fake as its most fake person: one swapped face among several real ones is still a
manipulated video, so the video score is the maximum over tracks that were seen long enough to
count (a one-frame false detection must not decide the verdict).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from annotated_types import Ge, Interval

Verdict = Literal["fake", "real", "inconclusive", "no_face"]


@dataclass
class FaceScore:
    """One face in one analysed frame."""

    frame_index: int
    time_s: float
    track_id: int
    box: list[float]              # x1, y1, x2, y2 in frame pixels
    confidence: float             # detector confidence
    score: float                  # ensemble fake probability
    member_scores: dict[str, float]
    sharpness: Annotated[float, Ge(0)] | None = None  # of the classifier's crop (stages.face_quality); None before 1.2


@dataclass
class TrackSummary:
    id: int
    score: float
    verdict: Verdict
    counted: bool                 # False when too short to count towards the video verdict
    faces: list[FaceScore]


@dataclass
class Keyframe:
    frame_index: int
    time_s: float
    score: float
    track_id: int
    image: str | None = None      # filled in by the explain/render outputs


@dataclass
class VideoVerdict:
    verdict: Verdict
    score: float | None
    fake_percentage: float
    frames_analysed: int
    frames_with_faces: int
    tracks: list[TrackSummary]
    keyframes: list[Keyframe] = field(default_factory=list)
    downgraded: str = ""          # why the verdict is "inconclusive" whatever the scores ("" when it is not)


# Below this share of sampled frames decoded cleanly, a verdict is "inconclusive" whatever the scores.
MIN_DECODED_SHARE = 0.5


@dataclass(frozen=True)
class AggregateSettings:
    threshold: Annotated[float, Interval(ge=0, le=1)] | None = None  # None: the threshold shipped with the detector
    inconclusive_band: Annotated[float, Interval(ge=0, lt=0.5)] = 0.1  # |score - threshold| below this is inconclusive
    track_strategy: Literal["confident", "mean", "median"] = "confident"  # keys of TRACK_STRATEGIES
    confident_high: Annotated[float, Interval(ge=0, le=1)] = 0.8
    confident_low: Annotated[float, Interval(ge=0, le=1)] = 0.2
    min_track_share: Annotated[float, Interval(ge=0, le=1)] = 0.1  # of analysed frames a track needs to count
    keyframes: Annotated[int, Ge(0)] = 3


def mean_strategy(scores: np.ndarray, settings: AggregateSettings) -> float:
    return float(np.mean(scores))


def median_strategy(scores: np.ndarray, settings: AggregateSettings) -> float:
    return float(np.median(scores))


def confident_strategy(scores: np.ndarray, settings: AggregateSettings) -> float:
    """DFDC winner's rule (S. Seferbekov): trust a confident majority, else the mean.

    If more than 40 % of the frames are confidently fake, average only those (a manipulation that
    shows in part of the clip is not diluted by frames where it is invisible); if more than 90 %
    are confidently real, average those (a few noisy frames cannot raise the score); otherwise
    take the plain mean.
    """
    confident_fake = scores[scores > settings.confident_high]
    if len(confident_fake) > len(scores) / 2.5:
        return float(confident_fake.mean())
    confident_real = scores[scores < settings.confident_low]
    if len(confident_real) > 0.9 * len(scores):
        return float(confident_real.mean())
    return float(scores.mean())


TRACK_STRATEGIES: dict[str, Callable[[np.ndarray, AggregateSettings], float]] = {
    "confident": confident_strategy,
    "mean": mean_strategy,
    "median": median_strategy,
}


def verdict_for(score: float, settings: AggregateSettings) -> Verdict:
    assert settings.threshold is not None, "resolve the threshold before aggregating"
    if abs(score - settings.threshold) < settings.inconclusive_band:
        return "inconclusive"
    return "fake" if score >= settings.threshold else "real"


def pick_keyframes(faces: list[FaceScore], count: int, frames_analysed: int) -> list[Keyframe]:
    """The most suspicious frames, spread in time: greedy by score with a minimum index gap."""
    best: dict[int, FaceScore] = {}
    for face in faces:
        if face.frame_index not in best or face.score > best[face.frame_index].score:
            best[face.frame_index] = face
    order = sorted(best.values(), key=lambda f: -f.score)
    positions = {idx: pos for pos, idx in enumerate(sorted(best))}
    min_gap = max(1, frames_analysed // (2 * max(count, 1)))
    chosen: list[FaceScore] = []
    for face in order:
        if len(chosen) == count:
            break
        if all(abs(positions[face.frame_index] - positions[c.frame_index]) >= min_gap for c in chosen):
            chosen.append(face)
    chosen.sort(key=lambda f: f.frame_index)
    return [Keyframe(f.frame_index, f.time_s, f.score, f.track_id) for f in chosen]


def most_fake(track_scores: Iterable[float]) -> float:
    """A video's score from its counted tracks' scores: a video is as fake as its most fake person."""
    return max(track_scores)


def aggregate(faces: list[FaceScore], frames_analysed: int, settings: AggregateSettings = AggregateSettings(),
              frames_sampled: int | None = None) -> VideoVerdict:
    """Turn every scored face of a video into its verdict. `frames_sampled` (the frames asked for, of
    which `frames_analysed` decoded cleanly): with fewer than half decoded, the verdict is "inconclusive"
    whatever the scores."""
    verdict = _score_tracks(faces, frames_analysed, settings)
    if frames_sampled is not None and frames_analysed < MIN_DECODED_SHARE * frames_sampled:
        verdict.verdict = "inconclusive"
        verdict.downgraded = (f"fewer than half of the sampled frames could be decoded "
                              f"({frames_analysed} of {frames_sampled})")
    return verdict


def _score_tracks(faces: list[FaceScore], frames_analysed: int, settings: AggregateSettings) -> VideoVerdict:
    strategy = TRACK_STRATEGIES[settings.track_strategy]
    by_track: dict[int, list[FaceScore]] = {}
    for face in faces:
        by_track.setdefault(face.track_id, []).append(face)
    min_len = max(1, int(round(settings.min_track_share * frames_analysed)))
    tracks = []
    for track_id, track_faces in sorted(by_track.items()):
        score = strategy(np.array([f.score for f in track_faces]), settings)
        tracks.append(TrackSummary(track_id, score, verdict_for(score, settings),
                                   counted=len(track_faces) >= min_len, faces=track_faces))
    # if every track is short (e.g. a face visible only briefly), use them all rather than none
    counted = [t for t in tracks if t.counted] or tracks
    for t in tracks:
        t.counted = t in counted
    frames_with_faces = len({f.frame_index for f in faces})
    if not counted:
        return VideoVerdict("no_face", None, 0.0, frames_analysed, 0, [])
    threshold = settings.threshold
    assert threshold is not None, "resolve the threshold before aggregating"  # verdict_for checked it already
    score = most_fake(t.score for t in counted)
    counted_ids = {t.id for t in counted}
    fake_frames = {f.frame_index for f in faces if f.track_id in counted_ids and f.score >= threshold}
    counted_faces = [f for f in faces if f.track_id in counted_ids]
    return VideoVerdict(
        verdict=verdict_for(score, settings),
        score=score,
        fake_percentage=100.0 * len(fake_frames) / max(frames_analysed, 1),
        frames_analysed=frames_analysed,
        frames_with_faces=frames_with_faces,
        tracks=tracks,
        keyframes=pick_keyframes(counted_faces, settings.keyframes, frames_analysed),
    )


def provenance_decides(verdict: str, declares_generated: bool) -> bool:
    """Whether the headline verdict is "fake" on the file's own word: an intact content credential that
    declares the content made by a generative model decides it, whatever the detector saw (its own
    verdict stays in the report); an analysis that failed stays an error."""
    return declares_generated and verdict != "error"
