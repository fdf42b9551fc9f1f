"""Discs for the disc viewer's browser tests and bench: ours (`securepacs media create`),
one made only by independent tools (DCMTK dcmmkdir + `openssl cms`), and damaged copies."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless, generate_uid

from factories import ROOT, make_dataset

MARKER = "Viewertest^Zebulon"  # a patient name found nowhere else (persistence check)
CT_SLICES = 12
SECUREPACS = [sys.executable, "-m", "securepacs"]


def ct_series(folder: Path, count: int = CT_SLICES, size: int = 64,
              patient_id: str = "DVTEST01") -> list[Path]:
    """A CT series: unsigned 16-bit, rescale intercept -1024, each slice different."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(ROOT), generate_uid(ROOT)
    yy, xx = np.mgrid[0:size, 0:size]
    paths = []
    for i in range(count):
        ds = make_dataset(patient_id=patient_id, patient_name=MARKER, study_uid=study,
                          series_uid=series, instance_number=i + 1, rows=size, columns=size,
                          study_description="Viewer test CT")
        ds.BitsStored, ds.HighBit = 16, 15
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.SliceLocation = str(float(i * 5))
        r = np.hypot(yy - size / 2, xx - size / 2)
        pixels = np.where(r < size / 3, 1064 + 40 * i, 24).astype(np.uint16) + (xx * 3).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        path = folder / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _copy_with_new_uid(name: str, target: Path, patient_id: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    assert path is not None, f"pydicom's test file {name} is missing"
    ds = dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(ROOT)
    ds.PatientID, ds.PatientName = patient_id, MARKER
    ds.save_as(target, enforce_file_format=True)
    return target


def multiframe(target: Path, frames: int = 6, size: int = 32) -> Path:
    """A multi-frame MR, RLE Lossless (PS3.5 Annex G), each frame different."""
    ds = make_dataset(patient_id="DVTEST03", patient_name=MARKER, modality="MR",
                      rows=size, columns=size, study_description="Viewer test multi-frame")
    ds.NumberOfFrames = frames
    ds.BitsStored, ds.HighBit = 16, 15
    arr = (np.arange(frames * size * size, dtype=np.uint32).reshape(frames, size, size)
           * 37 % 65536).astype(np.uint16)
    ds.PixelData = arr.tobytes()
    ds.compress(RLELossless, arr)
    ds.save_as(target, enforce_file_format=True)
    return target


def sources(folder: Path) -> dict[str, Path]:
    """The images of a test disc, by role: ct0..ct11, j2k, jls, rle_rgb, multiframe."""
    out = {f"ct{i}": p for i, p in enumerate(ct_series(folder / "ct"))}
    other = folder / "other"
    other.mkdir(parents=True, exist_ok=True)
    out["j2k"] = _copy_with_new_uid("MR_small_jp2klossless.dcm", other / "j2k.dcm", "DVTEST02")
    out["jls"] = _copy_with_new_uid("MR_small_jpeg_ls_lossless.dcm", other / "jls.dcm", "DVTEST02")
    out["rle_rgb"] = _copy_with_new_uid("SC_rgb_rle.dcm", other / "rgb.dcm", "DVTEST02")
    out["multiframe"] = multiframe(other / "mf.dcm")
    return out


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def media_create(src: Path, out: Path, password_file: Path, *extra: str | Path,
                 cwd: Path | None = None) -> None:
    """`securepacs media create` as a user runs it (a child process)."""
    done = subprocess.run([*SECUREPACS, "media", "create", str(src), "--out", str(out),
                           "--password-file", str(password_file), *map(str, extra)],
                          capture_output=True, text=True, timeout=300, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr


def openssl_disc(files: list[Path], out: Path, password: str) -> None:
    """DCMTK dcmmkdir makes the DICOMDIR; `openssl cms -encrypt -pwri_password` (its defaults:
    PBKDF2 HMAC-SHA1, 2048 iterations; plain id-data content; AES-128-CBC, since its default
    cipher is 3DES) encrypts every file in place."""
    (out / "DICOM").mkdir(parents=True)
    names = []
    for i, path in enumerate(files):
        shutil.copy(path, out / "DICOM" / f"IM{i:06d}")
        names.append(f"DICOM/IM{i:06d}")
    done = subprocess.run(["dcmmkdir", "+r", "-Pgp", "+I", *names], cwd=out,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    for rel in ["DICOMDIR", *names]:
        plain = out / rel
        sealed = plain.with_name(plain.name + ".CMS")
        done = subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-outform", "DER",
                               "-aes-128-cbc", "-in", str(plain), "-out", str(sealed),
                               "-pwri_password", password],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        sealed.replace(plain)


def damage(disc: Path, out: Path, tampered: str, truncated: str) -> None:
    """A copy of `disc` with one file changed in its ciphertext and another cut short."""
    shutil.copytree(disc, out)
    data = bytearray((out / tampered).read_bytes())
    data[len(data) - 40] ^= 0x55  # inside the last ciphertext blocks: padding/digest breaks
    (out / tampered).write_bytes(bytes(data))
    cut = (out / truncated).read_bytes()
    (out / truncated).write_bytes(cut[: len(cut) * 2 // 3])
