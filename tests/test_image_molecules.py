"""The image-molecules sample: OSRA finds the structures in an image, RDKit describes the one at a point."""

from __future__ import annotations

import base64
import json
import re
import resource
import subprocess
import time
import urllib.request

import psutil
import pytest

from cloudtest import SAMPLE_FUNCTIONS, wait_until
from minicloud.client import FunctionError
from molecule_images import (
    CAFFEINE,
    PARACETAMOL,
    blank_png,
    canonical,
    copy_function,
    load_handler_module,
    pair_png,
    panel_centre,
    png_to_jpeg,
    require_osra,
    require_rdkit,
)

# The function's own modules, from its folder, which molecule_images puts on sys.path.
import image_input
import openai_vision
import osra_runner

main = load_handler_module()

CAFFEINE_FORMULA = "C8H10N4O2"
PARACETAMOL_FORMULA = "C8H9NO2"


class FakeContext:
    def __init__(self, remaining_ms: int = 30_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def event_for(image: bytes, x: int, y: int) -> dict:
    return {"imageBase64": base64.b64encode(image).decode("ascii"), "x": x, "y": y}


@pytest.fixture(scope="module")
def pair() -> bytes:
    require_rdkit()
    return pair_png(400)


def write_script(path, body: str):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# --- image_input: base64 and the image header ---


def test_decode_base64_plain_and_data_uri():
    data = b"\x89PNG\r\n\x1a\n-rest"
    encoded = base64.b64encode(data).decode()
    assert image_input.decode_base64(encoded) == data
    assert image_input.decode_base64("data:image/png;base64," + encoded) == data
    assert image_input.decode_base64(encoded[:8] + "\n" + encoded[8:] + "\n") == data


@pytest.mark.parametrize("text", ["not base64!!", "abc", "", "   "])
def test_decode_base64_rejects_invalid(text):
    with pytest.raises(image_input.InvalidBase64, match="imageBase64"):
        image_input.decode_base64(text)


def test_read_image_info_png_size():
    info = image_input.read_image_info(blank_png(321, 123))
    assert (info.format, info.width, info.height) == ("png", 321, 123)
    assert info.mime_type == "image/png"


def test_read_image_info_jpeg_size():
    pytest.importorskip("PIL")
    info = image_input.read_image_info(png_to_jpeg(blank_png(333, 111)))
    assert (info.format, info.width, info.height) == ("jpeg", 333, 111)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is text", b"GIF89a\x01\x00\x01\x00", b"", b"%PDF-1.7\n"],
    ids=["text", "gif", "empty", "pdf"],
)
def test_read_image_info_rejects_other_formats(data):
    with pytest.raises(image_input.InvalidImage, match="not a PNG or JPEG"):
        image_input.read_image_info(data)


def test_read_image_info_rejects_cut_png():
    with pytest.raises(image_input.InvalidImage, match="no IHDR"):
        image_input.read_image_info(blank_png()[:20])


def test_read_image_info_rejects_truncated_pixels():
    # osra 2.1.3 aborts with SIGABRT on such a file, so it must be rejected before osra runs.
    pytest.importorskip("PIL")
    data = blank_png(400, 400)
    with pytest.raises(image_input.InvalidImage, match="cannot be decoded"):
        image_input.read_image_info(data[: len(data) // 2])


def test_read_image_info_rejects_jpeg_without_frame():
    with pytest.raises(image_input.InvalidImage, match="no start-of-frame"):
        image_input.read_image_info(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9")


# --- main: the event, the point and the choice of molecule ---


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ([1, 2], "JSON object"),
        ({"x": 1, "y": 2}, "imageBase64"),
        ({"imageBase64": 42, "x": 1, "y": 2}, "imageBase64"),
        ({"imageBase64": "", "y": 2}, "x must"),
        ({"imageBase64": "", "x": "10", "y": 2}, "x must"),
        ({"imageBase64": "", "x": 1.5, "y": 2}, "x must"),
        ({"imageBase64": "", "x": 1, "y": True}, "y must"),
    ],
)
def test_parse_event_rejects_bad_fields(event, field):
    with pytest.raises(main.InvalidEvent, match=field):
        main.parse_event(event)


def test_check_point_edges():
    info = image_input.ImageInfo("png", 800, 400)
    main.check_point(0, 0, info)
    main.check_point(799, 399, info)
    for x, y in [(-1, 0), (0, -1), (800, 0), (0, 400)]:
        with pytest.raises(main.PointOutsideImage, match=rf"\({x}, {y}\) is outside the 800x400 image"):
            main.check_point(x, y, info)


def test_pick_molecule_inside_and_nearest():
    left = {"smiles": "C", "box": [10, 10, 100, 100]}
    right = {"smiles": "O", "box": [200, 10, 300, 100]}
    assert main.pick_molecule([left, right], 50, 50) == (left, 0.0)
    assert main.pick_molecule([left, right], 250, 100) == (right, 0.0)  # the edge counts as inside
    chosen, distance = main.pick_molecule([left, right], 180, 50)
    assert chosen is right
    assert distance == 20.0
    chosen, distance = main.pick_molecule([left, right], 103, 104)
    assert chosen is left
    assert distance == 5.0


def test_pick_molecule_prefers_smallest_box():
    outer = {"smiles": "C", "box": [0, 0, 500, 500]}
    inner = {"smiles": "O", "box": [100, 100, 200, 200]}
    assert main.pick_molecule([outer, inner], 150, 150)[0] is inner


def test_recognition_timeout_leaves_reserve():
    assert main.recognition_timeout_s(30_000) == pytest.approx(30 - main.RESERVED_S)
    with pytest.raises(main.TimeLeftTooShort, match="raise timeout_s"):
        main.recognition_timeout_s(800)


def test_describe_molecule_caffeine():
    require_rdkit()
    described = main.describe_molecule("Cn1cnc2c1c(=O)n(C)c(=O)n2C", [1, 2, 3, 4])
    assert described["smiles"] == canonical(CAFFEINE)
    assert described["formula"] == CAFFEINE_FORMULA
    assert described["molecular_weight"] == pytest.approx(194.19, abs=0.01)
    assert described["box"] == [1, 2, 3, 4]


def test_describe_molecule_unparseable():
    require_rdkit()
    described = main.describe_molecule("C1CC", [0, 0, 1, 1])
    assert described["smiles"] == "C1CC"
    assert described["formula"] is None
    assert described["molecular_weight"] is None
    assert "RDKit cannot parse" in described["error"]


# --- osra_runner: output parsing, a missing program, a hanging one ---


def test_parse_osra_output_lines():
    text = "Cn1cnc2c1c(=O)n(C)c(=O)n2C 57x81-343x317\nCC(=O)Nc1ccc(cc1)O 420x131-779x269\n\n"
    assert osra_runner.parse_osra_output(text) == [
        ("Cn1cnc2c1c(=O)n(C)c(=O)n2C", [57, 81, 343, 317]),
        ("CC(=O)Nc1ccc(cc1)O", [420, 131, 779, 269]),
    ]
    assert osra_runner.parse_osra_output("") == []


def test_parse_osra_output_rejects_unknown_line():
    with pytest.raises(osra_runner.OsraFailed, match="cannot parse the osra output line"):
        osra_runner.parse_osra_output("CCO 1.23 12x12-20x20\n")


def test_find_osra_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv(osra_runner.OSRA_BIN_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(osra_runner.OsraNotInstalled, match="apt-get install osra"):
        osra_runner.find_osra()
    monkeypatch.setenv(osra_runner.OSRA_BIN_VARIABLE, str(tmp_path / "no-such-osra"))
    with pytest.raises(osra_runner.OsraNotInstalled, match="no-such-osra.*apt-get install osra"):
        osra_runner.find_osra()


@pytest.mark.timeout(30)
def test_run_osra_timeout_kills_process_group(tmp_path):
    pid_file = tmp_path / "sleep.pid"
    # The sleep is a grandchild of run_osra, so only killing the process group stops it.
    fake = write_script(tmp_path / "osra", f"sleep 60 &\necho $! > {pid_file}\nwait\n")
    started = time.monotonic()
    with pytest.raises(osra_runner.OsraTimeout, match=r"timed out after 0\.5 s and was killed"):
        osra_runner.run_osra([str(fake)], timeout_s=0.5)
    assert time.monotonic() - started < 5
    sleep_pid = int(pid_file.read_text())
    wait_until(lambda: not _running(sleep_pid), timeout=5, message=f"sleep {sleep_pid} to be killed")


@pytest.mark.timeout(30)
def test_run_osra_failure_shows_stderr(tmp_path):
    fake = write_script(tmp_path / "osra", 'echo "Cannot open file \\"x.png\\"" >&2\nexit 252\n')
    with pytest.raises(osra_runner.OsraFailed, match=r'osra exited with status 252: Cannot open file "x.png"'):
        osra_runner.run_osra([str(fake)], timeout_s=10)


# --- openai_vision: request and reply, offline ---


def test_vision_request_carries_image_data_uri():
    info = image_input.ImageInfo("png", 800, 400)
    request = openai_vision.build_request(b"\x89PNG-bytes", info, "test-key", "some-model")
    assert request.full_url == openai_vision.API_URL
    assert request.get_method() == "POST"
    assert request.get_header("Authorization") == "Bearer test-key"
    payload = json.loads(request.data)
    assert payload["model"] == "some-model"
    content = payload["messages"][0]["content"]
    assert "800x400 pixels" in content[0]["text"]
    expected_uri = "data:image/png;base64," + base64.b64encode(b"\x89PNG-bytes").decode()
    assert content[1] == {"type": "image_url", "image_url": {"url": expected_uri}}


def test_vision_reply_parsed_and_clipped():
    info = image_input.ImageInfo("png", 800, 400)
    molecules = {"molecules": [{"smiles": " CCO ", "box": [900, -5, 420.4, 130]}]}
    body = {"choices": [{"message": {"content": json.dumps(molecules)}}]}
    assert openai_vision.parse_reply(body, info) == [("CCO", [420, 0, 799, 130])]


@pytest.mark.parametrize(
    "content",
    ["not json", '{"smiles": "CCO"}', '{"molecules": {"smiles": "CCO"}}', '{"molecules": [{"smiles": "CCO", "box": [1, 2]}]}', '{"molecules": [{"box": [1, 2, 3, 4]}]}'],
)
def test_vision_reply_rejects_malformed(content):
    info = image_input.ImageInfo("png", 800, 400)
    body = {"choices": [{"message": {"content": content}}]}
    with pytest.raises(openai_vision.VisionModelError):
        openai_vision.parse_reply(body, info)


def test_handler_uses_vision_backend_with_key(monkeypatch, pair):
    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    def fake_recognise(image, info, api_key, model, timeout_s):
        assert api_key == "test-key"
        assert model == openai_vision.DEFAULT_MODEL
        return [("c1ccccc1", [10, 10, 100, 100])]

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(openai_vision, "recognise", fake_recognise)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    result = main.handler(event_for(pair, 50, 50), FakeContext())
    assert result["backend"] == f"openai:{openai_vision.DEFAULT_MODEL}"
    assert result["smiles"] == "c1ccccc1"
    assert result["formula"] == "C6H6"
    assert "osra_cpu_ms" not in result


# --- the handler with the real osra, in this process ---


@pytest.mark.timeout(60)
def test_handler_finds_both_molecules(monkeypatch, pair):
    require_osra()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    caffeine = main.handler(event_for(pair, *panel_centre(0)), FakeContext())
    paracetamol = main.handler(event_for(pair, *panel_centre(1)), FakeContext())

    assert caffeine["smiles"] == canonical(CAFFEINE)
    assert caffeine["formula"] == CAFFEINE_FORMULA
    assert caffeine["molecular_weight"] == pytest.approx(194.19, abs=0.01)
    assert caffeine["match"] == "inside"
    assert caffeine["backend"] == "osra"
    assert caffeine["osra_cpu_ms"] > 0
    assert paracetamol["smiles"] == canonical(PARACETAMOL)
    assert paracetamol["formula"] == PARACETAMOL_FORMULA
    assert paracetamol["molecular_weight"] == pytest.approx(151.16, abs=0.01)
    assert [molecule["smiles"] for molecule in caffeine["all"]] == [canonical(CAFFEINE), canonical(PARACETAMOL)]
    left_box, right_box = (molecule["box"] for molecule in caffeine["all"])
    assert left_box[2] < 400 <= right_box[0]  # each box lies in its own panel


@pytest.mark.timeout(60)
@pytest.mark.parametrize("panel_px", [300, 500])
def test_handler_other_drawing_sizes(monkeypatch, panel_px):
    # osra 2.1.3 read one of caffeine's nitrogens as a carbon at 200 pixels a panel, so sizes start at 300.
    require_rdkit()
    require_osra()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    image = pair_png(panel_px)
    result = main.handler(event_for(image, *panel_centre(1, panel_px)), FakeContext())
    assert result["smiles"] == canonical(PARACETAMOL)
    assert sorted(molecule["smiles"] for molecule in result["all"]) == sorted([canonical(CAFFEINE), canonical(PARACETAMOL)])


@pytest.mark.timeout(60)
def test_handler_reads_jpeg(monkeypatch, pair):
    require_osra()
    pytest.importorskip("PIL")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = main.handler(event_for(png_to_jpeg(pair), *panel_centre(0)), FakeContext())
    assert result["image"] == {"format": "jpeg", "width": 800, "height": 400}
    assert result["smiles"] == canonical(CAFFEINE)


@pytest.mark.timeout(60)
def test_handler_point_between_takes_nearest(monkeypatch, pair):
    require_osra()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # Paracetamol's box is wide and flat (y about 131 to 269), so a point near the bottom right is outside every box.
    result = main.handler(event_for(pair, 700, 390), FakeContext())
    assert result["match"] == "nearest"
    assert result["distance_px"] > 0
    assert result["smiles"] == canonical(PARACETAMOL)


@pytest.mark.timeout(60)
def test_handler_blank_image_has_no_structure(monkeypatch):
    require_rdkit()
    require_osra()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(main.NoStructureFound, match="no chemical structure was found in the 300x200 PNG image"):
        main.handler(event_for(blank_png(300, 200), 10, 10), FakeContext())


# --- end to end through a real cloud ---


@pytest.mark.timeout(120)
def test_cloud_finds_molecule_at_point(start_cloud, pair):
    require_osra()
    cloud = start_cloud(SAMPLE_FUNCTIONS)
    with cloud.client() as client:
        caffeine = client.invoke("image-molecules", event_for(pair, *panel_centre(0)), timeout=60)
        paracetamol = client.invoke("image-molecules", event_for(pair, *panel_centre(1)), timeout=60)

    assert caffeine.result["smiles"] == canonical(CAFFEINE)
    assert caffeine.result["formula"] == CAFFEINE_FORMULA
    assert caffeine.report["start"] == "cold"
    assert paracetamol.result["smiles"] == canonical(PARACETAMOL)
    assert paracetamol.result["formula"] == PARACETAMOL_FORMULA
    assert paracetamol.report["start"] == "warm"
    assert caffeine.report["memory_mb"] == 1024


@pytest.mark.timeout(120)
def test_cloud_cpu_ms_counts_osra(start_cloud, pair, tmp_path):
    osra = require_osra()
    image_file = tmp_path / "pair.png"
    image_file.write_bytes(pair)
    # osra's CPU time for this image ranged from 0.95 to 1.18 s on a busy two-core machine, so the fastest of three direct runs is the yardstick.
    direct_cpu_ms = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        direct = subprocess.run([osra, "-c", "-f", "can", str(image_file)], capture_output=True, text=True, timeout=60, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        direct_cpu_ms.append(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000)
        assert len(direct.stdout.splitlines()) == 2
    osra_cpu_ms = min(direct_cpu_ms)

    cloud = start_cloud(SAMPLE_FUNCTIONS)
    with cloud.client() as client:
        reply = client.invoke("image-molecules", event_for(pair, *panel_centre(0)), timeout=60)

    cpu_ms = reply.report["cpu_ms"]
    measured_in_handler = reply.result["osra_cpu_ms"]
    assert cpu_ms >= 0.9 * osra_cpu_ms, f"cpu_ms {cpu_ms} leaves out osra's {direct_cpu_ms} ms (handler measured {measured_in_handler})"
    # The handler measured the very osra run of this invocation, so the report must contain all of it.
    assert cpu_ms >= measured_in_handler


@pytest.mark.timeout(120)
def test_cloud_bad_inputs_are_function_errors(start_cloud):
    require_rdkit()
    require_osra()
    cloud = start_cloud(SAMPLE_FUNCTIONS)
    blank = base64.b64encode(blank_png(300, 200)).decode()
    cases = [
        ({"imageBase64": "%%% not base64 %%%", "x": 1, "y": 1}, "InvalidBase64", "not valid base64"),
        ({"imageBase64": base64.b64encode(b"just some text").decode(), "x": 1, "y": 1}, "InvalidImage", "not a PNG or JPEG"),
        ({"imageBase64": blank, "x": 10, "y": 10}, "NoStructureFound", "no chemical structure was found"),
        ({"imageBase64": blank, "x": 300, "y": 10}, "PointOutsideImage", r"\(300, 10\) is outside the 300x200 image"),
        ({"imageBase64": blank, "x": "left", "y": 10}, "InvalidEvent", "x must be a whole number"),
    ]
    workers = set()
    with cloud.client() as client:
        for event, error_type, message in cases:
            with pytest.raises(FunctionError) as raised:
                client.invoke("image-molecules", event, timeout=60)
            assert raised.value.error["type"] == error_type
            assert raised.value.error["source"] == "function"
            assert re.search(message, raised.value.error["message"]), raised.value.error["message"]
            workers.add(raised.value.report["worker_id"])
    assert len(workers) == 1  # errors leave the worker warm


@pytest.mark.timeout(120)
def test_cloud_hanging_osra_is_killed(start_cloud, tmp_path, pair):
    pid_file = tmp_path / "osra.pid"
    fake = write_script(tmp_path / "fake-osra", f"echo $$ > {pid_file}\nexec sleep 60\n")
    functions = tmp_path / "functions"
    copy_function(functions, timeout_s=3, env={"OSRA_BIN": str(fake)})
    cloud = start_cloud(functions)
    with cloud.client() as client:
        with pytest.raises(FunctionError) as raised:
            client.invoke("image-molecules", event_for(pair, *panel_centre(0)), timeout=30)

    error = raised.value.error
    assert error["type"] == "OsraTimeout"
    # The handler gives osra the invocation's remaining time less 1 s, so a
    # little under 2 s when the machine is busy.
    waited = re.search(r"osra timed out after (\d+\.\d) s and was killed; raise timeout_s", error["message"])
    assert waited, error["message"]
    assert 1.0 <= float(waited.group(1)) <= 2.0
    assert raised.value.report["duration_ms"] < 3000  # the handler ended before the platform's timeout
    osra_pid = int(pid_file.read_text())
    assert not _running(osra_pid)


@pytest.mark.timeout(120)
def test_cloud_missing_osra_says_how_to_install(start_cloud, tmp_path, pair):
    functions = tmp_path / "functions"
    copy_function(functions, env={"OSRA_BIN": str(tmp_path / "no-such-osra")})
    cloud = start_cloud(functions)
    with cloud.client() as client:
        with pytest.raises(FunctionError) as raised:
            client.invoke("image-molecules", event_for(pair, *panel_centre(0)), timeout=30)
    assert raised.value.error["type"] == "OsraNotInstalled"
    assert "apt-get install osra" in raised.value.error["message"]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
