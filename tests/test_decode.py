from pathlib import Path

import cv2
import numpy as np
import pytest

from deepfake_detect.stages.decode import DecodeLimits, MediaError, Sampling, open_media, sample_indices


def test_sample_by_count_is_spread_and_capped():
    idx = sample_indices(300, 30.0, Sampling("count", 32), max_frames=2000)
    assert len(idx) == 32 and idx[0] > 0 and idx[-1] < 299
    assert np.all(np.diff(idx) > 0)
    assert len(sample_indices(10, 30.0, Sampling("count", 32), 2000)) == 10


def test_sample_by_fps_and_every():
    assert len(sample_indices(300, 30.0, Sampling("fps", 2), 2000)) == 20
    assert list(sample_indices(10, 30.0, Sampling("every", 4), 2000)) == [0, 4, 8]
    capped = sample_indices(100_000, 30.0, Sampling("every", 1), max_frames=50)
    assert len(capped) == 50 and capped[-1] == 99_999  # thinned evenly, the end is kept


def test_video_info_and_chunked_batches(clips):
    reader = open_media(clips["one"])
    info = reader.info
    assert (info.kind, info.width, info.height, info.frame_count) == ("video", 480, 270, 40)
    assert info.fps == pytest.approx(25.0) and info.duration_s == pytest.approx(1.6, abs=0.05)
    assert info.has_audio
    idx = reader.sample(Sampling("count", 10))
    batches = list(reader.batches(idx, chunk_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert batches[0].frames.shape == (4, 270, 480, 3) and batches[0].frames.dtype == np.uint8
    assert batches[0].timestamps[1] == pytest.approx(idx[1] / 25.0)


def test_photo_is_a_one_frame_video(clips):
    reader = open_media(clips["photo"])
    assert (reader.info.kind, reader.info.frame_count) == ("image", 1)
    (batch,) = list(reader.batches(reader.sample(Sampling()), 16))
    assert batch.frames.shape == (1, 360, 480, 3)


def test_huge_photo_is_decoded_downscaled(tmp_path):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.full((3000, 4000, 3), 128, np.uint8))
    reader = open_media(big, DecodeLimits(max_decode_pixels=1920 * 1080))
    assert reader.info.width * reader.info.height <= 1920 * 1080
    assert (reader.info.source_width, reader.info.source_height) == (4000, 3000)
    with pytest.raises(MediaError, match="pixel cap"):
        open_media(big, DecodeLimits(max_source_pixels=1000 * 1000))


def test_caps_on_duration_and_size(clips):
    with pytest.raises(MediaError, match="cap"):
        open_media(clips["one"], DecodeLimits(max_duration_s=1.0))
    with pytest.raises(MediaError, match="byte cap"):
        open_media(clips["one"], DecodeLimits(max_file_bytes=100))


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"this is not a video\n" * 20, "not a media file: the content is text"),
    (bytes(range(256)) * 20, "not a media file: the content is not a known image or video format"),
])
def test_bad_files_raise_one_line_errors(tmp_path, content, reason):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(MediaError, match=reason) as err:
        open_media(bad)
    assert "\n" not in str(err.value)


def test_truncated_video(tmp_path, clips):
    data = Path(clips["one"]).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError):
        reader = open_media(cut)
        list(reader.batches(reader.sample(Sampling("count", 32))))


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(MediaError, match="cannot read"):
        open_media(tmp_path / "nope.mp4")
    with pytest.raises(MediaError, match="not a regular file"):
        open_media(tmp_path)


def test_content_is_sniffed_not_the_name():
    from deepfake_detect.stages.media_sniff import sniff_bytes

    assert sniff_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20)).kind == "image"
    assert sniff_bytes(b"GIF89a" + bytes(20)).format == "GIF"
    assert sniff_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(20)).format == "HEIF"
    assert sniff_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(20)).kind == "video"
    assert sniff_bytes(b"\x1a\x45\xdf\xa3" + bytes(20)).kind == "video"
    assert sniff_bytes(b"ID3\x04" + bytes(20)).kind == "audio"
    assert sniff_bytes(b"#EXTM3U\n#EXT-X-VERSION:3\n").kind == "text"   # a playlist never reaches a demuxer
    assert sniff_bytes(bytes(range(256))).kind == "unknown"


def test_library_internals_are_cleaned_from_reasons():
    from deepfake_detect.stages.decode import clean_reason

    raw = ("[22:20:31] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:218: Check failed: "
           "[h264 @ 0x55a1c3d33700] error while decoding MB 2 0")
    assert clean_reason(raw) == "Check failed: error while decoding MB 2 0"


class _ReadAheadFails:
    """A decord reader whose frame reads always fail, as its read-ahead does now and then on damage
    after the frames asked for (thread timing); everything else passes through."""

    def __init__(self, video):
        self._video = video

    def get_batch(self, indices):
        raise RuntimeError("DECORDError: read ahead into damage")

    def __getattr__(self, name):
        return getattr(self._video, name)

    def __len__(self):
        return len(self._video)


def test_clean_frames_of_a_damaged_video_are_read_even_when_decord_fails(tmp_path, clips):
    import decord

    data = bytearray(Path(clips["one"]).read_bytes())  # one group of pictures: damage spoils what follows
    start = data.index(b"mdat") + 4
    off = start + int((len(data) - start) * 0.4)
    data[off:off + 2000] = bytes(b ^ 0xFF for b in data[off:off + 2000])
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    reader = open_media(damaged)
    reader._video = _ReadAheadFails(reader._video)
    batches = list(reader.batches(np.array([5, 15, 25, 35])))
    assert [i for b in batches for i in b.indices.tolist()] == [5]   # the clean frame, from ffmpeg
    assert [i for b in batches for i in b.dropped.tolist()] == [15, 25, 35]
    original = decord.VideoReader(str(clips["one"])).get_batch([5]).asnumpy()[0]
    assert np.abs(batches[0].frames[0].astype(int) - original.astype(int)).mean() < 1.0   # frame 5, not another


def test_decoder_messages_go_to_the_debug_log_not_the_terminal(tmp_path, clips, caplog, capfd):
    import logging

    data = bytearray(Path(clips["one"]).read_bytes())
    start = data.index(b"mdat") + 4
    off = start + (len(data) - start) // 2
    data[off:off + 2000] = bytes(b ^ 0xFF for b in data[off:off + 2000])
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.DEBUG, logger="deepfake_detect.stages.decoder"):
        reader = open_media(damaged)
        batches = list(reader.batches(reader.sample(Sampling("count", 8)), chunk_size=4))
    dropped = [i for b in batches for i in b.dropped.tolist()]
    assert dropped == [17, 22, 27, 32, 37] and sum(len(b) for b in batches) == 3   # from the damage on
    assert any("decoder: [h264" in r.getMessage() for r in caplog.records)
    assert "h264" not in capfd.readouterr().err
