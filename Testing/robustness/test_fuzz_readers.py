"""Fuzzing the image readers (issue 6, item 2): random bytes, mutated files and mutated headers in
every accepted file format. Property: ``as_image`` returns a checked 3-D float32 image or raises
the engine's own ``PancreasSSLSegError``; never another exception, never a hang.

Seeds are a small crop of the real 3 mm CT, written by SimpleITK in each format. Iterations are
fixed and derandomized (``EXAMPLES`` per test, no example database) so CI is bounded and
repeatable. With random seeds, a NIfTI whose sform rows (``srow``, byte 280) hold -inf and
~1e16 values makes ``SimpleITK.ReadImage`` itself hang (> 20 s; the engine's ``header_guards``
check the header first; a hang in C code cannot be interrupted from a test).
"""

from __future__ import annotations

import gzip
import resource
import struct
from contextlib import contextmanager
from pathlib import Path

import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pancreas_ssl_seg.errors import PancreasSSLSegError
from pancreas_ssl_seg.ct_plausibility import check_ct_intensities
from pancreas_ssl_seg.image_io import as_image

FORMATS = (".nii", ".nii.gz", ".nrrd", ".mha")
EXAMPLES = 150
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=3000, database=None,
                         derandomize=True, suppress_health_check=[HealthCheck.too_slow])
# Address space the reader may add while fuzzing: a header declaring a huge volume must fail
# as an allocation error here, not take the shared test machine's memory.
READER_HEADROOM_BYTES = 2 << 30

# NIfTI-1 header fields (byte offset, struct format) a hostile or broken writer can set.
NIFTI_FIELDS = {
    "sizeof_hdr": (0, "i"), "dim": (40, "8h"), "intent_code": (68, "h"), "datatype": (70, "h"),
    "bitpix": (72, "h"), "pixdim": (76, "8f"), "vox_offset": (108, "f"), "scl_slope": (112, "f"),
    "scl_inter": (116, "f"), "qform_code": (252, "h"), "sform_code": (254, "h"),
    "quatern_bcd": (256, "3f"), "qoffset": (268, "3f"), "srow": (280, "12f"),
}
INT16 = st.integers(-(1 << 15), (1 << 15) - 1)
FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
# Header values worth trying besides random ones: zero, negative, huge, non-numbers.
TEXT_TOKENS = st.one_of(
    st.sampled_from(["0", "-1", "1e308", "nan", "inf", "-0", "4294967297", "2", "4", "",
                     "gzip", "raw", "ascii", "hex", "bzip2", "big", "little", "float", "uchar",
                     "double", "MET_DOUBLE", "MET_UCHAR", "MET_FLOAT_ARRAY", "True", "False",
                     "(1,0,0) (0,1,0)", "(nan,0,0) (0,0,0) (0,0,1)", "LOCAL", "none"]),
    st.integers(-(1 << 40), 1 << 40).map(str),
    st.floats(allow_nan=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=12))


@contextmanager
def bounded_address_space(headroom_bytes: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    pages = int(Path("/proc/self/statm").read_text(encoding="utf-8").split()[0])
    used_bytes = pages * resource.getpagesize()
    limit = used_bytes + headroom_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def seeds(example_ct: Path, tmp_path_factory) -> dict[str, bytes]:
    """Valid files of a 12×10×6 crop of the real CT, per format (uncompressed, for mutation)."""
    folder = tmp_path_factory.mktemp("seeds")
    crop = sitk.ReadImage(str(example_ct))[50:62, 40:50, 50:56]
    data = {}
    for suffix in (".nii", ".nrrd", ".mha"):
        sitk.WriteImage(crop, str(folder / f"seed{suffix}"), useCompression=False)
        data[suffix] = (folder / f"seed{suffix}").read_bytes()
    data[".nii.gz"] = data[".nii"]           # gzipped when written, after mutation
    return data


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def write_case(folder: Path, suffix: str, content: bytes, gzip_it: bool = True) -> Path:
    path = folder / f"case{suffix}"
    if suffix.endswith(".gz") and gzip_it:
        content = gzip.compress(content, compresslevel=1)
    path.write_bytes(content)
    return path


def reads_or_refuses(path: Path) -> None:
    """The property every fuzz test checks."""
    with bounded_address_space(READER_HEADROOM_BYTES):
        try:
            image = as_image(path)
        except PancreasSSLSegError:
            return
    assert image.GetDimension() == 3 and image.GetPixelID() == sitk.sitkFloat32
    assert isinstance(check_ct_intensities(image), list)


def test_the_seeds_are_read(seeds, work_dir):
    """Control: the unmutated seeds are valid, so mutations start from files that load."""
    for suffix in FORMATS:
        image = as_image(write_case(work_dir, suffix, seeds[suffix]))
        assert image.GetSize() == (12, 10, 6)


@FUZZ_SETTINGS
@given(suffix=st.sampled_from(FORMATS), content=st.binary(max_size=4096),
       gzip_it=st.booleans())
def test_random_bytes(seeds, work_dir, suffix, content, gzip_it):
    reads_or_refuses(write_case(work_dir, suffix, content, gzip_it))


@FUZZ_SETTINGS
@given(suffix=st.sampled_from(FORMATS), data=st.data())
def test_mutated_files(seeds, work_dir, suffix, data):
    """Overwritten bytes, a truncated tail, inserted bytes: anywhere in header or voxels."""
    content = bytearray(seeds[suffix])
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        position = data.draw(st.integers(0, len(content) - 1), label="position")
        kind = data.draw(st.sampled_from(["overwrite", "insert", "delete"]), label="kind")
        chunk = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        if kind == "overwrite":
            content[position:position + len(chunk)] = chunk
        elif kind == "insert":
            content[position:position] = chunk
        else:
            del content[position:position + len(chunk)]
    if data.draw(st.booleans(), label="truncate"):
        content = content[:data.draw(st.integers(0, len(content)), label="length")]
    reads_or_refuses(write_case(work_dir, suffix, bytes(content)))


@FUZZ_SETTINGS
@given(suffix=st.sampled_from([".nii", ".nii.gz"]), field=st.sampled_from(sorted(NIFTI_FIELDS)),
       data=st.data())
def test_mutated_nifti_header_fields(seeds, work_dir, suffix, field, data):
    offset, layout = NIFTI_FIELDS[field]
    count, code = int(layout[:-1] or 1), layout[-1]
    values = data.draw(st.lists({"h": INT16, "i": st.integers(-(1 << 31), (1 << 31) - 1),
                                 "f": FLOAT32}[code], min_size=count, max_size=count),
                       label=field)
    content = bytearray(seeds[suffix])
    struct.pack_into(f"<{layout}", content, offset, *values)
    reads_or_refuses(write_case(work_dir, suffix, bytes(content)))


# SimpleITK 2.x (MetaIO) segfaults on a MetaImage "NDims" outside 1..5 (e.g. -5 or 4294967297);
# header_guards refuses those before ITK reads, so every key is mutated.
UNMUTATED_KEYS: set[str] = set()


def _header_and_body(seed: bytes, suffix: str) -> tuple[list[str], bytes]:
    """Text header lines and the binary rest (NRRD: blank line; MetaImage: ElementDataFile)."""
    if suffix == ".nrrd":
        header, body = seed.split(b"\n\n", 1)
        return header.decode("ascii").split("\n"), b"\n\n" + body
    marker = b"ElementDataFile = LOCAL\n"
    header, body = seed.split(marker, 1)
    return header.decode("ascii").rstrip("\n").split("\n") + [marker.decode().strip()], \
        b"\n" + body


@FUZZ_SETTINGS
@given(suffix=st.sampled_from([".nrrd", ".mha"]), data=st.data())
def test_mutated_text_headers(seeds, work_dir, suffix, data):
    """Header values replaced by zero, negative, huge, non-numeric or random tokens; lines
    dropped or duplicated."""
    lines, body = _header_and_body(seeds[suffix], suffix)
    separator = ": " if suffix == ".nrrd" else " = "
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        index = data.draw(st.integers(1 if suffix == ".nrrd" else 0, len(lines) - 1),
                          label="line")
        key = lines[index].split(separator.strip(), 1)[0].strip()
        if key in UNMUTATED_KEYS:
            continue
        edit = data.draw(st.sampled_from(["value", "drop", "duplicate"]), label="edit")
        if edit == "value":
            tokens = data.draw(st.lists(TEXT_TOKENS, min_size=1, max_size=4), label="value")
            lines[index] = f"{key}{separator}{' '.join(tokens)}"
        elif edit == "drop" and len(lines) > 2:
            del lines[index]
        else:
            lines.insert(index, lines[index])
    content = "\n".join(lines).encode("utf-8", "surrogateescape") + body
    reads_or_refuses(write_case(work_dir, suffix, content))
