"""Model-file validation: missing, truncated, corrupt and wrong model files, metadata, and shipped checksums.

Every bad model must give ``cv2_learned.ModelError`` naming the file and the problem, at create() time, on every
backend; never a crash, and never a failure deferred to the first detectAndCompute().
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import cv2_learned
from cv2_learned import feature2d, runtime
from conftest import SHIPPED, shipped_models_present

ModelError = cv2_learned.ModelError
BACKENDS = ["onnxruntime", "opencv"]
FILES = ("detector.onnx", "descriptor.onnx")


@pytest.fixture
def copy_model(model_dir, tmp_path):
    """copy_model(name, **replacements) -> a folder with the model under test, some files replaced by bytes."""
    def make(name="m", **replace):
        d = tmp_path / name
        d.mkdir()
        for f in FILES:
            shutil.copy(os.path.join(model_dir, f), d / f)
        for key, data in replace.items():
            f = d / (key + ".onnx")
            if data is None:
                f.unlink()
            else:
                f.write_bytes(data)
        return str(d)
    return make


@pytest.fixture(scope="module")
def model_bytes(model_dir):
    return {f.split(".")[0]: open(os.path.join(model_dir, f), "rb").read() for f in FILES}


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (64, 80), dtype=np.uint8)


def create(folder, backend="onnxruntime", **kw):
    return cv2_learned.create(model=folder, backend=backend, device="cpu", **kw)


# ----------------------------------------------------------------------------- the model under test loads
@pytest.mark.parametrize("backend", BACKENDS)
def test_model_loads(model_arg, backend, image):
    d = create(model_arg, backend)
    assert not d.empty()
    kps, desc = d.detectAndCompute(image, None)
    assert desc.shape == (len(kps), d.descriptorSize())


def test_model_given_as_file_or_pathlike(model_dir, image):
    import pathlib
    a = create(os.path.join(model_dir, "detector.onnx"))
    b = create(pathlib.Path(model_dir))
    assert a.descriptorSize() == b.descriptorSize()


# ----------------------------------------------------------------------------- missing
@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_folder(tmp_path, backend):
    with pytest.raises(ModelError, match="not found"):
        create(str(tmp_path / "nowhere"), backend)


@pytest.mark.parametrize("missing", ["detector", "descriptor"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_file(copy_model, missing, backend):
    folder = copy_model(**{missing: None})
    with pytest.raises(ModelError, match=f"not found.*{missing}.onnx"):
        create(folder, backend)


def test_empty_folder(tmp_path):
    with pytest.raises(ModelError, match="detector.onnx"):
        create(str(tmp_path))


# ----------------------------------------------------------------------------- truncated and corrupt
@pytest.mark.parametrize("which", ["detector", "descriptor"])
@pytest.mark.parametrize("keep", [0, 1, 10, 100, 0.5, -1])
@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated(copy_model, model_bytes, which, keep, backend):
    data = model_bytes[which]
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    folder = copy_model(**{which: data[:n]})
    with pytest.raises(ModelError, match=f"{which}.onnx"):
        create(folder, backend)


@pytest.mark.parametrize("content", ["random", "text", "png", "zeros"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_not_a_model(copy_model, content, backend):
    data = {"random": np.random.default_rng(0).bytes(4096), "text": b"not a model\n" * 50,
            "png": b"\x89PNG\r\n\x1a\n" + bytes(200), "zeros": bytes(4096)}[content]
    folder = copy_model(detector=data)
    with pytest.raises(ModelError, match="detector.onnx"):
        create(folder, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flipped_bytes_never_crash(copy_model, model_bytes, image, backend):
    """Corruption inside the weights cannot be seen without a checksum: load and run, or a clear error."""
    data = bytearray(model_bytes["detector"])
    rng = np.random.default_rng(1)
    for pos in rng.integers(len(data) // 4, len(data), 8):
        data[pos] ^= 0xFF
    folder = copy_model(detector=bytes(data))
    try:
        d = create(folder, backend)
        d.detectAndCompute(image, None)
    except (ModelError, ValueError, TypeError):
        pass


# ----------------------------------------------------------------------------- wrong model files
@pytest.mark.parametrize("backend", BACKENDS)
def test_swapped_models(copy_model, model_bytes, backend):
    folder = copy_model(detector=model_bytes["descriptor"], descriptor=model_bytes["detector"])
    with pytest.raises(ModelError, match="not a cv2_learned detector model"):
        create(folder, backend)
    folder = copy_model("d2", descriptor=model_bytes["detector"])
    with pytest.raises(ModelError, match="not a cv2_learned descriptor model"):
        create(folder, backend)


def edited(data: bytes, edit) -> bytes:
    """Apply ``edit(ModelProto)`` with the onnx package (tests using it skip without onnx)."""
    onnx = pytest.importorskip("onnx")
    m = onnx.load_from_string(data)
    edit(m)
    return m.SerializeToString()


def drop_meta(*keys):
    def edit(m):
        keep = [p for p in m.metadata_props if p.key not in keys]
        del m.metadata_props[:]
        m.metadata_props.extend(keep)
    return edit


def set_meta(key, value):
    def edit(m):
        for p in m.metadata_props:
            if p.key == key:
                p.value = value
                return
        p = m.metadata_props.add()
        p.key, p.value = key, value
    return edit


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_without_metadata(copy_model, model_bytes, backend):
    folder = copy_model(detector=edited(model_bytes["detector"], drop_meta("cv2_learned.kind")))
    with pytest.raises(ModelError, match="not a cv2_learned detector model"):
        create(folder, backend)


def rename_input(new):
    def edit(m):
        old = m.graph.input[0].name
        m.graph.input[0].name = new
        for n in m.graph.node:
            n.input[:] = [new if i == old else i for i in n.input]
    return edit


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_input_name(copy_model, model_bytes, backend):
    # Regression (backend "opencv"): runtime.py _open_dnn does not check the input/output names, so the model
    # loads and the first detectAndCompute fails with a cv2.error ("input 'image' is not found").
    folder = copy_model(detector=edited(model_bytes["detector"], rename_input("x")))
    with pytest.raises(ModelError, match="input"):
        create(folder, backend)


@pytest.mark.parametrize("which, key", [("detector", "level_sizes"), ("descriptor", "descriptor_size")])
def test_missing_metadata_key(copy_model, model_bytes, which, key):
    # Regression: detector.py / descriptor.py raise ValueError for a model file without its metadata; a model-file
    # problem should be a ModelError like every other one (callers catch ModelError).
    folder = copy_model(**{which: edited(model_bytes[which], drop_meta(key))})
    with pytest.raises(ModelError, match=key):
        create(folder)


@pytest.mark.parametrize("value", ["[1.0]", "not json", "[-1, 2, 3]"])
def test_bad_level_sizes(copy_model, model_bytes, value):
    folder = copy_model(detector=edited(model_bytes["detector"], set_meta("level_sizes", value)))
    with pytest.raises((ModelError, ValueError), match="level_sizes"):
        create(folder)


# ----------------------------------------------------------------------------- checksums (shipped models)
def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def manifest_entries(data: dict) -> dict:
    """{file name: entry} from a manifest: either {"files": {...}} or the entries at the top level."""
    files = data.get("files", data)
    return {k: v for k, v in files.items() if isinstance(v, dict) and "sha256" in v}


def test_shipped_manifest_matches_files():
    if not shipped_models_present():
        pytest.skip("no shipped models yet")
    manifest_path = SHIPPED / "manifest.json"
    assert manifest_path.is_file(), "shipped models need models/manifest.json"
    files = manifest_entries(json.loads(manifest_path.read_text()))
    for name in FILES:
        assert name in files, f"{name} is not listed in manifest.json"
    for name, entry in files.items():
        path = SHIPPED / name
        assert path.is_file(), f"manifest lists {name} but the file is missing"
        assert entry["sha256"] == sha256(path), f"{name}: checksum differs from manifest.json"
        size = entry.get("size", entry.get("bytes"))
        if size is not None:
            assert size == path.stat().st_size, f"{name}: size differs from manifest.json"


def test_runtime_verifies_shipped_checksums():
    """The runtime must find the shipped files in the manifest, otherwise it silently skips the checksum."""
    # Regression: the shipped manifest lists the files at the top level while runtime.load_manifest() reads
    # json["files"], so it returns {} and no shipped checksum is ever verified.
    if not shipped_models_present():
        pytest.skip("no shipped models yet")
    entries = runtime.load_manifest()
    for name in FILES:
        assert name in entries and entries[name].get("sha256") == sha256(SHIPPED / name), \
            f"runtime.load_manifest() has no (matching) entry for {name}: {sorted(entries)}"


@pytest.fixture
def fake_shipped(copy_model, monkeypatch):
    """A copy of the model treated as the shipped folder (its manifest is checked), with a manifest writer."""
    folder = copy_model("shipped")
    monkeypatch.setattr(runtime, "MODELS_DIR", folder)
    monkeypatch.setattr(feature2d, "MODELS_DIR", folder)
    real_load = runtime.load_manifest   # its default folder is bound at import time: point it at the copy
    monkeypatch.setattr(runtime, "load_manifest", lambda models_dir=folder: real_load(models_dir))

    def write_manifest(**override):
        files = {f: {"sha256": sha256(os.path.join(folder, f)), "size": os.path.getsize(os.path.join(folder, f))}
                 for f in FILES}
        for f, digest in override.items():
            files[f + ".onnx"]["sha256"] = digest
        with open(os.path.join(folder, "manifest.json"), "w") as fh:   # both layouts: {"files": ...} and top level
            json.dump(dict(files, files=files), fh)
    return folder, write_manifest


def test_checksum_ok(fake_shipped, image):
    folder, write_manifest = fake_shipped
    write_manifest()
    d = cv2_learned.create(device="cpu")   # model=None: the (fake) shipped folder
    assert d.detectAndCompute(image, None)[1].dtype == np.float32


@pytest.mark.parametrize("which", ["detector", "descriptor"])
def test_checksum_mismatch_after_modification(fake_shipped, which):
    folder, write_manifest = fake_shipped
    write_manifest()
    path = os.path.join(folder, which + ".onnx")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01   # one bit: still a loadable model, only the checksum can tell
    open(path, "wb").write(bytes(data))
    for model in (None, folder):
        with pytest.raises(ModelError, match=f"checksum mismatch.*{which}.onnx"):
            cv2_learned.create(model=model, device="cpu")


def test_checksum_mismatch_in_manifest(fake_shipped):
    folder, write_manifest = fake_shipped
    write_manifest(detector="0" * 64)
    with pytest.raises(ModelError, match="checksum"):
        cv2_learned.create(device="cpu")


def test_checksum_not_applied_to_user_folders(copy_model, model_bytes, image):
    """A user's own model folder has no manifest: it loads without a checksum."""
    folder = copy_model("user")
    assert not os.path.exists(os.path.join(folder, "manifest.json"))
    create(folder).detectAndCompute(image, None)
