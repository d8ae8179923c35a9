"""Published detectors imported from their authors' checkpoint layouts (training/published).

No real weights can be had here, so each test builds the original architecture from the library its
authors used (efficientnet_pytorch for ICPR 2020 and SBI, timm for the DFDC winner) with random
weights, saves it in the published layout, imports it, and requires this pipeline's score of a face
to equal the original's within 1e-5, with each method's own preprocessing written out here again
from its code (crop, resize, padding, normalisation) as the reference.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from deepfake_detect.stages.classify import CropClassifier
from deepfake_detect.stages.crop import cut_crop
from deepfake_detect.stages.ensemble import load_detector
from deepfake_detect.training.published import CheckpointError, import_detector

efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch", reason="the test extras bring efficientnet_pytorch")
EfficientNet = efficientnet_pytorch.EfficientNet
IMAGENET = (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32))
BOX = np.array([200.0, 120.0, 330.0, 290.0], np.float32)   # x1 y1 x2 y2: a 130 x 170 face in a 640 x 480 frame


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return cv2.resize(small, (640, 480), interpolation=cv2.INTER_CUBIC)   # smooth structure, not pure noise


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, batch-norm statistics included (a fresh net's are 0 and 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dtype.is_floating_point:
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * (0.05 if tensor.dim() > 1 else 0.1))
    return model.eval()


def _to_tensor(crop: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    x = (crop.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


def _pipeline_score(folder, frame: np.ndarray) -> float:
    model = load_detector(folder)
    cfg = model.config
    crop = cut_crop(frame, BOX, cfg.crop_policy, cfg.crop_margin, cfg.input_size)
    return float(CropClassifier(model, torch.device("cpu")).score(crop[None]).ensemble[0])


# -- ICPR 2020 -------------------------------------------------------------------------------------
class _AutoAttNet(EfficientNet):
    """fornet.EfficientNetAutoAtt as its code reads: an attention map after block 9."""

    def init_att(self) -> None:
        self.att_block_idx = 9
        self.attconv = nn.Conv2d(self._blocks[9]._bn2.num_features, 1, kernel_size=1)

    def extract_features(self, x):
        x = self._swish(self._bn0(self._conv_stem(x)))
        for idx, block in enumerate(self._blocks):
            x = block(x, drop_connect_rate=self._global_params.drop_connect_rate * idx / len(self._blocks))
            if idx == self.att_block_idx:
                x = x * torch.sigmoid(self.attconv(x))
        return self._swish(self._bn1(self._conv_head(x)))


class _IcprNet(nn.Module):
    """fornet.EfficientNetB4 / EfficientNetAutoAttB4: features, pooling, dropout, Linear(1792, 1)."""

    def __init__(self, attention: bool):
        super().__init__()
        if attention:
            self.efficientnet = _AutoAttNet.from_name("efficientnet-b4")
            self.efficientnet.init_att()
        else:
            self.efficientnet = EfficientNet.from_name("efficientnet-b4")
        self.classifier = nn.Linear(self.efficientnet._conv_head.out_channels, 1)
        del self.efficientnet._fc

    def features(self, x):
        return self.efficientnet._avg_pooling(self.efficientnet.extract_features(x)).flatten(1)

    def forward(self, x):
        return self.classifier(self.efficientnet._dropout(self.features(x)))


class _IcprSiamese(nn.Module):
    """fornet's ...ST: the network under feat_ext, a BatchNorm1d + Linear head, no dropout."""

    def __init__(self, attention: bool):
        super().__init__()
        self.feat_ext = _IcprNet(attention)
        self.classifier = nn.Sequential(nn.BatchNorm1d(1792), nn.Linear(1792, 1))

    def forward(self, x):
        return self.classifier(self.feat_ext.features(x))


def _icpr_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """BlazeFace extractor margin (0.2 of the box height, twice above), then 'scale': pad to 224, resize."""
    x1, y1, x2, y2 = (int(v) for v in box)
    offset = round(0.2 * (y2 - y1))
    crop = frame[max(y1 - 2 * offset, 0):y2 + offset, max(x1 - offset, 0):x2 + offset]
    rows, cols = crop.shape[:2]
    ph, pw = max(224, rows), max(224, cols)
    top, left = int((ph - rows) / 2.0), int((pw - cols) / 2.0)
    padded = np.zeros((ph, pw, 3), np.uint8)
    padded[top:top + rows, left:left + cols] = crop
    return cv2.resize(padded, (224, 224), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("attention,siamese,nested", [(False, False, False), (True, False, True), (True, True, False)])
def test_icpr2020_checkpoints_score_as_the_original(tmp_path, frame, attention, siamese, nested):
    net = _randomise(_IcprSiamese(attention) if siamese else _IcprNet(attention), seed=1)
    variant = f"EfficientNet{'AutoAtt' if attention else ''}B4{'ST' if siamese else ''}"
    path = tmp_path / f"{variant}_DFDC_bestval-0000.pth"
    torch.save({"net": net.state_dict(), "epoch": 3} if nested else net.state_dict(), path)
    folder = import_detector("icpr2020", [path], tmp_path / "imported")
    with torch.no_grad():
        expected = torch.sigmoid(net(_to_tensor(_icpr_crop(frame, BOX), *IMAGENET))).item()
    assert _pipeline_score(folder, frame) == pytest.approx(expected, abs=1e-5)
    config = load_detector(folder).config
    assert config.provenance["variant"] == variant and config.provenance["trained_on"] == "DFDC"
    assert config.provenance["sources"][0]["file"] == path.name and config.crop_policy == "icpr2020"


def test_a_small_face_is_padded_to_224_before_the_resize(frame):
    small = np.array([300.0, 200.0, 340.0, 250.0], np.float32)   # crop smaller than 224: padded, as albumentations does
    assert np.array_equal(cut_crop(frame, small, "icpr2020", 0.0, 224), _icpr_crop(frame, small))


# -- SBI -------------------------------------------------------------------------------------------
def _sbi_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """preprocess.crop_face, test phase: w/8 and h/8 each side, +1 on the far edges, stretched to 380."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    wm, hm = w / 4 * 0.5, h / 4 * 0.5
    height, width = frame.shape[:2]
    crop = frame[max(0, int(y0 - hm)):min(height, int(y1 + hm) + 1), max(0, int(x0 - wm)):min(width, int(x1 + wm) + 1)]
    return cv2.resize(crop, (380, 380))


def test_sbi_checkpoint_scores_as_the_original(tmp_path, frame):
    class Detector(nn.Module):   # src/inference/model.py: the network under `net`, two classes
        def __init__(self):
            super().__init__()
            self.net = EfficientNet.from_name("efficientnet-b4", num_classes=2)

        def forward(self, x):
            return self.net(x)

    model = _randomise(Detector(), seed=2)
    path = tmp_path / "FFraw.tar"
    torch.save({"model": model.state_dict(), "optimizer": {"state": {}}, "epoch": 10}, path)
    folder = import_detector("sbi", [path], tmp_path / "sbi")
    crop = _sbi_crop(frame, BOX)
    with torch.no_grad():
        x = torch.from_numpy(crop.transpose(2, 0, 1).copy()).float()[None] / 255
        expected = model(x).softmax(1)[0, 1].item()
    assert _pipeline_score(folder, frame) == pytest.approx(expected, abs=1e-5)


# -- DFDC winner -----------------------------------------------------------------------------------
def _dfdc_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """kernel_utils: a third of the box on each side, isotropic resize to 380, centred on zeros."""
    xmin, ymin, xmax, ymax = (int(v) for v in box)
    p_w, p_h = (xmax - xmin) // 3, (ymax - ymin) // 3
    crop = frame[max(ymin - p_h, 0):ymax + p_h, max(xmin - p_w, 0):xmax + p_w]
    h, w = crop.shape[:2]
    if max(w, h) != 380:
        scale = 380 / max(w, h)
        nw, nh = (380, h * scale) if w > h else (w * scale, 380)
        crop = cv2.resize(crop, (int(nw), int(nh)), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    out = np.zeros((380, 380, 3), np.uint8)
    top, left = (380 - crop.shape[0]) // 2, (380 - crop.shape[1]) // 2
    out[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    return out


def test_dfdc_winner_checkpoints_score_as_the_original_average(tmp_path, frame):
    import timm

    class DeepFakeClassifier(nn.Module):   # training/zoo/classifiers.py
        def __init__(self):
            super().__init__()
            self.encoder = timm.create_model("tf_efficientnet_b7", pretrained=False, drop_path_rate=0.2)
            self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
            self.dropout = nn.Dropout(0.0)
            self.fc = nn.Linear(2560, 1)

        def forward(self, x):
            return self.fc(self.dropout(self.avg_pool(self.encoder.forward_features(x)).flatten(1)))

    x = _to_tensor(_dfdc_crop(frame, BOX), *IMAGENET)
    paths, probs = [], []
    for seed in (3, 4):
        model = _randomise(DeepFakeClassifier(), seed)
        path = tmp_path / f"final_{seed}11_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36"
        torch.save({"epoch": 36, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                    "bce_best": 0.2}, path)
        with torch.no_grad():
            probs.append(torch.sigmoid(model(x)).item())
        paths.append(path)
        del model
    folder = import_detector("dfdc-winner", paths, tmp_path / "dfdc")
    assert _pipeline_score(folder, frame) == pytest.approx(float(np.mean(probs)), abs=1e-5)
    assert load_detector(folder).config.members == ["dfdc_b7_1", "dfdc_b7_2"]


def test_a_file_of_another_format_is_refused_in_one_line(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, path)
    for name in ("icpr2020", "sbi", "dfdc-winner"):
        with pytest.raises(CheckpointError, match="not a|no "):
            import_detector(name, [path], tmp_path / name)
    (tmp_path / "code.pth").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        import_detector("sbi", [tmp_path / "code.pth"], tmp_path / "x")


# -- ResNeXt-LSTM ----------------------------------------------------------------------------------
def test_resnext_lstm_checkpoint_scores_a_window_as_the_original(tmp_path, frame):
    import torchvision
    from torchvision import transforms

    class Model(nn.Module):   # ml_app/views.py, argument for argument (its 4th LSTM argument is `bias`)
        def __init__(self, num_classes=2, latent_dim=2048, lstm_layers=1, hidden_dim=2048, bidirectional=False):
            super().__init__()
            self.model = nn.Sequential(*list(torchvision.models.resnext50_32x4d().children())[:-2])
            self.lstm = nn.LSTM(latent_dim, hidden_dim, lstm_layers, bidirectional)
            self.relu = nn.LeakyReLU()
            self.dp = nn.Dropout(0.4)
            self.linear1 = nn.Linear(2048, num_classes)
            self.avgpool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            batch_size, seq_length, c, h, w = x.shape
            fmap = self.model(x.view(batch_size * seq_length, c, h, w))
            x_lstm, _ = self.lstm(self.avgpool(fmap).view(batch_size, seq_length, 2048), None)
            return fmap, self.dp(self.linear1(x_lstm[:, -1, :]))

    model = _randomise(Model(), seed=5)
    path = tmp_path / "model_87_acc_20_frames_final_data.pt"
    torch.save(model.state_dict(), path)
    folder = import_detector("resnext-lstm", [path], tmp_path / "resnext")
    transform = transforms.Compose([transforms.ToPILImage(), transforms.Resize((112, 112)), transforms.ToTensor(),
                                    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    bgr = np.ascontiguousarray(frame[..., ::-1])   # its frames come from cv2, never converted to RGB
    boxes = [np.array(b, np.float32) for b in ([190, 110, 320, 280], [205, 118, 331, 289], [200, 120, 330, 290])]

    def window(last_first: list[np.ndarray]) -> float:
        faces = [transform(bgr[int(b[1]):int(b[3]), int(b[0]):int(b[2])]) for b in last_first]
        with torch.no_grad():
            return torch.softmax(model(torch.stack(faces)[None])[1], 1)[0, 0].item()   # index 0: FAKE

    expected = window(boxes)
    assert window([boxes[1], boxes[0], boxes[2]]) == pytest.approx(expected, abs=1e-6)   # only the last crop counts
    assert _pipeline_score(folder, frame) == pytest.approx(expected, abs=1e-5)   # BOX is the window's last face
    assert load_detector(folder).config.provenance["window_frames"] == 20


def test_an_imported_detector_runs_through_analyze_with_heatmaps(tmp_path):
    """The CLI end to end: import, `info`, then `analyze --weights` with rendering (ONNX Runtime scores,
    Grad-CAM on the PyTorch member, the method's crop window laid back over the photo)."""
    import json

    from click.testing import CliRunner

    from deepfake_detect.pipeline.cli import main
    from deepfake_detect.pipeline.core.samples import make_sample_photo

    path = tmp_path / "EfficientNetAutoAttB4_FFPP_bestval-0000.pth"
    torch.save(_randomise(_IcprNet(True), seed=6).state_dict(), path)
    runner = CliRunner()
    result = runner.invoke(main, ["detectors", "import", "icpr2020", str(path), "--out", str(tmp_path / "det")])
    assert result.exit_code == 0, result.output
    again = runner.invoke(main, ["detectors", "import", "icpr2020", str(path), "--out", str(tmp_path / "det")])
    assert again.exit_code != 0 and "already holds a detector" in again.output
    info = runner.invoke(main, ["info", "--weights", str(tmp_path / "det")])
    assert "imported (icpr2020)" in info.output and "licence: GPL-3.0" in info.output and path.name in info.output
    photo = make_sample_photo(tmp_path / "face.jpg")
    result = runner.invoke(main, ["analyze", str(photo), "--weights", str(tmp_path / "det"), "--out", str(tmp_path / "out"),
                                  "--render"])
    assert result.exit_code in (0, 1, 3), result.output
    report = json.loads((tmp_path / "out" / "face.jpg.json").read_text())
    assert report["verdict"] in ("real", "fake", "inconclusive") and 0 <= report["score"] <= 1
    assert report["model"]["members"] == ["icpr2020_EfficientNetAutoAttB4"]
    assert (tmp_path / "out" / "face.jpg.annotated.png").is_file()


def test_a_heatmap_is_laid_over_the_pixels_the_method_cut():
    from deepfake_detect.stages.crop import crop_window
    from deepfake_detect.stages.draw import OverlayStyle, draw_face

    frame = np.zeros((480, 640, 3), np.uint8)
    box = np.array([300.0, 200.0, 340.0, 300.0])   # tall and narrow: the dfdc-winner cut pads left and right
    (sx1, sy1, sx2, sy2), (tx1, _, tx2, _) = crop_window("dfdc-winner", box, 0.0, 480, 640, 380)
    assert tx1 > 0 and tx2 < 380   # padding in the crop, which must not be painted over the frame
    draw_face(frame, box, 0.9, "", np.ones((380, 380), np.float32),
              OverlayStyle(crop_policy="dfdc-winner", crop_size=380, crop_margin=0.0))
    assert frame[250, sx1 + 2].any() and frame[250, sx2 - 2].any()            # inside the cut: coloured
    assert not frame[250, sx1 - 3].any() and not frame[250, sx2 + 3].any()    # beside it: untouched
    assert not frame[sy2 + 3, 320].any()
