"""The ``pancreas-ssl-seg`` CLI: outputs, progress lines, bad inputs, batches, resume, ``info``.

Most tests replace the pipeline by a fast stand-in (``fake_segment``) so they check the CLI's own
job; ``test_end_to_end_*`` run the real pipeline with the tiny random bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_image_io import BAD_INPUTS
from test_outputs import FakeResult, same_grid, write_fake_preview

from pancreas_ssl_seg import case_files, cli, cli_segment, outputs
from pancreas_ssl_seg.errors import DeviceError
from pancreas_ssl_seg.image_io import as_image

OUTPUT_NAMES = ("{}_labels.nii.gz", "{}_uncertainty.nii.gz", "{}_regions.nii.gz", "{}.seg.nrrd",
                "{}_report.json", "{}_preview.png")


class FakeSegment:
    """Stands in for ``segment``: a box of pancreas in the middle, progress in three stages."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, path, *, model, device, uncertainty, progress, fast, uncertainty_threshold):
        image = as_image(path)
        self.calls.append({"size": image.GetSize(), "device": device, "fast": fast,
                           "uncertainty": uncertainty, "threshold": uncertainty_threshold})
        for index, stage in enumerate(("coarse", "fine", "case_done")):
            progress(stage, index / 2, f"{stage} stage")
        shape = image.GetSize()[::-1]
        labels = np.zeros(shape, np.uint8)
        centre = tuple(slice(s // 3, max(s // 3 + 1, 2 * s // 3)) for s in shape)
        labels[centre] = 1
        uncertainty_map = labels.astype(np.float32) * 0.6
        report = {"case": None, "input": {"size": list(image.GetSize())},
                  "model": {"name": model.name, "version": model.version},
                  "segments": model.labels, "uncertain_region": model.metadata["uncertain_region"],
                  "warnings": ["from segment"]}
        return FakeResult(image, labels, uncertainty_map, (uncertainty_map > 0.5).astype(np.int32),
                          report)


@pytest.fixture(name="fake_segment")  # other modules import fake_segment_fixture to use it
def fake_segment_fixture(monkeypatch) -> FakeSegment:
    fake = FakeSegment()
    monkeypatch.setattr(cli_segment, "_segment", fake)
    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)
    return fake


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_case_outputs(out_dir: Path, case: str, reference: sitk.Image) -> None:
    for pattern in OUTPUT_NAMES:
        assert (out_dir / pattern.format(case)).is_file(), pattern.format(case)
    for suffix in ("_labels.nii.gz", "_uncertainty.nii.gz", "_regions.nii.gz"):
        assert same_grid(sitk.ReadImage(str(out_dir / f"{case}{suffix}")), reference), suffix


def test_segments_real_nifti_on_its_exact_grid(capsys, tmp_path, example_ct, random_bundle,
                                               fake_segment):
    code, out, err = run(capsys, "segment", example_ct, "-o", tmp_path, "--model", random_bundle,
                         "--device", "cpu", "--fast", "--uncertainty-threshold", "0.3",
                         "--progress", "none")
    # one final line for people; the stand-in's report has no verdict to count; one case: no
    # batch summary
    assert (code, out, err) == (0, "1 case: 1 segmented, 0 skipped, 0 errors | quality: 0 ok, "
                                   "0 check, 0 failed\n", "")
    assert not (tmp_path / "summary.csv").exists()
    assert_case_outputs(tmp_path, "example_ct", sitk.ReadImage(str(example_ct)))
    assert fake_segment.calls == [{"size": (122, 101, 112), "device": "cpu", "fast": True,
                                   "uncertainty": True, "threshold": 0.3}]
    report = json.loads((tmp_path / "example_ct_report.json").read_text(encoding="utf-8"))
    assert report["case"] == "example_ct" and report["model"]["name"] == "tiny-random"
    assert report["input"]["path"] == str(example_ct)


def test_dicom_folder_and_json_progress(capsys, tmp_path, shared_data, random_bundle,
                                        fake_segment):
    folder = shared_data / "ct-dicom-series"
    code, out, err = run(capsys, "segment", folder, "-o", tmp_path, "--model", random_bundle,
                         "--progress", "json")
    assert code == 0, err
    assert_case_outputs(tmp_path, "ct-dicom-series", as_image(folder))
    records = [json.loads(line) for line in out.splitlines()]
    # a case ends with "case_done"; "done" is only the run's last line
    assert [r["stage"] for r in records] == ["coarse", "fine", "case_done", "done"]
    assert all(set(r) >= {"stage", "fraction"} and 0 <= r["fraction"] <= 1 for r in records)
    assert records[0]["case"] == "ct-dicom-series"
    done = records[-1]
    assert (done["status"], done["fraction"], done["cases_ok"]) == ("ok", 1.0, 1)
    assert done["cases"][0]["outputs"]["labels"].endswith("ct-dicom-series_labels.nii.gz")
    # a DICOM series folder is one case, not a batch: no summary
    assert done["quality"] == {"ok": 0, "check": 0, "failed": 0} and "summary" not in done
    assert not (tmp_path / "summary.csv").exists()


class VerdictSegment(FakeSegment):
    """The stand-in with a quality verdict per case: ``verdicts[file name] = (status, score)``."""

    def __init__(self, verdicts: dict[str, tuple[str, float]]):
        super().__init__()
        self.verdicts = verdicts

    def __call__(self, path, **options):
        result = super().__call__(path, **options)
        status, score = self.verdicts[Path(path).name]
        result.report["quality"] = {"score": score, "status": status,
                                    "reasons": [f"{status} because"], "signals": {}}
        return result


@pytest.mark.parametrize("progress", ["none", "bar", "json"])
def test_final_line_counts_cases_per_run_status_and_verdict(progress, capsys, tmp_path,
                                                            example_ct, random_bundle,
                                                            monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = sitk.ReadImage(str(example_ct))[40:70, 30:60, 40:60]
    verdicts = {"a.nii.gz": ("check", 0.4), "b.nii.gz": ("ok", 0.8), "c.nii.gz": ("failed", 0.1),
                "d.nii.gz": ("check", 0.3)}
    for name in verdicts:
        sitk.WriteImage(image, str(inputs / name))
    (inputs / "e.nii.gz").write_text("broken", encoding="utf-8")
    monkeypatch.setattr(cli_segment, "_segment", VerdictSegment(verdicts))
    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)
    out_dir = tmp_path / "out"
    # d first: skipped in the run below, its verdict read from its report
    assert run(capsys, "segment", inputs / "d.nii.gz", "-o", out_dir, "--model", random_bundle,
               "--progress", "none")[0] == 0
    code, out, err = run(capsys, "segment", inputs, "-o", out_dir, "--model", random_bundle,
                         "--progress", progress)
    assert code == 1 and "error: e.nii.gz" in err
    if progress == "json":
        done = json.loads(out.splitlines()[-1])
        assert done["quality"] == {"ok": 1, "check": 2, "failed": 1}
        assert (done["cases_ok"], done["cases_skipped"], done["cases_failed"]) == (3, 1, 1)
        assert done["summary"] == str(out_dir / "summary.csv")
        assert all(line.startswith("{") for line in out.splitlines())  # JSON lines only
    else:
        assert out == ("5 cases: 3 segmented, 1 skipped, 1 error | quality: 1 ok, 2 check, "
                       f"1 failed | summary: {out_dir / 'summary.csv'}\n")
    order = [line.split(",")[0] for line in
             (out_dir / "summary.csv").read_text(encoding="utf-8").splitlines()[1:]]
    assert order == ["e", "c", "d", "a", "b"]


@pytest.mark.parametrize("kind", ["missing", "text_named_nii_gz", "truncated_gzip", "2d", "4d",
                                  "rgb", "empty_folder", "constant", "all_nan",
                                  "zero_spacing_nifti"])
def test_bad_input_exit_2_one_line_no_outputs(kind, capsys, tmp_path, example_ct, random_bundle,
                                              fake_segment):
    make, message = BAD_INPUTS[kind]
    (tmp_path / "in").mkdir()
    bad = make(tmp_path / "in", example_ct)
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "segment", bad, "-o", out_dir, "--model", random_bundle,
                         "--progress", "json")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert bad.name in lines[0]
    done = json.loads(out.splitlines()[-1])
    assert (done["stage"], done["status"]) == ("done", "error") and bad.name in done["message"]
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    assert fake_segment.calls == []


def test_batch_with_one_bad_case_runs_the_others(capsys, tmp_path, example_ct, random_bundle,
                                                 fake_segment):
    bad = tmp_path / "broken.nii.gz"
    bad.write_text("not an image", encoding="utf-8")
    code, out, err = run(capsys, "segment", bad, example_ct, "-o", tmp_path / "out",
                         "--model", random_bundle)
    assert code == 1
    assert err.splitlines() == [err.splitlines()[0]] and err.startswith("error: ")
    assert "broken.nii.gz" in err
    assert case_files.case_is_complete(tmp_path / "out", "example_ct")
    assert not any(p.name.startswith("broken") for p in (tmp_path / "out").iterdir())


def test_folder_of_images_expands_to_cases_and_resume_skips(capsys, tmp_path, example_ct,
                                                            random_bundle, fake_segment):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = sitk.ReadImage(str(example_ct))
    sitk.WriteImage(image[40:80, 30:70, 40:70], str(inputs / "a.nii.gz"))
    sitk.WriteImage(image[30:90, 20:80, 30:60], str(inputs / "b.nrrd"))
    (inputs / "notes.txt").write_text("ignored", encoding="utf-8")
    out_dir = tmp_path / "out"
    assert run(capsys, "segment", inputs, "-o", out_dir, "--model", random_bundle)[0] == 0
    assert len(fake_segment.calls) == 2
    assert case_files.case_is_complete(out_dir, "a") and case_files.case_is_complete(out_dir, "b")
    before = (out_dir / "a_labels.nii.gz").stat().st_mtime_ns

    code, out, err = run(capsys, "segment", inputs, "-o", out_dir, "--model", random_bundle,
                         "--progress", "json")
    assert code == 0 and len(fake_segment.calls) == 2  # nothing segmented again
    done = json.loads(out.splitlines()[-1])
    assert (done["cases_skipped"], done["cases_ok"]) == (2, 0)
    assert (out_dir / "a_labels.nii.gz").stat().st_mtime_ns == before

    (out_dir / "b_preview.png").unlink()  # an incomplete case is redone
    assert run(capsys, "segment", inputs, "-o", out_dir, "--model", random_bundle)[0] == 0
    assert len(fake_segment.calls) == 3
    assert run(capsys, "segment", inputs, "-o", out_dir, "--model", random_bundle,
               "--overwrite")[0] == 0
    assert len(fake_segment.calls) == 5


def test_duplicate_case_names_fail_the_second(capsys, tmp_path, example_ct, random_bundle,
                                              fake_segment):
    (tmp_path / "x").mkdir()
    copy = tmp_path / "x" / example_ct.name
    copy.write_bytes(example_ct.read_bytes())
    code, _, err = run(capsys, "segment", example_ct, copy, "-o", tmp_path / "out",
                       "--model", random_bundle)
    assert code == 1 and "already used" in err and len(fake_segment.calls) == 1


def test_bad_bundle_and_device_stop_the_run_with_exit_2(capsys, tmp_path, example_ct,
                                                        random_bundle, monkeypatch):
    not_a_bundle = tmp_path / "bundle"
    not_a_bundle.mkdir()
    code, _, err = run(capsys, "segment", example_ct, "-o", tmp_path / "out",
                       "--model", not_a_bundle)
    assert code == 2 and len(err.splitlines()) == 1 and "bundle" in err
    assert not (tmp_path / "out").exists()

    calls = []

    def no_gpu(image, **options):
        calls.append(options["device"])
        raise DeviceError("--device cuda: no CUDA GPU is available here")

    monkeypatch.setattr(cli_segment, "_segment", no_gpu)
    code, _, err = run(capsys, "segment", example_ct, example_ct.parent, "-o", tmp_path / "out",
                       "--model", random_bundle, "--device", "cuda")
    assert code == 2 and err.strip() == "error: --device cuda: no CUDA GPU is available here"
    assert calls == ["cuda"]  # the second input was not tried


def test_unexpected_error_is_one_line_exit_1(capsys, tmp_path, example_ct, random_bundle,
                                             monkeypatch):
    def broken(image, **options):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_segment, "_segment", broken)
    code, out, err = run(capsys, "segment", example_ct, "-o", tmp_path, "--model", random_bundle,
                         "--progress", "json")
    assert code == 1
    assert err.strip() == f"error: {example_ct}: unexpected ZeroDivisionError: division by zero"
    assert json.loads(out.splitlines()[-1])["status"] == "error"


def test_bad_arguments_exit_2(capsys, tmp_path, example_ct):
    with pytest.raises(SystemExit) as exited:
        cli.main(["segment", str(example_ct), "-o", str(tmp_path), "--uncertainty-threshold", "2"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        cli.main(["segment", "--help"])
    assert exited.value.code == 0
    assert "exit codes:" in capsys.readouterr().out


def test_info_prints_bundle_summary(capsys, random_bundle, tmp_path):
    code, out, err = run(capsys, "info", "--model", random_bundle)
    assert code == 0 and err == ""
    assert "tiny-random 0.0.1" in out and "Apache-2.0" in out
    assert "1  Pancreas" in out and "2  Pancreatic lesion" in out
    assert "coarse  2-D, spacing [6.0, 6.0, 6.0] mm" in out and "margin 15 mm" in out
    code, out, err = run(capsys, "info", "--model", tmp_path / "nothing")
    assert code == 2 and out == "" and len(err.splitlines()) == 1


def test_dicom_folder_with_missing_slice_exit_2(capsys, tmp_path, shared_data, random_bundle,
                                                fake_segment):
    from test_image_io import copy_series, dicom_files
    files = dicom_files(shared_data / "ct-dicom-series")
    folder = copy_series(files[:9] + files[10:], tmp_path / "gap-series")
    code, _, err = run(capsys, "segment", folder, "-o", tmp_path / "out", "--model", random_bundle)
    assert code == 2 and err.startswith("error: gap-series: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and fake_segment.calls == []


@pytest.fixture(scope="module")
def coarse_random_bundle(tmp_path_factory) -> Path:
    """The tiny random bundle at coarse spacings (8 mm / 4 mm): random weights find "pancreas"
    everywhere, so the fine stage covers the whole scan; coarse grids keep that fast on CPU."""
    import torch
    from conftest import tiny_metadata

    from pancreas_ssl_seg.bundle import save_bundle
    from pancreas_ssl_seg.networks import build_network

    torch.manual_seed(0)
    metadata = tiny_metadata(name="tiny-coarse")
    metadata["stages"]["coarse"]["spacing_mm"] = [8.0, 8.0, 8.0]
    metadata["stages"]["fine"]["spacing_mm"] = [4.0, 4.0, 4.0]
    weights = {stage: build_network(metadata["stages"][stage]["network"]).state_dict()
               for stage in ("coarse", "fine")}
    return save_bundle(tmp_path_factory.mktemp("bundles") / "tiny-coarse", metadata, weights,
                       "# Random test bundle\nNot a model.\n")


def test_end_to_end_real_ct_and_dicom_series(capsys, tmp_path, example_ct, shared_data,
                                             coarse_random_bundle):
    """The real pipeline: both real scans, all six outputs on each input's exact grid."""
    folder = shared_data / "ct-dicom-series"
    code, out, err = run(capsys, "segment", example_ct, folder, "-o", tmp_path,
                         "--model", coarse_random_bundle, "--device", "cpu", "--progress", "json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1]["stage"] == "done" and records[-1]["status"] == "ok"
    assert [r["stage"] for r in records].count("done") == 1
    assert {r["case"] for r in records[:-1]} == {"example_ct", "ct-dicom-series"}
    assert all(0.0 <= r["fraction"] <= 1.0 for r in records)
    for case, reference in [("example_ct", sitk.ReadImage(str(example_ct))),
                            ("ct-dicom-series", as_image(folder))]:
        assert_case_outputs(tmp_path, case, reference)
        report = json.loads((tmp_path / f"{case}_report.json").read_text(encoding="utf-8"))
        assert report["case"] == case and report["model"]["name"] == "tiny-coarse"
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{case}_labels.nii.gz")))
        assert set(np.unique(labels)) <= {0, 1, 2}
        uncertainty = sitk.GetArrayFromImage(
            sitk.ReadImage(str(tmp_path / f"{case}_uncertainty.nii.gz")))
        assert uncertainty.min() >= 0.0 and uncertainty.max() <= 1.0
        assert [s["name"] for s in report["segments"]][1:] == ["Pancreas", "Pancreatic lesion"]
