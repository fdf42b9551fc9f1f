"""The disc viewer's decoders give the same pixel values as pydicom.

For each transfer syntax of PS3.5 the viewer shows (native little/big endian, deflated, JPEG
baseline/extended/lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE) and each photometric
interpretation (MONOCHROME1/2, RGB, YBR_FULL(_422), PALETTE COLOR), one file is decoded by
``discviewer/tools/decode-cli.mjs`` (``src/decode.js`` under node, with the same WebAssembly
decoders the page bundles) and compared with ``pydicom``'s ``pixel_array`` (pydicom 3
defaults: YBR converted to RGB, unused bits masked or sign-extended).

Files come from pydicom's own test data (shipped in its wheel) or are made here with pydicom
and numpy, DCMTK (``dcmcjpeg`` for JPEG lossless selection value 6, transfer syntax .57) and
OpenJPH's encoder (HTJ2K; pydicom decodes it with OpenJPEG, an independent decoder).

Lossless: exact equality. Lossy JPEG: the viewer uses libjpeg-turbo (8-bit) and the pdf.js
JpegImage of cornerstone's dicom-image-loader (12-bit, with its level-shift bias corrected in
``codecs.js``) where pydicom uses Pillow/libjpeg; inverse DCT and chroma upsampling round
differently, so the test allows a small maximum difference (``TOLERANCE``) and a mean
difference below one grey level. pydicom cannot decode its own 12-bit ``JPEG-lossy.dcm`` and
``JPGExtended.dcm`` without GDCM, so the 12-bit file is made with DCMTK's ``dcmcjpeg +ee``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    HTJ2K,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

ROOT = Path(__file__).resolve().parents[2]
VIEWER = ROOT / "discviewer"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        NODE is None or not (VIEWER / "node_modules" / "dicom-parser").is_dir(),
        reason="needs node and discviewer/node_modules (npm ci in discviewer/)",
    ),
]

# Maximum absolute difference allowed for lossy JPEG, per file (see module docstring).
TOLERANCE = {
    "SC_rgb_jpeg_dcmtk.dcm": 3,
    "SC_rgb_dcmtk_+eb+cy+np.dcm": 3,
    "SC_rgb_dcmtk_+eb+cr.dcm": 3,
    "SC_jpeg_no_color_transform.dcm": 3,
    "SC_jpeg_no_color_transform_2.dcm": 3,
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": 3,
    "SC_rgb_jpeg_lossy_gdcm.dcm": 3,
    "SC_rgb_small_odd_jpeg.dcm": 3,
    "SC_rgb_jpeg_app14_dcmd.dcm": 3,
    "examples_ybr_color.dcm": 3,
    "jpeg51_12bit": 2,
    "jpeg51_8bit": 3,
}

# pydicom's test files: one per transfer syntax / photometric / bit depth that it ships.
PYDICOM_FILES = [
    "CT_small.dcm",  # explicit VR LE, 16-bit signed, MONOCHROME2
    "MR_small_implicit.dcm",  # implicit VR LE
    "MR_small_bigendian.dcm",  # explicit VR BE, 16-bit
    "ExplVR_BigEnd.dcm",  # explicit VR BE, RGB 8-bit planar configuration 1
    "image_dfl.dcm",  # deflated
    "examples_overlay.dcm",  # 16-bit, 12 bits stored
    "examples_rgb_color.dcm",  # RGB native
    "SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422 native -> RGB
    "examples_palette.dcm",  # PALETTE COLOR indices
    "rtdose.dcm",  # 32-bit, multi-frame, implicit
    "rtdose_expb.dcm",  # 32-bit big endian multi-frame
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline YBR_FULL
    "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline YBR_FULL_422
    "SC_rgb_dcmtk_+eb+cr.dcm",  # JPEG baseline RGB
    "SC_jpeg_no_color_transform.dcm",  # JPEG baseline RGB, no colour transform, IDs 1 2 3
    "SC_jpeg_no_color_transform_2.dcm",  # same, another writer
    "SC_rgb_dcmtk_+eb+cy+n1.dcm",  # JPEG baseline YBR_FULL
    "SC_rgb_jpeg_lossy_gdcm.dcm",  # JPEG baseline YBR_FULL (GDCM)
    "SC_rgb_small_odd_jpeg.dcm",  # JPEG baseline, 3x3 odd size
    "SC_rgb_jpeg_app14_dcmd.dcm",  # JPEG baseline RGB, Adobe APP14 marker
    "examples_ybr_color.dcm",  # JPEG baseline, YBR_FULL_422, 30 frames
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1 (.70), RGB
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless, 16-bit signed
    "JPEGLSNearLossless_08.dcm",  # JPEG-LS near-lossless 8-bit
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless 16-bit
    "SC_rgb_jls_lossy_sample.dcm",  # JPEG-LS near-lossless RGB
    "SC_rgb_jls_lossy_line.dcm",  # JPEG-LS near-lossless RGB, line interleaved
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless, 16-bit signed
    "examples_jpeg2k.dcm",  # JPEG 2000 lossless, YBR_RCT
    "GDCMJ2K_TextGBR.dcm",  # JPEG 2000 lossless, YBR_RCT (GDCM)
    "JPEG2000.dcm",  # JPEG 2000 (.91), 16-bit signed
    "693_J2KI.dcm",  # JPEG 2000 (.91), 14 bits stored
    "J2K_pixelrep_mismatch.dcm",  # J2K unsigned stream, signed pixel representation
    "SC_rgb_gdcm_KY.dcm",  # JPEG 2000 (.91) RGB
    "MR_small_RLE.dcm",  # RLE 16-bit signed
    "SC_rgb_rle.dcm",  # RLE RGB 8-bit
    "SC_rgb_rle_16bit_2frame.dcm",  # RLE RGB 16-bit, 2 frames
    "SC_rgb_rle_32bit_2frame.dcm",  # RLE RGB 32-bit, 2 frames
    "rtdose_rle.dcm",  # RLE 32-bit, 15 frames
    "liver_1frame.dcm",  # 1 bit allocated (bit-packed)
    "SC_rgb_small_odd.dcm",  # RGB 3x3 (odd length, padded)
    "SC_rgb_small_odd_big_endian.dcm",  # RGB 3x3 big endian
    "MR_small_padded.dcm",  # pixel data with a trailing pad
    "MR_small_expb.dcm",  # big endian, another writer
    "SC_rgb_rle_32bit.dcm",  # RLE RGB 32-bit
    "liver_expb_1frame.dcm",  # 1 bit allocated, big endian
]


def _base(
    rows: int, cols: int, *, spp: int, bits: int, stored: int, signed: int, photometric: str, frames: int = 1
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Pixel^Test"
    ds.PatientID = "PIX1"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = signed
    ds.PhotometricInterpretation = photometric
    if spp > 1:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def _save(ds: Dataset, path: Path, ts: str = ExplicitVRLittleEndian) -> Path:
    ds.file_meta.TransferSyntaxUID = ts
    ds.save_as(
        path,
        enforce_file_format=True,
        little_endian=ts != ExplicitVRBigEndian,
        implicit_vr=ts == ImplicitVRLittleEndian,
    )
    return path


def _signed8(d: Path, rng: np.random.Generator) -> Path:
    ds = _base(37, 41, spp=1, bits=8, stored=8, signed=1, photometric="MONOCHROME2")
    ds.PixelData = rng.integers(-128, 128, (37, 41), dtype=np.int8).tobytes()
    return _save(ds, d / "signed8.dcm")


def _signed12(d: Path, rng: np.random.Generator) -> Path:
    # 12 bits stored in 16: the high 4 bits hold garbage that pydicom ignores (sign-extends bit 11).
    ds = _base(32, 30, spp=1, bits=16, stored=12, signed=1, photometric="MONOCHROME2")
    ds.PixelData = rng.integers(0, 65536, (32, 30), dtype=np.uint16).tobytes()
    return _save(ds, d / "signed12.dcm")


def _mono1_frames(d: Path, rng: np.random.Generator) -> Path:
    ds = _base(20, 24, spp=1, bits=16, stored=16, signed=0, photometric="MONOCHROME1", frames=3)
    ds.PixelData = rng.integers(0, 65536, (3, 20, 24), dtype=np.uint16).tobytes()
    return _save(ds, d / "mono1_frames.dcm", ImplicitVRLittleEndian)


def _rgb_planar(d: Path, rng: np.random.Generator) -> Path:
    ds = _base(15, 17, spp=3, bits=8, stored=8, signed=0, photometric="RGB", frames=2)
    ds.PlanarConfiguration = 1
    ds.PixelData = rng.integers(0, 256, (2, 3, 15, 17), dtype=np.uint8).tobytes()
    return _save(ds, d / "rgb_planar.dcm")


def _ybr_full(d: Path, rng: np.random.Generator) -> Path:
    ds = _base(16, 18, spp=3, bits=8, stored=8, signed=0, photometric="YBR_FULL")
    rgb = rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    return _save(ds, d / "ybr_full.dcm")


def _palette16(d: Path, rng: np.random.Generator) -> Path:
    ds = _base(12, 14, spp=1, bits=16, stored=16, signed=0, photometric="PALETTE COLOR")
    ds.PixelData = rng.integers(100, 356, (12, 14), dtype=np.uint16).tobytes()
    for color in ("Red", "Green", "Blue"):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [256, 100, 16])
        setattr(
            ds, f"{color}PaletteColorLookupTableData", rng.integers(0, 65536, 256, dtype=np.uint16).tobytes()
        )
    return _save(ds, d / "palette16.dcm")


def _jpeg57(d: Path, _rng: np.random.Generator) -> Path:
    # DCMTK's dcmcjpeg: JPEG lossless, process 14, selection value 6 -> transfer syntax .57
    out = d / "jpeg57.dcm"
    subprocess.run(
        ["dcmcjpeg", "+el", "+sv", "6", str(get_testdata_file("CT_small.dcm")), str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def _dcmcjpeg(name: str, source: str, *options: str) -> Callable[[Path, np.random.Generator], Path]:
    # DCMTK's dcmcjpeg (+ee: JPEG extended, 12-bit for 12-bit sources; .51)
    def make(d: Path, _rng: np.random.Generator) -> Path:
        out = d / f"{name}.dcm"
        subprocess.run(
            ["dcmcjpeg", *options, str(get_testdata_file(source)), str(out)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return out

    return make


def _jls_signed12(d: Path, rng: np.random.Generator) -> Path:
    # DCMTK's dcmcjpls: JPEG-LS lossless of signed 12-bit data (pydicom sign-corrects it)
    ds = _base(33, 35, spp=1, bits=16, stored=12, signed=1, photometric="MONOCHROME2")
    ds.PixelData = rng.integers(-2048, 2048, (33, 35), dtype=np.int16).tobytes()
    src = _save(ds, d / "jls_src.dcm")
    out = d / "jls_signed12.dcm"
    subprocess.run(["dcmcjpls", "+el", str(src), str(out)], check=True, capture_output=True, timeout=60)
    return out


def _rle_ybr(d: Path, rng: np.random.Generator) -> Path:
    ds = dcmread(_ybr_full(d, rng))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return _save(ds, d / "rle_ybr.dcm", RLELossless)


def _htj2k(
    name: str, ts: str, arr: np.ndarray, *, bits: int, signed: int, photometric: str
) -> Callable[[Path, np.random.Generator], Path]:
    def make(d: Path, _rng: np.random.Generator) -> Path:
        rows, cols = arr.shape[:2]
        spp = arr.shape[2] if arr.ndim == 3 else 1
        raw, j2c = d / f"{name}.raw", d / f"{name}.j2c"
        raw.write_bytes(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        subprocess.run(
            [
                NODE or "node",
                str(VIEWER / "tools" / "htj2k-encode.mjs"),
                str(raw),
                str(j2c),
                str(cols),
                str(rows),
                str(bits),
                str(spp),
                str(signed),
            ],
            check=True,
            capture_output=True,
            timeout=60,
            cwd=VIEWER,
        )
        ds = _base(
            rows,
            cols,
            spp=spp,
            bits=8 if bits <= 8 else 16,
            stored=bits,
            signed=signed,
            photometric=photometric,
        )
        ds.PixelData = encapsulate([j2c.read_bytes()])
        ds["PixelData"].VR = "OB"
        return _save(ds, d / f"{name}.dcm", ts)

    return make


_RNG = np.random.default_rng(13)
MADE: dict[str, Callable[[Path, np.random.Generator], Path]] = {
    "signed8": _signed8,
    "signed12": _signed12,
    "mono1_frames": _mono1_frames,
    "rgb_planar": _rgb_planar,
    "ybr_full": _ybr_full,
    "palette16": _palette16,
    "jpeg57": _jpeg57,
    "jpeg51_12bit": _dcmcjpeg("jpeg51_12bit", "examples_overlay.dcm", "+ee"),
    "jpeg51_8bit": _dcmcjpeg("jpeg51_8bit", "image_dfl.dcm", "+ee"),
    "rle_ybr": _rle_ybr,
    "jls_signed12": _jls_signed12,
    "htj2k_lossless_s16": _htj2k(
        "htj2k_lossless_s16",
        HTJ2KLossless,
        _RNG.integers(-2000, 3000, (40, 33), dtype=np.int16),
        bits=16,
        signed=1,
        photometric="MONOCHROME2",
    ),
    "htj2k_rpcl_u12": _htj2k(
        "htj2k_rpcl_u12",
        HTJ2KLosslessRPCL,
        _RNG.integers(0, 4096, (31, 29), dtype=np.uint16),
        bits=12,
        signed=0,
        photometric="MONOCHROME2",
    ),
    "htj2k_rgb8": _htj2k(
        "htj2k_rgb8",
        HTJ2KLossless,
        _RNG.integers(0, 256, (21, 19, 3), dtype=np.uint8),
        bits=8,
        signed=0,
        photometric="YBR_RCT",
    ),
    "htj2k_u8": _htj2k(
        "htj2k_u8",
        HTJ2K,
        _RNG.integers(0, 256, (24, 26), dtype=np.uint8),
        bits=8,
        signed=0,
        photometric="MONOCHROME2",
    ),
}


@dataclass
class Decoded:
    meta: dict[str, object]
    values: np.ndarray | None
    path: Path


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Decoded]:
    d = tmp_path_factory.mktemp("dvdecode")
    rng = np.random.default_rng(2026)
    paths: dict[str, Path] = {n: Path(str(get_testdata_file(n))) for n in PYDICOM_FILES}
    for name, make in MADE.items():
        paths[name] = make(d, rng)
    jobs = [{"path": str(p), "out": str(d / f"{i}.bin")} for i, p in enumerate(paths.values())]
    (d / "list.json").write_text(json.dumps(jobs))
    run = subprocess.run(
        [NODE or "node", str(VIEWER / "tools" / "decode-cli.mjs"), str(d / "list.json")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=VIEWER,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    by_path = {line["path"]: line for line in lines}
    result = {}
    for (name, path), job in zip(paths.items(), jobs, strict=True):
        meta = by_path[str(path)]
        values = None
        if meta["ok"]:
            values = np.frombuffer(
                Path(job["out"]).read_bytes(), dtype=np.dtype(str(meta["dtype"])).newbyteorder("<")
            )
        result[name] = Decoded(meta, values, path)
    return result


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding:UserWarning")
@pytest.mark.parametrize("name", PYDICOM_FILES + list(MADE))
def test_viewer_decodes_like_pydicom(decoded: dict[str, Decoded], name: str) -> None:
    got = decoded[name]
    assert got.meta["ok"], got.meta.get("error")
    assert got.values is not None
    want = dcmread(got.path).pixel_array
    assert got.values.size == want.size, (got.meta, want.shape)
    values = got.values.reshape(want.shape)
    assert values.dtype.kind == want.dtype.kind, (values.dtype, want.dtype)
    tol = TOLERANCE.get(name, 0)
    if tol == 0:
        np.testing.assert_array_equal(values, want)
    else:
        diff = np.abs(values.astype(np.int64) - want.astype(np.int64))
        assert diff.max() <= tol, f"max difference {diff.max()} > {tol}"
        assert diff.mean() < 1.0, f"mean difference {diff.mean()}"


def test_multi_frame_and_photometric_reported(decoded: dict[str, Decoded]) -> None:
    assert decoded["examples_ybr_color.dcm"].meta["frames"] == 30
    assert decoded["examples_ybr_color.dcm"].meta["photometric"] == "RGB"
    assert decoded["SC_ybr_full_422_uncompressed.dcm"].meta["photometric"] == "RGB"
    assert decoded["mono1_frames"].meta["photometric"] == "MONOCHROME1"
    assert decoded["palette16"].meta["photometric"] == "PALETTE COLOR"
    assert decoded["examples_jpeg2k.dcm"].meta["photometric"] == "RGB"  # YBR_RCT, inverse RCT applied
    assert decoded["rle_ybr"].meta["photometric"] == "RGB"
    assert decoded["rtdose.dcm"].meta["frames"] == 15
