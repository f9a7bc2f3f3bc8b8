"""Caffe's data inputs: Data layers on LMDBs of Datum records, transform_param.mean_file
(BlobProto mean images) and the ImageData layer (image lists read with Pillow).

The golden cases (tests/golden/data/, written by real Caffe) run a Caffe LMDB through a Data
layer in the TEST phase and compare the tops bit for bit. The other cases write their own
LMDBs (Datum messages from netspec's caffe_pb2) and images.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from netspec.backend import Backend
from netspec.errors import DataError, SpecError
from netspec.net import Net
from netspec.spec import load_net, loads_net

GOLDEN = Path(__file__).parent / "golden" / "data"
F32 = Backend(np, np.float32)

Image = pytest.importorskip("PIL.Image", reason="images need Pillow: pip install 'netspec[caffe]'")


def _lmdb():
    return pytest.importorskip("lmdb", reason="reading LMDBs needs the 'lmdb' package: "
                                              "pip install 'netspec[caffe]'")


def _pb2():
    pytest.importorskip("google.protobuf", reason="Caffe's messages need protobuf: "
                                                  "pip install 'netspec[caffe]'")
    from netspec.caffe import pb2

    return pb2()


def _net(folder: Path, layers: list[dict], phase="TEST", seed=0, name="net.yaml") -> Net:
    path = folder / name
    path.write_text(yaml.safe_dump({"name": "n", "layer": layers}))
    return Net(load_net(path), phase, F32, np.random.default_rng(seed))


def _data_layer(source, batch=4, transform=None, **data_param):
    layer = {"name": "d", "type": "Data", "top": ["data", "label"],
             "data_param": {"source": str(source), "batch_size": batch, **data_param}}
    if transform is not None:
        layer["transform_param"] = transform
    return layer


def _write_lmdb(path: Path, records: dict[bytes, bytes]) -> Path:
    lmdb = _lmdb()
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k, v in records.items():
            txn.put(k, v)
    env.close()
    return path


def _raw_datum(img: np.ndarray, label: int) -> bytes:
    d = _pb2().Datum(channels=img.shape[0], height=img.shape[1], width=img.shape[2],
                     data=np.ascontiguousarray(img, dtype=np.uint8).tobytes(), label=label)
    return d.SerializeToString()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bgr(rgb_hwc: np.ndarray) -> np.ndarray:
    """What Caffe (OpenCV) makes of an RGB image: B, G, R planes."""
    return rgb_hwc[:, :, ::-1].transpose(2, 0, 1)


# -- the golden Caffe LMDB -------------------------------------------------------------------

@pytest.mark.parametrize("case", ["data_meanvalue_crop", "data_meanfile_crop"])
def test_caffe_lmdb_reproduces_caffe_data_layer(case):
    """Caffe's own LMDB, prototxt (converted) and mean.binaryproto: the same tops, bit for bit."""
    _pb2()
    _lmdb()
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.port import net_yaml

    _, msg, _ = ptx.read(GOLDEN / f"{case}.prototxt")
    text, _, _, _ = net_yaml(msg, str(GOLDEN / f"{case}.prototxt"))
    net = Net(loads_net(text, str(GOLDEN / f"{case}.yaml")), "TEST", F32)
    want = np.load(GOLDEN / f"{case}.npz")
    for _ in range(2):                       # 4 records, batch 4: the second batch wraps around
        net.forward()
        got = net.blobs["data"].data
        assert got.dtype == np.float32 and got.shape == (4, 3, 6, 6)
        np.testing.assert_array_equal(got, want["data"])
        np.testing.assert_array_equal(net.blobs["label"].data, want["label"])


def test_caffe_lmdb_records_are_the_raw_images():
    _pb2()
    _lmdb()
    from netspec.data import open_source

    ds = open_source(str(GOLDEN / "tiny_lmdb"), backend="LMDB")
    want = np.load(GOLDEN / "data_meanvalue_crop.npz")
    assert ds.data.dtype == np.uint8
    np.testing.assert_array_equal(ds.data, want["images"])
    np.testing.assert_array_equal(ds.label, [0, 1, 2, 3])


def test_mean_file_is_caffes_mean_image():
    _pb2()
    from netspec.data.sources import load_mean_file

    mean = load_mean_file(GOLDEN / "mean.binaryproto")
    images = np.load(GOLDEN / "data_meanfile_crop.npz")["images"]
    assert mean.shape == (3, 10, 10) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, images.astype(np.float64).mean(axis=0), rtol=0, atol=1e-4)


def _caffe_transform(img, mean, scale, crop, h_off, w_off, mirror):
    """Caffe's DataTransformer::Transform(Datum) loop, literally (float32)."""
    c_n, h_n, w_n = img.shape
    out = np.empty((c_n, crop, crop), np.float32)
    for c in range(c_n):
        for h in range(crop):
            for w in range(crop):
                top_w = crop - 1 - w if mirror else w
                x = np.float32(img[c, h_off + h, w_off + w])
                out[c, h, top_w] = (x - np.float32(mean[c, h_off + h, w_off + w])) * np.float32(scale)
    return out


def test_mean_file_crops_and_mirrors_with_the_image_in_train(tmp_path):
    """TRAIN: random crop and mirror; every output is Caffe's loop at some offset/mirror."""
    _pb2()
    _lmdb()
    shutil.copytree(GOLDEN / "tiny_lmdb", tmp_path / "db")
    shutil.copy(GOLDEN / "mean.binaryproto", tmp_path)
    from netspec.data.sources import load_mean_file

    mean = load_mean_file(tmp_path / "mean.binaryproto")
    images = np.load(GOLDEN / "data_meanfile_crop.npz")["images"]
    scale = 0.0078125
    net = _net(tmp_path, [_data_layer("db", backend="LMDB", transform={
        "crop_size": 6, "mirror": True, "mean_file": "mean.binaryproto", "scale": scale})],
        phase="TRAIN", seed=3)
    seen = set()
    for _ in range(6):
        net.forward()
        for i, got in enumerate(net.blobs["data"].data):
            match = [(ho, wo, m) for ho in range(5) for wo in range(5) for m in (False, True)
                     if np.array_equal(got, _caffe_transform(images[i], mean, scale, 6, ho, wo, m))]
            assert match, f"image {i}: no crop offset/mirror gives Caffe's values"
            seen.update(match)
    assert len({m for _, _, m in seen}) == 2 and len({(h, w) for h, w, _ in seen}) > 3


# -- LMDBs written here ----------------------------------------------------------------------

def test_lmdb_of_encoded_png_datums(tmp_path):
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) for _ in range(3)]
    P = _pb2()
    records = {}
    for i, key in enumerate([b"c", b"a", b"b"]):       # LMDB keeps keys sorted: a, b, c
        records[key] = P.Datum(data=_png(rgb[i]), encoded=True, label=10 + i).SerializeToString()
    _write_lmdb(tmp_path / "db", records)
    net = _net(tmp_path, [_data_layer("db", batch=3, backend="LMDB")])
    net.forward()
    assert net.blobs["data"].shape == (3, 3, 5, 7)
    order = [1, 2, 0]
    np.testing.assert_array_equal(net.blobs["data"].data, np.stack([_bgr(rgb[i]) for i in order]))
    np.testing.assert_array_equal(net.blobs["label"].data, [11, 12, 10])

    # force_gray decodes to one plane (ITU-R 601 luma, as OpenCV's grey conversion)
    grey = _net(tmp_path, [_data_layer("db", batch=3, backend="LMDB",
                                       transform={"force_gray": True})], name="grey.yaml")
    grey.forward()
    want = np.stack([np.asarray(Image.fromarray(rgb[i]).convert("L"))[None] for i in order])
    np.testing.assert_array_equal(grey.blobs["data"].data, want)


def test_lmdb_grey_png_stays_grey_and_force_color_makes_three_planes(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _write_lmdb(tmp_path / "db", {b"0": _pb2().Datum(data=_png(g), encoded=True, label=1)
                                  .SerializeToString()})
    net = _net(tmp_path, [_data_layer("db", batch=2, backend="LMDB")])
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, np.stack([g[None], g[None]]))
    color = _net(tmp_path, [_data_layer("db", batch=1, backend="LMDB",
                                        transform={"force_color": True})], name="c.yaml")
    color.forward()
    np.testing.assert_array_equal(color.blobs["data"].data[0], np.stack([g, g, g]))


def test_lmdb_raw_and_float_data_datums_with_mean_file(tmp_path):
    P = _pb2()
    imgs = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3) * 1.5
    recs = {}
    for i, img in enumerate(imgs):
        d = P.Datum(channels=2, height=3, width=3, label=i)
        d.float_data.extend(img.ravel().tolist())
        recs[f"{i:08d}".encode()] = d.SerializeToString()
    _write_lmdb(tmp_path / "db", recs)
    mean = np.full((1, 2, 3, 3), 0.25, np.float32)
    mean[0, 1] = np.arange(9).reshape(3, 3)
    blob = P.BlobProto(num=1, channels=2, height=3, width=3)      # the legacy 4-D shape
    blob.data.extend(mean.ravel().tolist())
    (tmp_path / "m.binaryproto").write_bytes(blob.SerializeToString())
    net = _net(tmp_path, [_data_layer("db", batch=2, backend="LMDB", transform={
        "mean_file": "m.binaryproto", "crop_size": 1, "scale": 2})])
    net.forward()
    want = (imgs - mean[0])[:, :, 1:2, 1:2] * 2
    np.testing.assert_array_equal(net.blobs["data"].data, want)


# -- LMDB and mean_file errors ----------------------------------------------------------------

def _build_error(tmp_path, layer, cls=DataError, phase="TEST") -> str:
    with pytest.raises(cls) as e:
        _net(tmp_path, [layer], phase=phase)
    return str(e.value)


def test_lmdb_errors_name_the_layer(tmp_path):
    _pb2()
    _lmdb()
    msg = _build_error(tmp_path, _data_layer("nowhere_lmdb", backend="LMDB"))
    assert "layer 'd' (Data)" in msg and "LMDB not found" in msg and "nowhere_lmdb" in msg

    (tmp_path / "empty_dir").mkdir()
    msg = _build_error(tmp_path, _data_layer("empty_dir", backend="LMDB"))
    assert "layer 'd'" in msg and "no data.mdb" in msg

    _write_lmdb(tmp_path / "bad", {b"0": _raw_datum(np.zeros((1, 2, 2)), 0), b"1": b"\xff\xff\xff\xff"})
    msg = _build_error(tmp_path, _data_layer("bad", backend="LMDB"))
    assert "layer 'd'" in msg and "record '1' is not a Caffe Datum" in msg

    short = _pb2().Datum(channels=3, height=2, width=2, data=b"\x00" * 5).SerializeToString()
    _write_lmdb(tmp_path / "short", {b"k": short})
    msg = _build_error(tmp_path, _data_layer("short", backend="LMDB"))
    assert "record 'k'" in msg and "5 data bytes" in msg and "12" in msg

    _write_lmdb(tmp_path / "mixed", {b"0": _raw_datum(np.zeros((1, 2, 2)), 0),
                                     b"1": _raw_datum(np.zeros((1, 3, 2)), 0)})
    msg = _build_error(tmp_path, _data_layer("mixed", backend="LMDB"))
    assert "record '1' has shape (1, 3, 2)" in msg

    _write_lmdb(tmp_path / "png", {b"0": _pb2().Datum(data=b"not a png", encoded=True)
                                   .SerializeToString()})
    msg = _build_error(tmp_path, _data_layer("png", backend="LMDB"))
    assert "record '0'" in msg and "cannot decode" in msg

    _write_lmdb(tmp_path / "none", {})
    assert "no records" in _build_error(tmp_path, _data_layer("none", backend="LMDB"))


def test_lmdb_needs_backend_lmdb(tmp_path):
    """An LMDB is read only when the file says backend: LMDB (Caffe's default is LEVELDB);
    LevelDB sources are tested in test_leveldb.py."""
    _lmdb()
    shutil.copytree(GOLDEN / "tiny_lmdb", tmp_path / "db")
    msg = _build_error(tmp_path, _data_layer("db"))
    assert "layer 'd'" in msg and "set data_param.backend: LMDB" in msg
    msg = _build_error(tmp_path, _data_layer("db", backend="LEVELDB"))
    assert "is a Caffe LMDB" in msg and "set data_param.backend: LMDB" in msg


def test_lmdb_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"")   # never opened: the import fails first
    monkeypatch.setitem(sys.modules, "lmdb", None)
    msg = _build_error(tmp_path, _data_layer("db", backend="LMDB"))
    assert "layer 'd' (Data)" in msg and "pip install 'netspec[caffe]'" in msg and "lmdb" in msg


def test_mean_file_errors(tmp_path):
    _pb2()
    _lmdb()
    shutil.copytree(GOLDEN / "tiny_lmdb", tmp_path / "db")
    msg = _build_error(tmp_path, _data_layer("db", backend="LMDB",
                                             transform={"mean_file": "no.binaryproto"}))
    assert "layer 'd'" in msg and "mean file not found" in msg and "transform_param.mean_file" in msg

    (tmp_path / "junk.binaryproto").write_bytes(b"\xff\xfe garbage")
    msg = _build_error(tmp_path, _data_layer("db", backend="LMDB",
                                             transform={"mean_file": "junk.binaryproto"}))
    assert "not a binary BlobProto" in msg

    blob = _pb2().BlobProto()
    blob.shape.dim.extend([1, 3, 4, 4])
    blob.data.extend([0.0] * 48)
    (tmp_path / "small.binaryproto").write_bytes(blob.SerializeToString())
    msg = _build_error(tmp_path, _data_layer("db", backend="LMDB",
                                             transform={"mean_file": "small.binaryproto"}))
    assert "the mean image is 3×4×4 but the records are 3×10×10" in msg

    shutil.copy(GOLDEN / "mean.binaryproto", tmp_path)
    msg = _build_error(tmp_path, _data_layer("db", backend="LMDB", transform={
        "mean_file": "mean.binaryproto", "mean_value": [1]}), cls=SpecError)
    assert "not both" in msg


# -- ImageData -------------------------------------------------------------------------------

def _save(path: Path, arr: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _image_layer(source, batch=2, transform=None, **param):
    layer = {"name": "img", "type": "ImageData", "top": ["data", "label"],
             "image_data_param": {"source": str(source), "batch_size": batch, **param}}
    if transform is not None:
        layer["transform_param"] = transform
    return layer


def _images(tmp_path, n=5, size=(4, 6), folder="imgs"):
    rng = np.random.default_rng(1)
    imgs = [_save(tmp_path / folder / f"im {i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
            for i in range(n)]
    return imgs


def test_image_data_reads_in_list_order_as_bgr(tmp_path):
    imgs = _images(tmp_path)
    # paths may hold spaces: Caffe splits each line at its last space
    (tmp_path / "list.txt").write_text("".join(f"imgs/im {i}.png {7 * i}\n" for i in range(5)))
    net = _net(tmp_path, [_image_layer("list.txt", batch=3)])
    assert net.blobs["data"].shape == (3, 3, 4, 6) and net.blobs["label"].shape == (3,)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, np.stack([_bgr(imgs[i]) for i in range(3)]))
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 7, 14])
    net.forward()                          # wraps around at the end of the list, like Caffe
    np.testing.assert_array_equal(net.blobs["label"].data, [21, 28, 0])
    np.testing.assert_array_equal(net.blobs["data"].data[2], _bgr(imgs[0]))


def test_image_data_grey_and_root_folder(tmp_path):
    imgs = _images(tmp_path, n=2, folder="data/pics")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "l.txt").write_text("im 1.png 1\nim 0.png 0\n")
    net = _net(tmp_path, [_image_layer("lists/l.txt", batch=2, is_color=False,
                                       root_folder="data/pics/")])
    net.forward()
    want = np.stack([np.asarray(Image.fromarray(imgs[i]).convert("L"))[None] for i in (1, 0)])
    assert net.blobs["data"].shape == (2, 1, 4, 6)
    np.testing.assert_array_equal(net.blobs["data"].data, want)


def test_image_data_resize_is_opencv_inter_linear(tmp_path):
    from netspec.data.image_list import resize_linear

    # upscaling 2 -> 4: OpenCV gives 0, 25, 75, 100 (pixel centres aligned, edges clamped)
    np.testing.assert_array_equal(resize_linear(np.array([[[0, 100]]], np.uint8), 1, 4),
                                  [[[0, 25, 75, 100]]])
    # halving: each output pixel is the mean of a 2x2 block, rounded half up
    a = np.random.default_rng(0).integers(0, 256, (3, 6, 8)).astype(np.uint8)
    block = a.reshape(3, 3, 2, 4, 2).astype(np.float64).mean(axis=(2, 4))
    np.testing.assert_array_equal(resize_linear(a, 3, 4), np.floor(block + 0.5))

    img = np.zeros((4, 4, 3), np.uint8)
    img[:, :2] = (255, 0, 0)     # red left half, blue right half
    img[:, 2:] = (0, 0, 255)
    _save(tmp_path / "rb.png", img)
    (tmp_path / "list.txt").write_text("rb.png 3\n")
    net = _net(tmp_path, [_image_layer("list.txt", batch=1, new_height=2, new_width=2)])
    net.forward()
    # BGR planes: blue is plane 0 (right column), red plane 2 (left column)
    np.testing.assert_array_equal(net.blobs["data"].data[0],
                                  [[[0, 255], [0, 255]], [[0, 0], [0, 0]], [[255, 0], [255, 0]]])


def test_image_data_shuffle_is_reproducible_by_seed(tmp_path):
    _images(tmp_path, n=6, size=(2, 2))
    (tmp_path / "list.txt").write_text("".join(f"imgs/im {i}.png {i}\n" for i in range(6)))

    def labels(seed, batches=4):
        net = _net(tmp_path, [_image_layer("list.txt", batch=3, shuffle=True)], seed=seed)
        out = []
        for _ in range(batches):
            net.forward()
            out.extend(int(v) for v in net.blobs["label"].data)
        return out

    a, b = labels(5), labels(5)
    assert a == b                                           # same seed, same order
    assert sorted(a[:6]) == list(range(6)) and sorted(a[6:]) == list(range(6))  # every pass
    assert a[:6] != list(range(6)) or a[6:] != list(range(6))                  # shuffled
    assert any(labels(s) != a for s in (6, 7, 8))


def test_image_data_transform_and_rand_skip(tmp_path):
    imgs = _images(tmp_path, n=3, size=(5, 5))
    (tmp_path / "list.txt").write_text("".join(f"imgs/im {i}.png {i}\n" for i in range(3)))
    net = _net(tmp_path, [_image_layer("list.txt", batch=3, transform={
        "crop_size": 3, "mean_value": [1, 2, 3], "scale": 0.5})])
    net.forward()
    want = (np.stack([_bgr(im) for im in imgs]).astype(np.float32)[:, :, 1:4, 1:4]
            - np.float32([1, 2, 3])[:, None, None]) * np.float32(0.5)
    np.testing.assert_array_equal(net.blobs["data"].data, want)

    skipped = _net(tmp_path, [_image_layer("list.txt", batch=1, rand_skip=3)], seed=2)
    first = int(np.random.default_rng(2).integers(3))
    skipped.forward()
    assert skipped.blobs["label"].data[0] == first


def test_image_data_sizes_may_differ_with_crop(tmp_path):
    rng = np.random.default_rng(0)
    a = _save(tmp_path / "a.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    b = _save(tmp_path / "b.png", rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    (tmp_path / "list.txt").write_text("a.png 0\nb.png 1\n")
    net = _net(tmp_path, [_image_layer("list.txt", batch=2, transform={"crop_size": 2})])
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], _bgr(a)[:, 1:3, 1:3])
    np.testing.assert_array_equal(net.blobs["data"].data[1], _bgr(b)[:, 2:4, 1:3])
    plain = _net(tmp_path, [_image_layer("list.txt", batch=2)], name="plain.yaml")
    with pytest.raises(DataError) as e:
        plain.forward()
    assert "layer 'img' (ImageData)" in str(e.value) and "b.png" in str(e.value)
    assert "line 2" in str(e.value)


def test_image_data_state_dict_resumes(tmp_path):
    _images(tmp_path, n=5, size=(2, 2))
    (tmp_path / "list.txt").write_text("".join(f"imgs/im {i}.png {i}\n" for i in range(5)))
    net = _net(tmp_path, [_image_layer("list.txt", batch=2, shuffle=True)], seed=4)
    for _ in range(3):
        net.forward()
    state = {k: np.asarray(v) for k, v in net.layer_by_name("img").state_dict().items()}
    rng_state = net.rng.bit_generator.state
    expect = []
    for _ in range(4):
        net.forward()
        expect.append(net.blobs["label"].data.copy())
    other = _net(tmp_path, [_image_layer("list.txt", batch=2, shuffle=True)], seed=9)
    other.layer_by_name("img").load_state_dict(state)
    other.rng.bit_generator.state = rng_state
    for e in expect:
        other.forward()
        np.testing.assert_array_equal(other.blobs["label"].data, e)


def test_image_data_errors_name_the_layer(tmp_path):
    _images(tmp_path, n=1, size=(2, 2))
    (tmp_path / "list.txt").write_text("imgs/im 0.png 0\nimgs/gone.png 1\n")
    msg = _build_error(tmp_path, _image_layer("list.txt"))
    assert "layer 'img' (ImageData)" in msg and "list.txt:2" in msg and "gone.png" in msg
    assert "not found" in msg

    msg = _build_error(tmp_path, _image_layer("nolist.txt"))
    assert "layer 'img'" in msg and "image list not found" in msg

    (tmp_path / "bad.txt").write_text("imgs/im 0.png zero\n")
    msg = _build_error(tmp_path, _image_layer("bad.txt"))
    assert "bad.txt:1" in msg and "not an integer" in msg

    (tmp_path / "empty.txt").write_text("\n\n")
    assert "empty" in _build_error(tmp_path, _image_layer("empty.txt"))

    msg = _build_error(tmp_path, _image_layer("list.txt", new_height=4), cls=SpecError)
    assert "new_height and new_width together" in msg

    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "c.txt").write_text("corrupt.png 0\n")
    msg = _build_error(tmp_path, _image_layer("c.txt"))
    assert "layer 'img'" in msg and "corrupt.png" in msg and "cannot read image" in msg


def test_image_data_from_a_caffe_prototxt(tmp_path):
    """A converted Caffe ImageData layer builds and reads (V1 transform fields moved)."""
    _pb2()
    from netspec.caffe import prototxt as ptx
    from netspec.caffe.port import net_yaml

    imgs = _images(tmp_path, n=2, size=(3, 3))
    (tmp_path / "list.txt").write_text("im 0.png 4\nim 1.png 5\n")
    src = tmp_path / "net.prototxt"
    src.write_text('name: "x" layers { name: "img" type: IMAGE_DATA top: "data" top: "label" '
                   'image_data_param { source: "list.txt" batch_size: 2 root_folder: "imgs/" '
                   'scale: 0.5 } }')
    _, msg, _ = ptx.read(src)
    text, data, _, _ = net_yaml(msg, str(src))
    assert data["layer"][0]["transform_param"] == {"scale": 0.5}
    net = Net(loads_net(text, str(tmp_path / "net.yaml")), "TEST", F32)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data,
                                  np.stack([_bgr(im) for im in imgs]).astype(np.float32) * 0.5)


# -- DenseImageData (SegNet, alexgkendall/caffe-segnet) ------------------------------------------

def _dense_layer(source, batch=2, transform=None, **param):
    layer = {"name": "dense", "type": "DenseImageData", "top": ["data", "label"],
             "dense_image_data_param": {"source": str(source), "batch_size": batch, **param}}
    if transform is not None:
        layer["transform_param"] = transform
    return layer


def _pairs(tmp_path, n=3, size=(4, 6), classes=5):
    """``n`` (RGB image, grey label image) PNG pairs and a list of them."""
    rng = np.random.default_rng(2)
    pairs = [(_save(tmp_path / f"im{i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8)),
              _save(tmp_path / f"lab{i}.png", rng.integers(0, classes, size, dtype=np.uint8)))
             for i in range(n)]
    (tmp_path / "list.txt").write_text("".join(f"im{i}.png\tlab{i}.png\n" for i in range(n)))
    return pairs


def test_dense_image_data_reads_image_and_label_pairs(tmp_path):
    pairs = _pairs(tmp_path)
    net = _net(tmp_path, [_dense_layer("list.txt", transform={"scale": 0.5, "mean_value": [1, 2, 3]})])
    assert net.blobs["data"].shape == (2, 3, 4, 6) and net.blobs["label"].shape == (2, 1, 4, 6)
    for first in (0, 2):                  # the second batch wraps around the list
        net.forward()
        idx = [first % 3, (first + 1) % 3]
        mean = np.array([1, 2, 3], np.float32).reshape(3, 1, 1)
        np.testing.assert_array_equal(net.blobs["data"].data,
                                      np.stack([(_bgr(pairs[i][0]) - mean) * 0.5 for i in idx]))
        # the label keeps its pixel values: no mean, no scale
        np.testing.assert_array_equal(net.blobs["label"].data,
                                      np.stack([pairs[i][1][None] for i in idx]))


def test_dense_image_data_resizes_labels_with_nearest_neighbours(tmp_path):
    """Image with INTER_LINEAR, label image with INTER_NEAREST (checked against OpenCV where
    installed): no label value is invented by interpolation."""
    from netspec.data.image_list import resize_linear, resize_nearest
    pairs = _pairs(tmp_path, n=1, size=(5, 7))
    net = _net(tmp_path, [_dense_layer("list.txt", batch=1, new_height=9, new_width=4)])
    net.forward()
    image, label = pairs[0]
    rows = np.floor(np.arange(9) * 5 / 9).astype(int)
    cols = np.floor(np.arange(4) * 7 / 4).astype(int)
    np.testing.assert_array_equal(net.blobs["label"].data[0, 0], label[rows][:, cols])
    np.testing.assert_array_equal(net.blobs["data"].data[0], resize_linear(_bgr(image), 9, 4))
    cv2 = pytest.importorskip("cv2")
    for h, w in [(9, 4), (3, 11), (5, 7), (2, 2)]:
        np.testing.assert_array_equal(resize_nearest(label[None], h, w)[0],
                                      cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST))


def test_dense_image_data_mirrors_and_crops_image_and_label_together(tmp_path):
    """The image is its label image plus 100 in every plane, so any move of one without the
    other shows; both mirror and crop are drawn per item."""
    rng = np.random.default_rng(3)
    for i in range(4):
        lab = rng.integers(0, 50, (6, 8), dtype=np.uint8)
        _save(tmp_path / f"lab{i}.png", lab)
        _save(tmp_path / f"im{i}.png", np.repeat(lab[:, :, None] + 100, 3, axis=2))
    (tmp_path / "list.txt").write_text("".join(f"im{i}.png lab{i}.png\n" for i in range(4)))
    net = _net(tmp_path, [_dense_layer("list.txt", batch=4, mirror=True, crop_height=3,
                                       crop_width=5, shuffle=True)], phase="TRAIN", seed=1)
    assert net.blobs["data"].shape == (4, 3, 3, 5) and net.blobs["label"].shape == (4, 1, 3, 5)
    seen_flip = False
    for _ in range(5):
        net.forward()
        data, label = net.blobs["data"].data, net.blobs["label"].data
        np.testing.assert_array_equal(data, np.repeat(label + 100, 3, axis=1))
        seen_flip |= any(
            not any((label[k, 0] == np.asarray(Image.open(tmp_path / f"lab{i}.png"))[
                r:r + 3, c:c + 5]).all() for i in range(4) for r in range(4) for c in range(4))
            for k in range(4))
    assert seen_flip                     # some items were mirrored


def test_dense_image_data_errors_name_the_layer(tmp_path):
    _pairs(tmp_path, n=1)
    _save(tmp_path / "small.png", np.zeros((3, 6), np.uint8))
    (tmp_path / "mismatch.txt").write_text("im0.png small.png\n")
    msg = _build_error(tmp_path, _dense_layer("mismatch.txt"))
    assert "layer 'dense' (DenseImageData)" in msg and "label image must have the image's height" in msg

    (tmp_path / "one.txt").write_text("im0.png\n")
    msg = _build_error(tmp_path, _dense_layer("one.txt"))
    assert "one.txt:1" in msg and "expected 'image label_image'" in msg

    (tmp_path / "gone.txt").write_text("im0.png gone.png\n")
    msg = _build_error(tmp_path, _dense_layer("gone.txt"))
    assert "gone.txt:1" in msg and "gone.png" in msg and "not found" in msg

    msg = _build_error(tmp_path, _dense_layer("list.txt", crop_height=2), cls=SpecError)
    assert "crop_height and crop_width together" in msg
    msg = _build_error(tmp_path, _dense_layer("list.txt", crop_height=9, crop_width=2),
                       cls=SpecError)
    assert "crop 9×2 is larger than the images (4×6)" in msg
    for transform, field in [({"mirror": True}, "mirror"), ({"crop_size": 2}, "crop_size")]:
        msg = _build_error(tmp_path, _dense_layer("list.txt", transform=transform), cls=SpecError)
        assert f"transform_param.{field} would move the image without its label" in msg


def test_dense_image_data_needs_batch_size_and_a_string_source(tmp_path):
    from netspec.spec import parse_net
    with pytest.raises(SpecError, match="batch_size"):
        parse_net({"name": "n", "layer": [{"name": "d", "type": "DenseImageData",
                                           "top": ["data", "label"],
                                           "dense_image_data_param": {"source": "l.txt"}}]})
    with pytest.raises(SpecError, match="source"):
        parse_net({"name": "n", "layer": [{"name": "d", "type": "DenseImageData",
                                           "top": ["data", "label"], "dense_image_data_param": {
                                               "source": ["a", "b"], "batch_size": 2}}]})
