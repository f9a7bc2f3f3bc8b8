"""Data layers on Caffe LevelDBs of Datum records (``data_param.backend: LEVELDB``, Caffe's
default): the same tops as the same records in an LMDB, key order, wrap-around, errors.

The databases are written here with plyvel and netspec's caffe_pb2 Datum messages.
"""

from __future__ import annotations

import io
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from test_caffe_data import _data_layer, _net, _pb2, _write_lmdb
from test_caffe_data import _raw_datum as _raw

from netspec.backend import Backend
from netspec.errors import DataError
from netspec.net import Net

plyvel = pytest.importorskip("plyvel", reason="LevelDBs need plyvel: pip install 'netspec[caffe]'")
pytest.importorskip("google.protobuf", reason="Caffe's messages need protobuf")
Image = pytest.importorskip("PIL.Image", reason="encoded records need Pillow")

F32 = Backend(np, np.float32)
_layer = partial(_data_layer, batch=3)


def _write_leveldb(path: Path, records: dict[bytes, bytes]) -> Path:
    db = plyvel.DB(str(path), create_if_missing=True)
    for k, v in records.items():
        db.put(k, v)
    db.close()
    return path


def _png(rgb: np.ndarray, label: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return _pb2().Datum(data=buf.getvalue(), encoded=True, label=label).SerializeToString()


def _error(tmp_path, layer) -> str:
    with pytest.raises(DataError) as e:
        _net(tmp_path, [layer])
    return str(e.value)


def _records(kind: str, n=5) -> dict[bytes, bytes]:
    rng = np.random.default_rng(7)
    keys = [f"{i:08d}".encode() for i in range(n)]
    rng.shuffle(keys)                       # written out of order: both databases sort the keys
    out = {}
    for k in keys:
        i = int(k)
        if kind == "raw":
            out[k] = _raw(rng.integers(0, 256, (3, 6, 7), dtype=np.uint8), 10 + i)
        else:
            out[k] = _png(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), 10 + i)
    return out


@pytest.mark.parametrize("kind", ["raw", "encoded"])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_leveldb_tops_equal_the_lmdb_path(tmp_path, kind, phase):
    records = _records(kind)
    _write_leveldb(tmp_path / "level", records)
    _write_lmdb(tmp_path / "lm", records)
    transform = {"crop_size": 4, "mirror": True, "mean_value": [1, 2, 3], "scale": 0.5}
    level = _net(tmp_path, [_layer("level", transform=transform, backend="LEVELDB")], phase, seed=3)
    lm = _net(tmp_path, [_layer("lm", transform=transform, backend="LMDB")], phase, seed=3,
              name="lm.yaml")
    for _ in range(4):                      # 5 records, batch 3: wraps around
        level.forward()
        lm.forward()
        np.testing.assert_array_equal(level.blobs["data"].data, lm.blobs["data"].data)
        np.testing.assert_array_equal(level.blobs["label"].data, lm.blobs["label"].data)
    assert level.blobs["data"].shape == (3, 3, 4, 4)


def test_leveldb_is_read_in_key_order_and_wraps_around(tmp_path):
    records = _records("raw")
    _write_leveldb(tmp_path / "db", records)
    net = _net(tmp_path, [_layer("db")])      # no backend: LEVELDB is Caffe's default
    labels = []
    for _ in range(4):
        net.forward()
        labels.append(net.blobs["label"].data.tolist())
    assert labels == [[10, 11, 12], [13, 14, 10], [11, 12, 13], [14, 10, 11]]
    P = _pb2()
    first = P.Datum()
    first.ParseFromString(records[b"00000000"])
    want = np.frombuffer(first.data, np.uint8).reshape(3, 6, 7)
    net2 = _net(tmp_path, [_layer("db", batch=1)], name="n2.yaml")
    net2.forward()
    np.testing.assert_array_equal(net2.blobs["data"].data[0], want)


def test_leveldb_is_read_once_for_train_and_test(tmp_path):
    from netspec.data import open_source

    _write_leveldb(tmp_path / "db", _records("raw"))
    a = open_source(str(tmp_path / "db"))
    b = open_source(str(tmp_path / "db"), backend="LEVELDB")
    assert a is b                           # LevelDB rewrote its log and manifest: still cached
    db = plyvel.DB(str(tmp_path / "db"))
    db.put(b"00000009", _raw(np.zeros((3, 6, 7), np.uint8), 99))
    db.close()
    c = open_source(str(tmp_path / "db"))
    assert len(c) == 6 and c.label[-1] == 99


def test_backend_mismatch_errors(tmp_path):
    _write_leveldb(tmp_path / "level", _records("raw"))
    msg = _error(tmp_path, _layer("level", backend="LMDB"))
    assert "layer 'd' (Data)" in msg and "is a Caffe LevelDB, not an LMDB" in msg
    assert "set data_param.backend: LEVELDB" in msg

    _write_lmdb(tmp_path / "lm", _records("raw"))
    for backend in ({}, {"backend": "LEVELDB"}):
        msg = _error(tmp_path, _layer("lm", **backend))
        assert "is a Caffe LMDB" in msg and "set data_param.backend: LMDB" in msg


def test_leveldb_errors_name_the_layer_and_the_database(tmp_path):
    msg = _error(tmp_path, _layer("nowhere", backend="LEVELDB"))
    assert "layer 'd' (Data)" in msg and "LevelDB not found" in msg and "nowhere" in msg

    (tmp_path / "empty_dir").mkdir()
    msg = _error(tmp_path, _layer("empty_dir", backend="LEVELDB"))
    assert "not a LevelDB" in msg and "CURRENT" in msg

    _write_leveldb(tmp_path / "bad", {b"a": _raw(np.zeros((1, 2, 2)), 0), b"b": b"\xff\xff\xff"})
    msg = _error(tmp_path, _layer("bad"))
    assert "record 'b' is not a Caffe Datum" in msg and str(tmp_path / "bad") in msg

    _write_leveldb(tmp_path / "none", {})
    assert "the LevelDB holds no records" in _error(tmp_path, _layer("none"))

    # LevelDB lets one handle open a database at a time (Caffe holds it while training)
    _write_leveldb(tmp_path / "held", _records("raw"))
    holder = plyvel.DB(str(tmp_path / "held"))
    try:
        msg = _error(tmp_path, _layer("held"))
        assert "cannot open LevelDB" in msg and "one process" in msg
    finally:
        holder.close()
    _net(tmp_path, [_layer("held")])          # and the failed open left it usable


def test_a_bad_record_leaves_the_leveldb_unlocked(tmp_path):
    _write_leveldb(tmp_path / "db", {b"a": b"\x00\x01garbage"})
    for _ in range(2):                      # the second open would fail if the first kept the lock
        assert "is not a Caffe Datum" in _error(tmp_path, _layer("db"))


def test_leveldb_without_plyvel_is_a_clear_error(tmp_path, monkeypatch):
    _write_leveldb(tmp_path / "db", _records("raw"))
    monkeypatch.setitem(sys.modules, "plyvel", None)
    msg = _error(tmp_path, _layer("db", batch=1, rand_skip=0))
    assert "layer 'd' (Data)" in msg and "'plyvel'" in msg and "pip install 'netspec[caffe]'" in msg


def test_converted_caffe_leveldb_net_builds(tmp_path):
    """A Caffe Data layer without backend (LEVELDB) converts, with a note, and reads its DB."""
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.port import net_yaml
    from netspec.spec import loads_net

    _write_leveldb(tmp_path / "mnist_leveldb", _records("raw"))
    src = tmp_path / "net.prototxt"
    src.write_text('name: "x" layer { name: "d" type: "Data" top: "data" top: "label" '
                   'data_param { source: "mnist_leveldb" batch_size: 2 } '
                   'transform_param { scale: 0.00390625 } }')
    _, msg, _ = ptx.read(src)
    text, _, report, _ = net_yaml(msg, str(src))
    assert any("is a LevelDB path" in w and "plyvel" in w for w in report.warnings)
    net = Net(loads_net(text, str(tmp_path / "net.yaml")), "TEST", F32)
    net.forward()
    assert net.blobs["data"].shape == (2, 3, 6, 7)
    np.testing.assert_array_equal(net.blobs["label"].data, [10, 11])
