"""``python -m nb360.data``: fixture, verify, generate and download, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from nb360.data import main


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nb360: error:")
    return lines[0]


def test_fixture_then_verify(tmp_path, capsys):
    assert main(["fixture", "--task", "darcy", "--root", str(tmp_path), "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "piececonst_r21_N4_smooth1.mat" in out and "--data.resolution 21 --data.samples 4" in out
    assert main(["verify", "--task", "darcy", "--root", str(tmp_path), "--data.resolution", "21", "--data.samples=4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok"]
    assert "MATLAB v5" in lines[0] and "MATLAB v7.3" in lines[1]


def test_generate_writes_data_statistics_and_a_preview(tmp_path, capsys):
    assert main(["generate", "--task", "pde", "--root", str(tmp_path), "--n", "3", "--resolution", "15", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("max solver residual") == 2 and "[3.0, 12.0]" in out
    png = tmp_path / "piececonst_r15_N3_smooth1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 100
    assert main(["generate", "--task", "pde", "--root", str(tmp_path), "--n", "3", "--resolution", "15"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_download_from_s3_then_verify(tmp_path, s3_server, darcy_root, capsys):
    url, client = s3_server
    for path in darcy_root.glob("*.mat"):
        client.put_object(Bucket="pde-xd", Key=path.name, Body=path.read_bytes(), ACL="public-read")
    args = ["--task", "darcy", "--root", str(tmp_path), f"--data.s3_endpoint={url}", "--data.resolution", "21", "--data.samples", "8"]
    assert main(["download", *args, "--data.source", "s3"]) == 0
    assert capsys.readouterr().out.count("ok  ") == 2
    for path in darcy_root.glob("*.mat"):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["generate", "--task", "ecg"], 2, ["has no data generator", "only darcy"]),
        (["verify", "--task", "darcy", "--root", "{tmp}"], 1, ["missing", "download --task darcy"]),
        (["verify", "--task", "darcy", "--data.colour", "red"], 2, ["bad DataModule option", "colour"]),
        (["verify", "--task", "darcy", "--oops"], 2, ["--data.KEY VALUE"]),
        (["fixture", "--task", "nothing"], 2, ["unknown task 'nothing'"]),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, code, words):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == code
    line = one_error_line(capsys)
    for word in words:
        assert word in line


def test_a_file_changed_after_its_first_use_fails_verification(tmp_path, capsys):
    verify = ["verify", "--task", "darcy", "--root", str(tmp_path), "--data.resolution", "21", "--data.samples", "4"]
    assert main(["fixture", "--task", "darcy", "--root", str(tmp_path), "--n", "4"]) == 0
    assert main(verify) == 0  # records the checksums
    target = tmp_path / "piececonst_r21_N4_smooth2.mat"
    data = bytearray(target.read_bytes())
    data[-100:] = bytes(np.random.default_rng(0).integers(0, 256, 100, dtype=np.uint8))
    target.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(verify) == 1
    line = one_error_line(capsys)
    assert "checksum mismatch" in line and "smooth2.mat" in line


def test_a_corrupt_file_without_a_recorded_checksum_fails_the_format_check(tmp_path, capsys):
    assert main(["fixture", "--task", "darcy", "--root", str(tmp_path), "--n", "4"]) == 0
    (tmp_path / "piececonst_r21_N4_smooth1.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 50)
    capsys.readouterr()
    assert main(["verify", "--task", "darcy", "--root", str(tmp_path), "--data.resolution", "21", "--data.samples", "4"]) == 1
    assert "not a readable .mat file" in one_error_line(capsys)
