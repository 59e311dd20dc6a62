"""`make all` in one process: each run's models, graphs and optimizer are released when it ends."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT, spec_file, write_competition

SCHEDULE = [{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-3, "patience": 0},
            {"name": "finetune", "trainable": "top:1", "epochs": 1, "lr": 1e-4, "patience": 0}]


@pytest.mark.slow
def test_memory_after_three_rounds_of_two_backbones_is_what_the_first_round_left(tmp_path):
    """Resident memory (TensorFlow reports no allocator figures on a CPU) after each run of
    vgg16, resnet50, vgg16, ... in a fresh process. Before runs were released, each one kept its
    model's worth, and more."""
    write_competition(tmp_path / "data")
    spec = spec_file(tmp_path, backbones=["vgg16", "resnet50"], schedule=SCHEDULE)
    script = textwrap.dedent(f"""
        import json, os
        from kit.config import load_spec
        from kit.train import run_fold

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        spec, seen = load_spec({str(spec)!r}), []
        for round in range(3):
            for backbone in spec.backbones:
                run_fold(spec, backbone, round % 2, force=True)
                seen.append(rss())
        print(json.dumps(seen))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    assert max(rss[2:]) - max(rss[:2]) < 60, rss  # the first round of the two backbones set the level


def test_out_of_memory_in_make_all_names_the_run_and_how_to_go_on(tmp_path, monkeypatch, capsys):
    import kit.train
    from kit.cli import main

    calls = []

    def run_fold(spec, backbone, fold, force=False, wait=False):
        calls.append(f"{backbone}/fold{fold}")
        if len(calls) == 2:
            raise MemoryError()
    monkeypatch.setattr(kit.train, "run_fold", run_fold)
    write_competition(tmp_path / "data")
    assert main(["all", f"competition={spec_file(tmp_path)}"]) == 2
    assert calls == ["vgg16/fold0", "vgg16/fold1"]
    assert capsys.readouterr().err.strip() == (
        "error: vgg16/fold1 ran out of memory (MemoryError): the finished runs are kept and make all again "
        "goes on from this one (a smaller batch_size or image_size needs less)")
