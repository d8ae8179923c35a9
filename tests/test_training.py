"""A few-epoch training run on CPU on a tiny synthetic folder dataset, end to end.

train() -> detector.safetensors/json through the real save/load path -> `analyze` and `evaluate`
use it. The faces are skimage's astronaut (pipeline.core.samples) at different places, sizes and
tints; folder data makes every file its own identity, so the identity split has enough to split.
The run is tiny (64 px input, 12 pseudo-fake pairs, 4 epochs): it checks mechanics and that the
training loss falls, never accuracy. Metrics against hand-computed values are in test_metrics.py.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deepfake_detect.pipeline.cli import main
from deepfake_detect.pipeline.core.samples import make_sample_video, render_sample_frame
from deepfake_detect.stages.classify import CropClassifier
from deepfake_detect.stages.detect import DetectSettings
from deepfake_detect.stages.ensemble import MEMBER_REGISTRY, load_detector
from deepfake_detect.training.cached import build_sbi_set
from deepfake_detect.training.data import FaceSet, extract_all, read_dataset, split_by_identity
from deepfake_detect.training.evaluate import fake_original_pairs, shown_path
from deepfake_detect.training.metrics import binary_metrics
from deepfake_detect.training.recipe import MemberRecipe, PhaseConfig, TrainConfig, load_train_config
from deepfake_detect.training.refit import refit_detector
from deepfake_detect.training.sbi_batches import FacePool, fixed_sbi_set
from deepfake_detect.training.self_blend import self_blend
from deepfake_detect.training.train import member_logits, prepare_faces, train

MEMBER = "mobilenetv2_100"
FRAMES = 4  # frames sampled per video, in training and evaluation alike (same face-cache key)


def _face_box(width: int, height: int, t: float) -> np.ndarray:
    """Where render_sample_frame(width, height, t, 1.0, 1) puts the astronaut's face (x1, y1, x2, y2):
    the face is at x 66-153, y 52-162 of the 220x240 head sprite (see pipeline.core.samples._HEAD)."""
    head_h = 0.55 * height * (1 + 0.2 * np.sin(2 * np.pi * t))
    scale = head_h / 240
    cx, cy = width * (0.3 + 0.4 * t), height * (0.5 + 0.05 * np.sin(4 * np.pi * t))
    x0, y0 = int(cx - int(220 * scale) / 2), int(cy - int(240 * scale) / 2)
    return np.array([x0 + 66 * scale, y0 + 52 * scale, x0 + 153 * scale, y0 + 162 * scale], np.float32)


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _frame(size: tuple[int, int], t: float, tint: tuple[float, float, float]) -> np.ndarray:
    frame = render_sample_frame(size[0], size[1], t, 1.0, 1).astype(np.float32)
    return np.clip(frame * np.array(tint, np.float32), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """real/: 4 photos (face at different positions, sizes, tints) and 1 short clip; fake/: 2 photos
    whose face region is replaced by a colour-shifted, moved copy of itself (a self-blend)."""
    root = tmp_path_factory.mktemp("dataset")
    photos = [((320, 240), 0.10, (1.0, 1.0, 1.0)), ((288, 288), 0.35, (1.15, 0.95, 0.85)),
              ((360, 240), 0.60, (0.8, 0.9, 1.1)), ((256, 320), 0.85, (0.9, 1.1, 0.9))]
    for k, (size, t, tint) in enumerate(photos):
        _write(root / "real" / f"person{k}.png", _frame(size, t, tint))
    make_sample_video(root / "real" / "clip.mp4", seconds=0.6, fps=10, size=(320, 180), faces=1)
    rng = np.random.default_rng(7)
    for k, (size, t) in enumerate((((320, 240), 0.25), ((300, 260), 0.7))):
        frame = _frame(size, t, (1.0, 1.0, 1.0))
        fake, mask = self_blend(frame, _face_box(*size, t), None, rng)
        assert mask.max() > 0.2 and np.abs(fake.astype(int) - frame).max() > 10  # the face really changed
        _write(root / "fake" / f"swap{k}.png", fake)
    return root


def tiny_config(data: Path, out: Path, lr: float = 3e-3) -> TrainConfig:
    return TrainConfig(
        data=str(data), out=str(out), mode="cached", train_pairs=12, val_pairs=6, batch_pairs=4,
        frames_per_video=FRAMES, holdout_share=0.4, input_size=64, patience=10, threads=1, seed=0,
        version="test-tiny",
        members={MEMBER: MemberRecipe(init="scratch", frozen_blocks=2, head=PhaseConfig(lr, epochs=0),
                                      finetune=PhaseConfig(lr, epochs=4, schedule="cosine"))})


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("train")
    cfg = tiny_config(dataset, root / "run")
    threads = torch.get_num_threads()
    log: list[str] = []
    try:
        out = train(cfg, cache_dir=root / "cache", log=log.append)
    finally:
        torch.set_num_threads(threads)  # train() sets a process-wide thread count
    return SimpleNamespace(cfg=cfg, out=out, cache=root / "cache", log=log,
                           report=json.loads((out / "train_report.json").read_text()))


def run_cli(*args) -> click.testing.Result:  # noqa: F821
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_dataset_has_identities_on_both_sides_of_the_split(dataset):
    items = read_dataset(dataset)
    real = [i for i in items if i.label == 0]
    assert len(real) == 5 and sum(i.label for i in items) == 2
    assert len({i.identity for i in real}) == 5  # each file is its own identity
    train_ids, held_ids = split_by_identity(real, 0.4, 0)
    assert len(train_ids) >= 2 and len(held_ids) >= 2 and not train_ids & held_ids


def test_training_writes_a_detector_and_its_report(trained):
    out = trained.out
    for name in ("detector.safetensors", "detector.json", "split.json", "train_report.json"):
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())
    assert split["train"] and split["holdout"] and not set(split["train"]) & set(split["holdout"])
    assert set(split["train"]) | set(split["holdout"]) == {f"real/person{k}" for k in range(4)} | {"real/clip"}
    faces = trained.report["faces"]
    assert faces["train_identities"] == len(split["train"]) and faces["holdout_identities"] == len(split["holdout"])
    assert faces["train"] >= 3 and faces["holdout"] >= 2  # faces found in (nearly) every file
    assert any(line.startswith("saved detector to") for line in trained.log)


def test_training_loss_goes_down(trained):
    member = trained.report["members"][MEMBER]
    assert member["chosen_init"] == "scratch"
    result = member["candidates"]["scratch"]
    assert "head" not in result  # a scratch member has no frozen-backbone head phase
    losses = [h["loss"] for h in result["finetune"]["history"] if "loss" in h]
    assert len(losses) == 4  # patience 10: no early stop in 4 epochs
    # the classifier starts at zero (p = 0.5 for every face), so the first epoch starts at ln 2
    assert losses[0] <= math.log(2) + 1e-4
    assert losses[-1] < losses[0] - 0.02, losses
    assert result["finetune"]["best_epoch"] >= 1  # the kept weights are trained ones, not the start


def test_checkpoint_round_trips_through_save_and_load(trained):
    out, cfg = trained.out, trained.cfg
    model = load_detector(out)
    saved = json.loads((out / "detector.json").read_text())
    c = model.config
    assert c.trained is True and c.members == [MEMBER] and c.input_size == 64 and c.version == "test-tiny"
    assert 0 < c.threshold < 1 and c.combiner in ("mean", "stacking")
    assert c.sha256 == saved["sha256"] and len(c.sha256) == 64
    assert c.training["combiner"]["chosen"] == c.combiner == trained.report["combiner"]["chosen"]
    # how far sharpness alone tells the training set's labels, recorded beside the weights
    set_sharpness = c.training["training_set_sharpness"][str(cfg.seed)]
    assert set_sharpness["real_median"] > 0 and set_sharpness["fake_median"] > 0 and 0 <= set_sharpness["roc_auc"] <= 1
    # the trained classifier is not the zero one every member starts from
    assert model.members[MEMBER].get_classifier().weight.abs().sum() > 0
    # The loaded weights reproduce the held-out metrics computed in memory at the end of training:
    # rebuild the same validation set (deterministic: seed + 1) from the cached faces.
    items, faces = prepare_faces(cfg, trained.cache, lambda _: None)
    held = set(json.loads((out / "split.json").read_text())["holdout"])
    pool = FacePool([(i.identity, faces[i.path]) for i in items if i.identity in held and i.path in faces])
    crops, labels = fixed_sbi_set(pool, cfg.val_pairs, cfg.seed + 1, cfg.crop_margin, cfg.input_size)
    logits = np.stack([member_logits(m, crops) for m in model.members.values()], axis=1)
    with torch.no_grad():
        probs = model.combine(torch.from_numpy(logits)).numpy()
    expected = trained.report["combiner"]["holdout_metrics"]
    got = binary_metrics(labels, probs, c.threshold)
    assert got["confusion"] == expected["confusion"] and got["count"] == expected["count"] == 2 * cfg.val_pairs
    assert got["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-6)


def test_second_face_extraction_comes_from_the_cache(trained):
    items = [i for i in read_dataset(trained.cfg.data) if i.label == 0]
    cached_files = sorted(trained.cache.glob("*.npz"))
    assert len(cached_files) >= len(items)

    def no_detection(frames):
        raise AssertionError("face detection ran although every item is cached")

    stub = SimpleNamespace(settings=DetectSettings(min_confidence=0.9), detect=no_detection)
    faces = extract_all(items, stub, trained.cache, FRAMES, progress=False)
    assert set(faces) == {i.path for i in items}
    found = trained.report["faces"]
    assert sum(len(fs) for fs in faces.values()) == found["train"] + found["holdout"]
    assert all(fs.contexts.dtype == np.uint8 and fs.contexts.shape[1:] == (320, 320, 3) for fs in faces.values())
    assert sorted(trained.cache.glob("*.npz")) == cached_files  # nothing new written


def test_a_copied_dataset_finds_its_faces_in_the_cache(trained, tmp_path):
    # a dataset copied elsewhere (new paths, new times) has the same faces: keyed by content
    copy = shutil.copytree(Path(trained.cfg.data), tmp_path / "copied", copy_function=shutil.copy)
    items = [i for i in read_dataset(copy) if i.label == 0]
    cached_files = sorted(trained.cache.glob("*.npz"))

    def no_detection(frames):
        raise AssertionError("face detection ran although every item's content is cached")

    stub = SimpleNamespace(settings=DetectSettings(min_confidence=0.9), detect=no_detection)
    faces = extract_all(items, stub, trained.cache, FRAMES, progress=False)
    assert set(faces) == {i.path for i in items} and all(len(fs) for fs in faces.values())
    assert sorted(trained.cache.glob("*.npz")) == cached_files
    changed = items[0].path if items[0].path.is_file() else sorted(items[0].path.iterdir())[0]
    with open(changed, "ab") as fh:  # one byte more: the same picture to a decoder, new content to the cache
        fh.write(b"\0")
    with pytest.raises(AssertionError, match="face detection ran"):
        extract_all(items[:1], stub, trained.cache, FRAMES, progress=False)


def test_a_detector_that_keeps_other_faces_does_not_reuse_the_cache(trained):
    # the key stands for what decides which faces are cached: a stricter detector finds its own
    items = [i for i in read_dataset(trained.cfg.data) if i.label == 0][:1]

    def detection(frames):
        raise AssertionError("face detection ran")

    stub = SimpleNamespace(settings=DetectSettings(min_confidence=0.99), detect=detection)
    with pytest.raises(AssertionError, match="face detection ran"):
        extract_all(items, stub, trained.cache, FRAMES, progress=False)


def test_the_face_cache_key_follows_the_extraction_code_and_nothing_else(monkeypatch):
    import inspect

    from deepfake_detect.stages import crop
    from deepfake_detect.training import data

    def digest() -> str:
        data.extraction_digest.cache_clear()
        return data.extraction_digest()

    before = digest()
    try:
        # stages/crop.py changed elsewhere (another crop policy beside the extraction's functions):
        # every cached face is kept
        source = inspect.getsource
        monkeypatch.setattr(inspect, "getsource", lambda obj: source(obj) + ("\n# a new policy" if obj is crop else ""))
        assert digest() == before
        # a changed cut of the context crop makes new entries
        monkeypatch.setattr(data, "crop_face", lambda frame, box, margin, size: frame)
        assert digest() != before
    finally:
        monkeypatch.undo()
        assert digest() == before


def test_analyze_uses_the_trained_detector(trained, dataset, tmp_path):
    clip = dataset / "real" / "clip.mp4"
    # one input with --out: the annotated video and Grad-CAM keyframes are rendered too
    result = run_cli("analyze", clip, "--weights", trained.out, "--device", "cpu", "--frames", 3, "--out", tmp_path)
    assert result.exit_code in (0, 1, 3), result.output
    report = json.loads((tmp_path / "clip.mp4.json").read_text())
    assert result.exit_code == {"real": 0, "fake": 1, "inconclusive": 3}[report["verdict"]]
    assert report["model"]["sha256"] == json.loads((trained.out / "detector.json").read_text())["sha256"]
    assert report["model"]["members"] == [MEMBER] and report["model"]["version"] == "test-tiny"
    assert report["threshold"] == load_detector(trained.out).config.threshold
    # crops are cut at the detect stage's 224 px and resized to the model's 64 px input
    faces = [f for t in report["tracks"] for f in t["faces"]]
    assert report["frames_with_faces"] == 3 and faces
    assert all(set(f["member_scores"]) == {MEMBER} and 0 <= f["member_scores"][MEMBER] <= 1 for f in faces)
    # Grad-CAM maps come at 64 px and are laid over the 224 px crops of the keyframes
    assert report["keyframes"] and all(Path(k["image"]).is_file() for k in report["keyframes"])
    assert cv2.imread(report["keyframes"][0]["image"]) is not None


def test_evaluate_writes_metrics_and_plots(trained, dataset, tmp_path):
    out = tmp_path / "eval"
    result = run_cli("evaluate", dataset, "--weights", trained.out, "--out", out, "--frames", FRAMES, "--device", "cpu")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["items"] == 7 and metrics["items_without_score"] == 0
    assert metrics["threshold"] == load_detector(trained.out).config.threshold
    for name in (MEMBER, "ensemble"):
        frame = metrics["frame"][name]
        # the largest face of every analysed frame: 4 real photos + FRAMES video frames, 2 fake photos
        assert frame["count"] == 4 + FRAMES + 2 and frame["positives"] == 2
        assert frame["roc_auc"] is not None  # both classes have faces
        low, high = frame["roc_auc_ci95"]  # bootstrap over the 7 items, not their frames
        assert 0 <= low <= high <= 1
        assert sum(frame["confusion"].values()) == frame["count"]
        assert metrics["item"][name]["count"] == 7 and metrics["item"][name]["positives"] == 2
    # folder data: one family "fake" of 2 photos against the 4 real photos
    family = metrics["families"]["fake (image)"]
    assert (family["fakes"], family["reals"]) == (2, 4) and family["roc_auc_ci95"] is not None
    reals = [r for r in metrics["per_item"] if r["label"] == 0]
    assert metrics["reals_flagged_fake"] == pytest.approx(np.mean([r["score"] >= metrics["threshold"] for r in reals]))
    # the verdicts as analyze reported them: "fake" only beyond the inconclusive band, so never more than "flagged"
    for label, shares in metrics["verdicts"].items():
        rows = [r for r in metrics["per_item"] if r["label"] == int(label == "fake")]
        assert shares == pytest.approx({v: sum(r["verdict"] == v for r in rows) / len(rows) for v in shares})
        assert sum(shares.values()) == pytest.approx(1.0)
    assert metrics["verdicts"]["real"].get("fake", 0.0) <= metrics["reals_flagged_fake"]
    assert "verdicts of real items:" in result.stdout
    for plot in ("frame_ensemble_roc.png", "item_ensemble_confusion.png", "item_ensemble_hist.png"):
        image = cv2.imread(str(out / plot))
        assert image is not None and image.shape[0] > 100, plot
    assert "| level | model | AUC [95 % CI] |" in result.stdout
    assert f"| frame | {MEMBER} |" in result.stdout and "| item | ensemble |" in result.stdout
    # quality baselines: each item's median face sharpness and size, scored like the detector on the same items
    for row in metrics["per_item"]:
        assert all(f["sharpness"] > 0 and f["face_px"] > 0 for f in row["faces"])
        assert row["sharpness"] == pytest.approx(np.median([f["sharpness"] for f in row["faces"]]))
    baselines = metrics["quality_baselines"]
    assert baselines["items"]["auc"]["score"]["roc_auc"] == pytest.approx(metrics["item"]["ensemble"]["roc_auc"])
    assert baselines["photos"]["auc"]["sharpness"]["count"] == 6 and baselines["videos"]["auc"]["sharpness"] is None
    spearman = baselines["items"]["score_spearman"]
    assert set(spearman) == {"ensemble", MEMBER}
    assert all(-1 <= rho <= 1 for by_measure in spearman.values() for rho in by_measure.values())
    assert set(baselines) == {"items", "videos", "photos", "fake (image)"}
    assert "quality baselines" in result.stdout and "| items |" in result.stdout


def test_quality_baselines_show_a_set_that_image_quality_separates():
    """Sharp fakes against blurred reals: sharpness alone separates them (AUC 1), face size, equal
    for all, does not (0.5), and the detector's AUC is reported on the same rows."""
    from scipy.stats import spearmanr

    from deepfake_detect.training.evaluate import quality_baselines

    rows = [{"label": label, "kind": "video", "group": "gen" if label else "none", "score": score,
             "m_confident": 1 - score, "sharpness": sharp, "face_px": 100.0}
            for label, score, sharp in [(1, 0.9, 200.0), (1, 0.4, 150.0), (1, 0.6, 120.0),
                                        (0, 0.5, 30.0), (0, 0.3, 40.0), (0, 0.7, 20.0)]]
    rows.append({"label": 0, "kind": "video", "group": "none", "score": 0.1})  # a report without the measures
    baselines = quality_baselines(rows, ["m"])
    assert set(baselines) == {"items", "videos", "gen (video)"}  # no photos
    items = baselines["items"]["auc"]
    assert items["sharpness"]["roc_auc"] == 1.0 and items["face_px"]["roc_auc"] == 0.5
    assert items["score"]["roc_auc"] == pytest.approx(6 / 9) and items["score"]["count"] == 6
    assert baselines["gen (video)"] == baselines["items"]
    # the score rises with sharpness here; face size is constant, so it has no correlation to give
    rho = baselines["items"]["score_spearman"]["ensemble"]
    assert rho["sharpness"] == pytest.approx(spearmanr([0.9, 0.4, 0.6, 0.5, 0.3, 0.7], [200, 150, 120, 30, 40, 20]).statistic)
    assert rho["sharpness"] > 0 and rho["face_px"] is None
    assert baselines["items"]["score_spearman"]["m"]["sharpness"] == pytest.approx(-rho["sharpness"])  # a member, in reverse


def test_evaluate_scores_exactly_as_analyze_does(trained, dataset, tmp_path):
    """The same file gives the same face scores (every frame, every member) and the same item score
    through `evaluate` as through `analyze` with the same options."""
    clip = dataset / "real" / "clip.mp4"
    assert run_cli("analyze", clip, "--weights", trained.out, "--device", "cpu", "--frames", FRAMES,
                   "--no-render", "--out", tmp_path / "a").exit_code in (0, 1, 3)
    report = json.loads((tmp_path / "a" / "clip.mp4.json").read_text())
    assert run_cli("evaluate", dataset, "--weights", trained.out, "--device", "cpu", "--frames", FRAMES,
                   "--out", tmp_path / "e").exit_code == 0
    row = next(r for r in json.loads((tmp_path / "e" / "metrics.json").read_text())["per_item"]
               if r["path"] == "real/clip.mp4")  # relative to the data's folder
    analyzed = sorted((f["frame_index"], f["score"], f["member_scores"][MEMBER], f["sharpness"])
                      for t in report["tracks"] for f in t["faces"])  # one face per frame in this clip
    evaluated = sorted((f["frame_index"], round(f["score"], 5), round(f["member_scores"][MEMBER], 5),
                        round(f["sharpness"], 5)) for f in row["faces"])
    assert len(analyzed) == FRAMES and evaluated == analyzed  # identical to the report's 5 decimals
    assert round(row["score"], 5) == report["score"] and row["verdict"] == report["verdict"]


@pytest.fixture(scope="module")
def cli_run(trained, dataset, tmp_path_factory) -> SimpleNamespace:
    """`deepfake-detect train` with the fixture's recipe written as YAML, on the same face cache."""
    cfg, root = trained.cfg, tmp_path_factory.mktemp("cli_train")
    recipe = root / "tiny.yaml"
    recipe.write_text(
        f"data: /nonexistent\nmode: cached\ntrain_pairs: {cfg.train_pairs}\nval_pairs: {cfg.val_pairs}\n"
        f"batch_pairs: {cfg.batch_pairs}\nframes_per_video: {FRAMES}\nholdout_share: {cfg.holdout_share}\n"
        f"input_size: {cfg.input_size}\npatience: {cfg.patience}\nthreads: 1\nseed: 0\nversion: test-tiny\n"
        "members:\n"
        f"  {MEMBER}:\n"
        "    init: scratch\n"
        "    frozen_blocks: 2\n"
        "    head: {lr: 3.0e-3, epochs: 0}\n"
        "    finetune: {lr: 3.0e-3, epochs: 4, schedule: cosine}\n")
    threads = torch.get_num_threads()
    try:
        result = run_cli("train", "--config", recipe, "--data", dataset, "--out", root / "run",
                         "--cache", trained.cache)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(recipe=recipe, result=result, out=root / "run")


def test_train_command_runs_a_yaml_recipe(cli_run, trained, dataset):
    cfg = trained.cfg
    assert load_train_config(cli_run.recipe, {"data": str(dataset), "out": cfg.out}) == cfg  # the same recipe
    assert cli_run.result.exit_code == 0, cli_run.result.output
    assert f"saved detector to {cli_run.out}" in cli_run.result.stdout
    model = load_detector(cli_run.out)
    assert model.config.trained and model.config.members == [MEMBER] and model.config.input_size == 64
    assert (cli_run.out / "split.json").read_text() == (trained.out / "split.json").read_text()  # same seed


def test_training_gives_the_same_weights_with_a_warm_cache(cli_run, trained):
    # the fixture's run built the face crops and the pseudo-fake set; the CLI run read both from the cache
    assert cli_run.result.exit_code == 0
    assert load_detector(cli_run.out).config.sha256 == load_detector(trained.out).config.sha256
    faces = load_detector(cli_run.out).config.training["faces"]  # the faces it saw, recorded beside the weights
    assert faces["digest"] == trained.report["faces"]["digest"] and len(faces["digest"]) == 40


def test_load_train_config_parses_members_and_phases(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "data: some/folder\n"
        "out: runs/a\n"
        "input_size: 96\n"
        "members:\n"
        "  mobilenetv2_100:\n"
        "    init: scratch\n"
        "    frozen_blocks: 2\n"
        "    finetune: {lr: 1.0e-3, epochs: 3, schedule: step}\n"
        "  tf_efficientnetv2_b0:\n"
        "    init: [scratch, distill]\n"
        "    head: {lr: 3.0e-3, epochs: 2}\n")
    cfg = load_train_config(path, {"out": "runs/b", "data": None})
    assert cfg.out == "runs/b" and cfg.data == "some/folder" and cfg.input_size == 96  # None overrides nothing
    assert list(cfg.members) == ["mobilenetv2_100", "tf_efficientnetv2_b0"]
    mob, eff = cfg.members["mobilenetv2_100"], cfg.members["tf_efficientnetv2_b0"]
    assert mob.init == "scratch" and mob.frozen_blocks == 2
    assert mob.finetune == PhaseConfig(lr=1e-3, epochs=3, schedule="step")
    assert mob.head == MemberRecipe().head  # not given: the default phase
    assert eff.init == ["scratch", "distill"] and eff.head == PhaseConfig(lr=3e-3, epochs=2)
    assert eff.frozen_blocks == MemberRecipe().frozen_blocks


def test_every_recipe_in_configs_loads_and_candidates_have_the_two_members_of_the_design():
    # a user runs these files as they are: a key renamed in TrainConfig must not leave one unloadable
    configs = Path(__file__).resolve().parents[1] / "configs"
    candidates, measurements = sorted(configs.glob("train*.yaml")), sorted(configs.glob("measure-*.yaml"))
    assert len(candidates) >= 2
    for recipe in candidates + measurements:
        cfg = load_train_config(recipe)
        assert cfg.members and set(cfg.members) <= set(MEMBER_REGISTRY), recipe.name  # analyze can build each
        if recipe in candidates:   # a measurement of one lever may train fewer
            assert list(cfg.members)[:2] == ["mobilenetv2_100", "tf_efficientnetv2_b0"], recipe.name


def test_a_recipe_with_a_base_changes_only_what_it_says(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "data: base/data\nout: runs/base\ninput_size: 96\nseed: 3\n"
        "members:\n"
        "  mobilenetv2_100: {init: scratch, frozen_blocks: 2}\n"
        "  tf_efficientnetv2_b0: {init: distill}\n")
    (tmp_path / "variant.yaml").write_text(
        "base: base.yaml\nout: runs/variant\n"
        "members:\n"
        "  tf_efficientnetv2_b0: {init: scratch}\n"
        "  tf_efficientnet_lite2: {init: scratch, frozen_blocks: 4}\n")
    base, variant = load_train_config(tmp_path / "base.yaml"), load_train_config(tmp_path / "variant.yaml")
    assert variant.out == "runs/variant" and variant.data == "base/data" and variant.input_size == 96
    assert list(variant.members) == ["mobilenetv2_100", "tf_efficientnetv2_b0", "tf_efficientnet_lite2"]
    assert variant.members["mobilenetv2_100"] == base.members["mobilenetv2_100"]   # kept from the base
    assert variant.members["tf_efficientnetv2_b0"].init == "scratch"                # replaced by name
    assert variant.members["tf_efficientnet_lite2"].frozen_blocks == 4             # added
    (tmp_path / "one.yaml").write_text("base: base.yaml\nmembers:\n  tf_efficientnetv2_b0: null\n")
    assert list(load_train_config(tmp_path / "one.yaml").members) == ["mobilenetv2_100"]   # left out
    (tmp_path / "base.yaml").write_text("base: variant.yaml\ndata: x\n")
    with pytest.raises(ValueError, match="its own base"):
        load_train_config(tmp_path / "variant.yaml")


def test_load_train_config_rejects_unknown_keys_and_bad_values(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: x\nepochs: 3\n")
    with pytest.raises(ValueError, match="unknown setting 'epochs'"):
        load_train_config(path)
    path.write_text("data: x\n")
    assert load_train_config(path).data == "x"
    with pytest.raises(ValueError, match="unknown setting 'bogus'"):
        load_train_config(path, {"bogus": 1})  # overrides are checked too
    # inside a member and inside a phase, with the key's full name
    path.write_text("data: x\nmembers:\n  mobilenetv2_100: {init: scratch, blocks: 2}\n")
    with pytest.raises(ValueError, match="unknown setting 'members.mobilenetv2_100.blocks'"):
        load_train_config(path)
    path.write_text("data: x\nmembers:\n  mobilenetv2_100: {finetune: {lr: 0.001, epoch: 3}}\n")
    with pytest.raises(ValueError, match="unknown setting 'members.mobilenetv2_100.finetune.epoch'"):
        load_train_config(path)
    # values are checked for type, range and choices, with the key named
    for text, key in (("holdout_share: 1.5", "holdout_share"), ("mode: gpu", "mode"), ("train_pairs: many", "train_pairs"),
                      ("zoom_min_area: 0", "zoom_min_area"),
                      ("members:\n  m: {finetune: {lr: 0.1, schedule: linear}}", "members.m.finetune.schedule")):
        path.write_text(f"data: x\n{text}\n")
        with pytest.raises(ValueError, match=f"training setting {key}:"):
            load_train_config(path)
    # a detail ceiling must leave less than the input: checked with the recipe, before any training
    path.write_text("data: x\ninput_size: 224\ndetail_size: 224\n")
    with pytest.raises(ValueError, match=r"detail_size \(224\) must be below input_size \(224\)"):
        load_train_config(path)
    path.write_text("data: x\ndetail_size: 4\n")
    with pytest.raises(ValueError, match="training setting detail_size:"):
        load_train_config(path)
    for text in ("train_detail: true", "detail_size: 112\ntrain_detail: true\nmode: full"):
        path.write_text(f"data: x\n{text}\n")
        with pytest.raises(ValueError, match="train_detail needs a detail_size and mode: cached"):
            load_train_config(path)


def test_train_command_rejects_a_bad_recipe_in_one_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: x\nmembers:\n  mobilenetv2_100: {init: scratch, blocks: 2}\n")
    result = run_cli("train", "--config", path, "--out", tmp_path / "run")
    assert result.exit_code == 2 and result.stderr.startswith(f"error: cannot read {path}")
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_load_train_config_takes_exponent_learning_rates(tmp_path):
    path = tmp_path / "train.yaml"
    # YAML 1.1 reads 3e-3 (no dot) as a string; the loader reads it as the number it means
    path.write_text("data: x\nmembers:\n  mobilenetv2_100: {finetune: {lr: 3e-3, epochs: 3}}\n")
    lr = load_train_config(path).members["mobilenetv2_100"].finetune.lr
    assert isinstance(lr, float) and lr == pytest.approx(3e-3)


def _face_set(n: int, value: int = 0) -> FaceSet:
    contexts = np.full((n, 320, 320, 3), value, np.uint8)
    boxes = np.tile(np.array([[80, 80, 240, 240]], np.float32), (n, 1))
    landmarks = np.tile(np.array([[[130, 140], [190, 140], [160, 170], [135, 200], [185, 200]]], np.float32), (n, 1, 1))
    return FaceSet(contexts, boxes, landmarks, np.arange(n))


def test_fakes_are_drawn_balanced_by_family_then_identity():
    # family A: one long clip of one person (100 faces); family B: five people with 2 faces each
    big = _face_set(100, 10)
    small = [_face_set(2, 20 + k) for k in range(5)]
    pool = FacePool([(("A", "a0"), big)] + [(("B", f"b{k}"), fs) for k, fs in enumerate(small)])
    assert pool.identities == ["A/a0"] + [f"B/b{k}" for k in range(5)] and len(pool) == 110
    rng = np.random.default_rng(0)
    drawn = np.array([int(pool.draw(rng)[0][0, 0, 0]) for _ in range(4000)])
    assert abs((drawn == 10).mean() - 0.5) < 0.03  # each family half the draws, not 100/110 for the big clip
    for k in range(5):
        assert abs((drawn == 20 + k).mean() - 0.1) < 0.02  # each identity of B alike


def test_training_set_adds_real_fakes_with_as_many_reals():
    reals = FacePool([(f"r{k}", _face_set(3, 50 + k)) for k in range(3)])
    fakes = FacePool([(("F", "f0"), _face_set(2, 200))])
    images, labels = build_sbi_set(reals, 4, np.random.default_rng(0), 0.3, 32, augment=False, fake_pool=fakes, n_fakes=3)
    assert images.shape == (2 * 4 + 2 * 3, 3, 32, 32) and labels.tolist() == [0.0, 1.0] * 4 + [1.0, 0.0] * 3
    # the real-fake crops are the fake faces themselves; their partners are plain real faces
    assert all(int(images[8 + 2 * k, 0, 0, 0]) == 200 for k in range(3))
    assert all(50 <= int(images[9 + 2 * k, 0, 0, 0]) <= 52 for k in range(3))


def _textured_set(n: int, blur: float, seed: int) -> FaceSet:
    """Faces of random texture, sharp or blurred (sigma `blur`): face sets that differ in quality only."""
    fs = _face_set(n)
    noise = np.random.default_rng(seed).integers(0, 256, fs.contexts.shape, dtype=np.uint8)
    fs.contexts[:] = [cv2.GaussianBlur(c, (0, 0), blur) if blur else c for c in noise]
    return fs


def test_quality_matched_reals_are_as_sharp_as_the_fakes_they_match():
    """Blurred fakes against reals half sharp, half blurred: drawn at random, half the matching reals
    are sharp (so sharpness would tell the label); matched on quality, every one is blurred."""
    from deepfake_detect.stages.face_quality import sharpness

    reals = FacePool([(f"sharp{k}", _textured_set(2, 0, k)) for k in range(3)]
                     + [(f"blurred{k}", _textured_set(2, 3.0, 10 + k)) for k in range(3)])
    fakes = FacePool([(("F", f"f{k}"), _textured_set(2, 3.0, 20 + k)) for k in range(3)])
    partners = {}
    for match in ("random", "quality"):
        images, labels = build_sbi_set(reals, 1, np.random.default_rng(0), 0.3, 64, augment=False,
                                       fake_pool=fakes, n_fakes=40, real_match=match)
        assert labels[2:].tolist() == [1.0, 0.0] * 40
        partners[match] = sharpness(images[3::2].permute(0, 2, 3, 1).contiguous().numpy())
    fake_sharpness = sharpness(images[2::2].permute(0, 2, 3, 1).contiguous().numpy())
    sharp = fake_sharpness.max() * 4  # sharp crops are far above every blurred one
    assert 0.25 < (partners["random"] > sharp).mean() < 0.75
    assert (partners["quality"] < sharp).all()


def test_manifest_region_column_is_read_and_checked(tmp_path):
    header = "path\tsplit\tlabel\tkind\tmanipulation\tidentity\tregion\n"
    (tmp_path / "m.tsv").write_text(header + "a.mp4\ttrain\tfake\tvideo\tX\tp1\tright_half\n"
                                    "b.mp4\ttrain\treal\tvideo\tnone\tp2\t\n")
    items = read_dataset(tmp_path / "m.tsv")
    assert [(i.region, i.label, i.group) for i in items] == [("right_half", 1, "X"), ("", 0, "none")]
    (tmp_path / "m.tsv").write_text(header + "a.mp4\ttrain\tfake\tvideo\tX\tp1\ttop\n")
    with pytest.raises(ValueError, match="unknown region 'top'"):
        read_dataset(tmp_path / "m.tsv")


def test_analyzer_region_analyses_only_that_half(weights_dir, clips, tmp_path):
    from deepfake_detect.pipeline.core.config import load_config
    from deepfake_detect.pipeline.core.runner import Analyzer

    photo = cv2.resize(cv2.imread(str(clips["photo"])), (300, 225))  # side by side still under MTCNN's 640 px
    side_by_side = tmp_path / "side.png"
    cv2.imwrite(str(side_by_side), np.concatenate([photo, np.full_like(photo, 128)], axis=1))
    analyzer = Analyzer(load_config(None, {"weights": str(weights_dir), "device": "cpu"}))
    left, right = analyzer.analyze(side_by_side, region="left_half"), analyzer.analyze(side_by_side, region="right_half")
    whole = analyzer.analyze(side_by_side)
    assert right.verdict == "no_face" and left.verdict != "no_face" and left.score is not None
    # the same face, at the same coordinates (the left half starts at x = 0)
    np.testing.assert_allclose(left.tracks[0].faces[0].box, whole.tracks[0].faces[0].box, atol=3)  # MTCNN sees another width


def test_interrupted_run_resumes_after_the_last_finished_member(trained, dataset, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for f in list(trained.cache.glob("*.npz")) + list(trained.cache.glob("sbi-*.safetensors")):
        shutil.copy2(f, cache / f.name)  # faces and training set, but no finished member
    cfg = tiny_config(dataset, tmp_path / "run")

    def interrupt_after_the_member(line: str) -> None:
        if f"member_{MEMBER}_s done" in line:
            raise KeyboardInterrupt

    threads = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, cache_dir=cache, log=interrupt_after_the_member)
        assert not (tmp_path / "run" / "detector.json").exists()
        log: list[str] = []
        out = train(cfg, cache_dir=cache, log=log.append)
    finally:
        torch.set_num_threads(threads)
    assert any(line.startswith(f"{MEMBER}: resumed from") for line in log)
    assert not any("finetune: epoch" in line for line in log)  # the member was not trained again
    # the resumed run ends with the detector an uninterrupted run made
    assert load_detector(out).config.sha256 == load_detector(trained.out).config.sha256
    training = load_detector(out).config.training
    phases = training["phases"]
    assert {"faces_s", "train_set_s", f"member_{MEMBER}_s", "combine_calibrate_s", "total_s"} <= set(phases)
    # the resumed member's phase shows the time its training took, not the moment it took to load
    assert training["resumed_members"] == [MEMBER] and phases[f"member_{MEMBER}_s"] > 0
    assert phases["total_s"] >= phases[f"member_{MEMBER}_s"]


def test_never_trained_keeps_held_out_reals_and_families_no_training_identity_had(tmp_path):
    from deepfake_detect.training.data import MediaItem
    from deepfake_detect.training.evaluate import never_trained_items

    def item(name: str, label: int, identity: str, group: str) -> MediaItem:
        return MediaItem(Path(name), label, identity, "train", "video", group)

    items = [item("a_real.mp4", 0, "A", "none"), item("b_real.mp4", 0, "B", "none"),
             item("a_swap.mp4", 1, "A", "swap"), item("b_swap.mp4", 1, "B", "swap"),   # swap: trained (via A)
             item("b_lipsync.mp4", 1, "B", "lipsync"), item("c_lipsync.mp4", 1, "C", "lipsync")]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["A"], "holdout": ["B", "C"]}))
    assert [i.path.name for i in never_trained_items(items, split)] == ["b_real.mp4", "b_lipsync.mp4", "c_lipsync.mp4"]


def test_feature_hints_reach_every_stage_and_can_be_learned(astronaut_face):
    # feature distillation (distill_target: features) pairs each EfficientNetV2-B0 stage and its final
    # feature map with EfficientNet-Lite0's; learning from the hints on one batch lowers their loss
    import timm

    from deepfake_detect.training.distill import FeatureMatch, _maps_and_logits

    torch.manual_seed(0)
    teacher = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    student = timm.create_model("tf_efficientnetv2_b0", num_classes=1000)
    hints = FeatureMatch(student, teacher)
    assert len(hints.adapters) == 6  # five stages and the final feature map
    face = torch.from_numpy(cv2.resize(astronaut_face.image, (64, 64))).permute(2, 0, 1).float() / 127.5 - 1
    x = torch.stack([face, face.flip(2), face.flip(1), -face])
    with torch.no_grad():
        teacher_maps, _ = _maps_and_logits(teacher, x)
    opt = torch.optim.AdamW([*student.parameters(), *hints.parameters()], lr=1e-3)
    losses = []
    for _ in range(12):
        loss = hints(_maps_and_logits(student, x)[0], teacher_maps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    stem_grad = student.conv_stem.weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0  # the hints reach the first (later frozen) layer


def retrain(trained: SimpleNamespace, **changes) -> tuple[Path, list[str]]:
    """The fixture's recipe with `changes`, on its face cache: the run folder and its log lines."""
    log: list[str] = []
    threads = torch.get_num_threads()
    try:
        out = train(dataclasses.replace(trained.cfg, **changes), cache_dir=trained.cache, log=log.append)
    finally:
        torch.set_num_threads(threads)  # train() sets a process-wide thread count
    return out, log


def test_split_seed_keeps_the_identities_while_seed_changes_every_draw(trained, tmp_path):
    # another seed on the same split: how far one recipe's results spread from run to run
    items = read_dataset(trained.cfg.data)
    assert split_by_identity(items, trained.cfg.holdout_share, 1) != split_by_identity(items, trained.cfg.holdout_share, 0)
    out, _ = retrain(trained, out=str(tmp_path / "run"), seed=1, split_seed=trained.cfg.seed)
    assert (out / "split.json").read_text() == (trained.out / "split.json").read_text()
    assert load_detector(out).config.sha256 != load_detector(trained.out).config.sha256


def test_seed_ensemble_keeps_every_seed_and_reuses_the_one_seed_run(trained, tmp_path):
    # replicas: 2 = the fixture's one-member recipe trained with seeds 0 and 1 on one split, both kept
    out, log = retrain(trained, out=str(tmp_path / "run"), replicas=2)
    ensemble = load_detector(out)
    names = [f"{MEMBER}-seed0", f"{MEMBER}-seed1"]
    assert ensemble.config.members == names
    assert ensemble.config.architectures[names[1]]["model_name"] == MEMBER  # the file says what network each is
    # seed 0 is the one-seed run the fixture made: taken from its checkpoint, tensor for tensor
    assert any(line.startswith(f"{names[0]}: resumed from") for line in log)
    one_seed = load_detector(trained.out).members[MEMBER].state_dict()
    for key, tensor in ensemble.members[names[0]].state_dict().items():
        assert torch.equal(tensor, one_seed[key]), key
    # seed 1 was trained here, with other draws: other weights
    assert not all(torch.equal(t, one_seed[k]) for k, t in ensemble.members[names[1]].state_dict().items())
    # each seed's own detector is saved beside the ensemble, and seed 0's is the one-seed run's
    seed0 = load_detector(out / "seeds" / "seed0")
    assert seed0.config.members == [names[0]] and seed0.config.threshold == load_detector(trained.out).config.threshold
    assert (out / "seeds" / "seed1" / "detector.safetensors").is_file()
    phases = ensemble.config.training["phases"]
    assert {f"member_{n}_s" for n in names} <= set(phases)
    scores = ensemble(torch.zeros(2, 3, trained.cfg.input_size, trained.cfg.input_size))[1]
    assert scores.shape == (2, 2)


def test_detail_size_refits_the_operating_point_on_the_same_members(trained, tmp_path):
    # the members learn from full-detail crops, so a detail ceiling reuses them; the combiner,
    # calibration and threshold are fitted again on the holdout as analyze will now see it
    detail, size = trained.cfg.input_size // 2, trained.cfg.input_size
    out, log = retrain(trained, out=str(tmp_path / "run"), detail_size=detail)
    assert any(line.startswith(f"{MEMBER}: resumed from") for line in log)
    capped, full = load_detector(out), load_detector(trained.out)
    assert capped.config.detail_size == detail and full.config.detail_size is None
    for key, tensor in capped.members[MEMBER].state_dict().items():
        assert torch.equal(tensor, full.members[MEMBER].state_dict()[key]), key
    # analyze applies the ceiling: the capped detector scores a crop as the full one scores it shrunk and regrown
    crops = np.random.default_rng(1).integers(0, 255, (4, size, size, 3), dtype=np.uint8)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=detail, mode="bilinear", antialias=True)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (full.config.mean, full.config.std))
    with torch.no_grad():
        as_full = full.eval()((x - mean) / std)[1].numpy()
    as_capped = CropClassifier(capped, torch.device("cpu")).score(crops).members
    np.testing.assert_allclose(as_capped, as_full, atol=1e-5)
    assert np.abs(as_capped - CropClassifier(full, torch.device("cpu")).score(crops).members).max() > 1e-3


def test_refit_reproduces_the_operating_point_and_refits_it_for_a_detail_ceiling(trained, tmp_path):
    full = load_detector(trained.out)
    # the same settings: the same holdout, so the same combiner, calibration and threshold, tensor for tensor
    same = load_detector(refit_detector(trained.out, dataclasses.replace(trained.cfg, out=str(tmp_path / "same")),
                                        trained.cache, log=lambda _: None))
    assert same.config.sha256 == full.config.sha256
    assert same.config.threshold == full.config.threshold
    # (within float noise: a thread count other than training's sums the logits in another order)
    assert same.config.calibration == pytest.approx(full.config.calibration, rel=1e-4)
    # with a detail ceiling: the members kept, the operating point fitted on the holdout as analyze now sees it
    cfg = dataclasses.replace(trained.cfg, out=str(tmp_path / "capped"), detail_size=trained.cfg.input_size // 2)
    out = refit_detector(trained.out, cfg, trained.cache, log=lambda _: None)
    capped = load_detector(out)
    assert capped.config.detail_size == cfg.detail_size and capped.config.threshold != full.config.threshold
    assert capped.config.training["refit"]["members_from"]["sha256"] == full.config.sha256
    assert (out / "split.json").read_text() == (trained.out / "split.json").read_text()
    for key, tensor in capped.members[MEMBER].state_dict().items():
        assert torch.equal(tensor, full.members[MEMBER].state_dict()[key]), key
    # a recipe whose split differs from the detector's would refit on identities its members trained on
    other = dataclasses.replace(trained.cfg, out=str(tmp_path / "other"), split_seed=trained.cfg.seed + 1)
    with pytest.raises(ValueError, match="identity split"):
        refit_detector(trained.out, other, trained.cache, log=lambda _: None)


def test_refit_command_writes_the_refitted_detector_and_info_shows_its_ceiling(cli_run, trained, dataset, tmp_path):
    recipe = tmp_path / "capped.yaml"
    recipe.write_text(cli_run.recipe.read_text() + f"detail_size: {trained.cfg.input_size // 2}\n")
    out = tmp_path / "refit"
    result = run_cli("refit", "--from", trained.out, "--config", recipe, "--data", dataset, "--out", out,
                     "--cache", trained.cache)
    assert result.exit_code == 0, result.output
    assert f"into {out}: combiner" in result.stdout
    info = run_cli("info", "--weights", out)
    assert f"input {trained.cfg.input_size}px (detail {trained.cfg.input_size // 2}px)" in info.stdout
    # no detector where --from points: one line, exit 2, nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = run_cli("refit", "--from", empty, "--config", recipe, "--data", dataset, "--out", tmp_path / "none")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()


def test_train_detail_trains_the_members_under_the_ceiling_and_keys_them_by_it(trained, tmp_path):
    detail = trained.cfg.input_size // 2
    out, log = retrain(trained, out=str(tmp_path / "run"), detail_size=detail, train_detail=True)
    assert not any(line.startswith(f"{MEMBER}: resumed from") for line in log)  # not the full-detail members
    capped, full = load_detector(out), load_detector(trained.out)
    assert capped.config.detail_size == detail
    assert not all(torch.equal(t, full.members[MEMBER].state_dict()[k]) for k, t in capped.members[MEMBER].state_dict().items())
    # the same recipe again finds them in the cache, tensor for tensor
    again, log = retrain(trained, out=str(tmp_path / "again"), detail_size=detail, train_detail=True)
    assert any(line.startswith(f"{MEMBER}: resumed from") for line in log)
    assert load_detector(again).config.sha256 == capped.config.sha256


def test_built_manifest_reads_original_and_pairs_each_fake_with_it(tmp_path):
    # the layout of the built data folder (../shared/data-more/build.py): sha256 and original columns
    header = "path\tsplit\tlabel\tkind\tmanipulation\tidentity\tregion\tsha256\toriginal\n"
    rows = ["gt.mp4\tdev\treal\tvideo\tnone\tspeaker\t\taa\t", "ff_src.mp4\tdev\treal\tvideo\tnone\tp9\t\tbb\t",
            "m1.mp4\tdev\tfake\tvideo\tDINet\tspeaker\t\tcc\tgt.mp4", "m2.mp4\tdev\tfake\tvideo\tTalkLip\tspeaker\t\tdd\tgt.mp4",
            "ff.mp4\tdev\tfake\tvideo\tDeepfakes\tp9\t\tee\t", "lost.mp4\tdev\tfake\tvideo\tX\tp9\t\tff\tnot_here.mp4"]
    (tmp_path / "MANIFEST.tsv").write_text(header + "\n".join(rows) + "\n")
    items = read_dataset(tmp_path)
    assert [i.original.name if i.original else "" for i in items] == ["", "", "gt.mp4", "gt.mp4", "", "not_here.mp4"]
    scores = {"gt.mp4": 0.2, "ff_src.mp4": 0.5, "m1.mp4": 0.6, "m2.mp4": 0.1, "ff.mp4": 0.7, "lost.mp4": 0.9}
    scored = [{"path": shown_path(i.path, tmp_path), "label": i.label, "identity": i.identity,
               "original": shown_path(i.original, tmp_path) if i.original else "", "score": scores[i.path.name]}
              for i in items]
    pairs = fake_original_pairs(scored, "score")
    # m1 and m2 against their named original, ff against its identity's real; lost's original was not evaluated
    assert [(p["fake"], p["original"]) for p in pairs["detail"]] == [
        ("m1.mp4", "gt.mp4"), ("m2.mp4", "gt.mp4"), ("ff.mp4", "ff_src.mp4")]
    assert pairs["fake_scores_higher"] == 2


def train_twice(trained: SimpleNamespace, tmp_path: Path, **changes) -> tuple[Path, Path, list[str], list[str]]:
    """The fixture's recipe with `changes` on a copy of its face cache (no sets, no members), run twice
    into two folders: (cache, first run's folder, first log, second log)."""
    cache = tmp_path / "cache"
    shutil.copytree(trained.cache, cache, ignore=shutil.ignore_patterns("members", "sbi-*"))
    changed = dataclasses.replace(trained.cfg, out=str(tmp_path / "run"), **changes)
    threads = torch.get_num_threads()
    try:
        log: list[str] = []
        out = train(changed, cache_dir=cache, log=log.append)
        again: list[str] = []
        train(dataclasses.replace(changed, out=str(tmp_path / "run2")), cache_dir=cache, log=again.append)
    finally:
        torch.set_num_threads(threads)
    return cache, out, log, again


def test_68_point_masks_and_fresh_sets_each_epoch(trained, tmp_path):
    pytest.importorskip("dlib", reason="68-point landmarks need the training extras: pip install -e '.[train]'")
    cache, out, log, again = train_twice(trained, tmp_path, sbi_landmarks=68, sbi_sets=2)
    # the landmarks are computed once per face and kept in its cache entry (the recipe trains on reals only)
    entries = [np.load(f) for f in sorted(cache.glob("*.npz"))]
    assert entries and all(e["landmarks68"].shape == (len(e["contexts"]), 68, 2) for e in entries)
    assert any("training set 1 of 2" in line for line in log)
    assert any("for 2 x " in line for line in log)       # both sets' features, one set per epoch
    assert len(list(cache.glob("sbi-*.safetensors"))) == 2
    assert load_detector(out).config.sha256 != load_detector(trained.out).config.sha256
    assert any("resumed from" in line for line in again)  # keyed by the new settings, reused when they repeat


def test_autoencoder_pairs_join_the_training_set_and_the_autoencoder_is_kept(trained, tmp_path):
    cache, out, log, again = train_twice(trained, tmp_path, ae_pairs=5, ae_steps=4)
    assert any(line.startswith("autoencoder: step 4/4") for line in log)
    # the SBI pairs (train_pairs) and the autoencoder pairs, each real beside its fake
    assert any(f"{2 * (trained.cfg.train_pairs + 5)} crops ({trained.cfg.train_pairs + 5} fake)" in line for line in log)
    assert len(list((cache / "members").glob("autoencoder-*.safetensors"))) == 1
    assert not any(line.startswith("autoencoder: step") for line in again)  # kept, not trained again
    assert load_detector(out).config.sha256 != load_detector(trained.out).config.sha256


def test_reals_can_be_balanced_by_source_then_identity():
    # one source of 30 people (small photos, as LFW in the built data) beside two sources of one person each
    from deepfake_detect.training.data import MediaItem
    from deepfake_detect.training.train import face_pools

    items = [MediaItem(Path(f"lfw{k}.jpg"), 0, f"lfw{k}", "train", "image", "none", source="lfw") for k in range(30)]
    items += [MediaItem(Path("a.mp4"), 0, "anchor", "train", "video", "none", source="news"),
              MediaItem(Path("v.mp4"), 0, "vlogger", "train", "video", "none", source="vlogs")]
    faces = {i.path: _face_set(2, 10 if i.source == "lfw" else 20 if i.source == "news" else 30) for i in items}
    identities = {i.identity for i in items}
    rng = np.random.default_rng(0)
    by_identity, _ = face_pools(items, faces, identities)
    by_source, _ = face_pools(items, faces, identities, "source")
    share = {name: np.mean([int(pool.draw(rng)[0][0, 0, 0]) == 10 for _ in range(3000)])
             for name, pool in (("identity", by_identity), ("source", by_source))}
    assert abs(share["identity"] - 30 / 32) < 0.03   # the one big source is almost every real draw
    assert abs(share["source"] - 1 / 3) < 0.03       # each source a third
    assert by_source.identities[0] == "lfw/lfw0"  # keyed by (source, identity)
