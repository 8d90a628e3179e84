"""Every training entry point under ``torchrun --nproc_per_node 2 --standalone`` (gloo on CPU: the code
paths of several GPUs) gives the single-process result.

Each stage runs the way DVC runs it: its ``dvc.yaml`` command (a matrix stage with its item filled in) in a
workspace whose ``data/`` links the small fixture inputs, once as one process and once under torchrun with two.
The params are tiny and chosen so that nothing divides among the processes: validation sets of an odd number
of batches or of a single batch, batches whose rows do not split evenly, an epoch's last batch with fewer rows
than processes (a process without rows), micro-batches of unequal size. Checked: each run ends within
``TIMEOUT`` (a hang is a failure: the whole process group is killed), the outputs are the same set of files
(the per-rank random states ``rng_<rank>.pt`` of a checkpoint apart, the only per-rank files), only the main
process writes (one timing file), and every figure matches the single-process run:

* dropout-free models (LLaMA, Mamba, the EXP3 proxy): the runs differ by floating-point rounding only (a
  batch split in two is summed in another order), so every loss and score agrees within ``TOL``; weights
  within ``TOL_WEIGHTS`` (Adam scales every update to about the learning rate, so a weight whose gradient is
  at rounding level, an embedding row of a token the batch hardly holds, can move by up to the learning rate
  per step either way: the EXP3 proxy's lr is 1e-2);
* BERT and XLNet train with dropout, whose masks come from each process's own random generator: the
  evaluation before training (step 0) agrees within ``TOL``, figures after training steps within
  ``TOL_DROPOUT``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, stage_argv
from test_curriculum import units_dir  # noqa: F401  (shared fixture)
from test_instruct import instruct_dir, pretrained  # noqa: F401  (shared fixtures)

pytestmark = pytest.mark.slow

TIMEOUT = int(os.environ.get("TINYHELEN_TEST_TIMEOUT", "300"))  # seconds per stage run: a hang is a failure
TOL = 2e-4  # absolute, on losses (~7.6 nats) and scores; measured differences: <= 1e-5
TOL_WEIGHTS = 0.02  # absolute, on weights; measured: 6.2e-3 (EXP3 proxy, lr 1e-2), 5e-3 (BERT, XLNet), <= 4e-5 else
TOL_DROPOUT = 0.05  # BERT / XLNet after training steps (other dropout masks); measured: 0.012 (BERT), 0.035 (XLNet)
WORLD_KEYS = {"processes"}  # figures that name the number of processes (1 vs 2), compared apart

_PRETRAIN = dict(seq_len=32, batch_size=5, token_budget=5 * 32 * 3, eval_every=2, log_every=1, checkpoint_every=2,
                 warmup_steps=1, max_train_docs=40, threads=1, device="cpu", eval_tokens=11 * 32)
# per arch: bert evaluates one validation batch (3 blocks: gpu-study's case), xlnet takes 2 micro-batches of
# 3 rows per process (2 + 1), llama and mamba 3 validation batches (5, 5, 1) over 2 processes
PRETRAIN = {"llama": {}, "mamba": {}, "bert": {"eval_tokens": 3 * 32},
            "xlnet": {"batch_size": 6, "grad_accum": 2, "token_budget": 6 * 32 * 3, "eval_tokens": 7 * 32}}
GLUE = dict(tasks=["wnli", "stsb"], lr=[1e-3], seeds=[0], epochs=2, batch_size=5, max_train_examples=11,
            max_eval_examples=23, warmup_steps=1, threads=1, device="cpu")  # epochs of 5, 5, 1 rows; 3 eval batches
EXP3 = {"threads": 1, "device": "cpu", "strategies": ["selfloss"], "seeds": [0],
        "report": {"baselines": ["selfloss"]},  # one strategy: its own baseline
        "reference_lm": dict(steps=3, batch_size=5, seq_len=40),  # 12 validation blocks: batches 5, 5, 2
        "train": dict(max_steps=6, batch_size=7, seq_len=32, eval_every=2, patience=1, start_fraction=0.1,
                      increment=0.1, selfloss_candidates=16, warmup_steps=2, checkpoints=1),
        "glue": {"tasks": ["wnli"], "seeds": [0]}}
TUNE = dict(steps=4, batch_size=5, max_len=64, lr=2e-3, warmup_steps=1, checkpoint_every=2, eval_examples=11,
            device="cpu", threads=1)


# ------------------------------------------------------------------------------------------ running
def stage_outs(stage: str, **item) -> list[str]:
    """The DVC outputs (outs, metrics, plots) of a stage of ``dvc.yaml``, the item filled in."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    paths = [next(iter(o)) if isinstance(o, dict) else o for k in ("outs", "metrics", "plots") for o in spec.get(k, [])]
    for key, value in item.items():
        paths = [p.replace("${item.%s}" % key, str(value)) for p in paths]
    return paths


def workspace(root: Path, params: dict, links: dict[str, Path]) -> Path:
    """A directory laid out like the repository for one stage run: ``params.yaml`` and the inputs, linked."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for rel, target in links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(Path(target).resolve(), target_is_directory=True)
    return root


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: torchrun's workers are not in its process group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def launch(ws: Path, world: int, argv: list[str], what: str, log: str = "WARNING") -> str:
    """Run ``argv`` (a Python script and its arguments) in ``ws``: as one process, or under torchrun with
    ``world`` processes; returns its output."""
    if world > 1:
        argv = [argv[0], "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world), *argv[1:]]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "TINYHELEN_LOG": log,
           "TINYHELEN_TIMINGS_DIR": str(ws / "timings")}
    proc = subprocess.Popen(argv, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(proc.pid), proc.pid]:  # torchrun and every process it started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, _ = proc.communicate()
        pytest.fail(f"{what} with {world} processes did not finish in {TIMEOUT}s (hang):\n{out[-3000:]}")
    assert proc.returncode == 0, f"{what} with {world} processes failed:\n{out[-4000:]}"
    return out


def run_stage(ws: Path, world: int, stage: str, **item) -> None:
    """Run a stage's dvc.yaml command in ``ws`` with ``world`` processes."""
    launch(ws, world, stage_argv(stage, **item), f"{stage} {item}")
    assert len(list((ws / "timings").iterdir())) == 1, "the timing file is written by the main process only"


def written(ws: Path) -> set[str]:
    """Files the run wrote in its workspace (not the linked inputs, not the timing), per-rank files apart."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(ws):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        rel = Path(dirpath).relative_to(ws)
        out |= {(rel / f).as_posix() for f in filenames if not (rel / f).as_posix().startswith("timings/")}
    return {f for f in out if not (Path(f).name.startswith("rng_") and Path(f).name != "rng_0.pt")}


# ------------------------------------------------------------------------------------------ comparing
def close(a, b, tol: float, where: str = "") -> None:
    """``a`` and ``b`` (parsed JSON) are equal up to ``tol`` on every number."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {a.keys()} != {b.keys()}"
        for k in a:
            if k not in WORLD_KEYS:
                close(a[k], b[k], tol, f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, tol, f"{where}[{i}]")
    elif isinstance(a, (int, float)) and not isinstance(a, bool) and a is not None:
        assert isinstance(b, (int, float)) and abs(a - b) <= tol, f"{where}: {a} vs {b} (tolerance {tol})"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _cell(x: str):
    if not x:
        return None
    try:
        return float(x)
    except ValueError:
        return x  # a name (task, strategy) in a run file


def tsv(path: Path) -> list:
    """A TSV output as ``[header lines as {key: value}, column names, rows]`` (run files carry ``# key: <JSON>``
    header lines before their columns)."""
    lines = path.read_text().splitlines()
    meta = {k: json.loads(v) for k, v in (ln[2:].split(": ", 1) for ln in lines if ln.startswith("# "))}
    rows = [ln.split("\t") for ln in lines if not ln.startswith("#")]
    return [meta, rows[0]] + [[_cell(x) for x in r] for r in rows[1:]]


def compare_outputs(one: Path, two: Path, outs: list[str], tol: float) -> None:
    """The DVC outputs of the single-process and the two-process run: same files, same figures."""
    assert written(one) == written(two), (written(one) ^ written(two))
    for out in outs:
        files = sorted(p for p in (one / out).rglob("*") if p.is_file()) if (one / out).is_dir() else [one / out]
        assert files and all(f.exists() for f in files), f"{out} not written"
        for f in files:
            g = two / f.relative_to(one)
            if f.suffix == ".json":
                close(json.loads(f.read_text()), json.loads(g.read_text()), tol, str(f.relative_to(one)))
            elif f.suffix == ".tsv":
                close(tsv(f), tsv(g), tol, str(f.relative_to(one)))
            elif f.suffix == ".safetensors":
                from safetensors.torch import load_file

                a, b = load_file(str(f)), load_file(str(g))
                assert a.keys() == b.keys()
                worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
                assert worst <= max(tol, TOL_WEIGHTS), f"{f.relative_to(one)}: weights differ by {worst}"
            else:
                assert f.read_bytes() == g.read_bytes(), f"{f.relative_to(one)} differs"


def single_and_double(root: Path, params: dict, links: dict[str, Path], stage: str, **item) -> tuple[Path, Path]:
    runs = []
    for world in (1, 2):
        ws = workspace(root / f"world{world}", params, links)
        run_stage(ws, world, stage, **item)
        runs.append(ws)
    return runs[0], runs[1]


# ------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def scratch(tmp_path_factory, tokenizers) -> Path:
    from tinyhelen.exp1.pretrain import save_init

    out = tmp_path_factory.mktemp("scratch") / "llama-scratch"
    save_init("llama", "tiny", tokenizers["leaner"], out, seed=3)
    return out / "final"


@pytest.fixture(scope="module")
def difficulty(tmp_path_factory, units_dir, tokenizers) -> Path:  # noqa: F811
    from tinyhelen.exp3 import runs
    from tinyhelen.exp3.config import Exp3Config

    out = tmp_path_factory.mktemp("difficulty")
    runs.difficulty("selfloss", units_dir, tokenizers["leaner"], Exp3Config(), out / "selfloss.jsonl")
    return out


@pytest.fixture(scope="module")
def exp3_train_runs(tmp_path_factory, units_dir, difficulty, tokenizers) -> tuple[Path, Path]:  # noqa: F811
    """exp3_train@selfloss-0 as one and as two processes (the one-process runs feed exp3_glue)."""
    links = {"data/curriculum/units": units_dir, "data/curriculum/difficulty": difficulty,
             "data/tokenizers/leaner": tokenizers["leaner"]}
    return single_and_double(tmp_path_factory.mktemp("exp3_train"), {"exp3": EXP3}, links, "exp3_train",
                             strategy="selfloss", seed=0)


# ------------------------------------------------------------------------------------------ the stages
@pytest.mark.parametrize("arch", sorted(PRETRAIN))
def test_pretrain(tmp_path, prepared, tokenizers, arch):
    params = {"seed": 3, "models": {"preset": "tiny"}, "pretrain": {**_PRETRAIN, **PRETRAIN[arch]}}
    links = {"data/leaner/corpus": prepared / "corpus" / "leaner", "data/tokenizers/leaner": tokenizers["leaner"]}
    one, two = single_and_double(tmp_path, params, links, "pretrain_leaner", arch=arch)
    dropout = arch in ("bert", "xlnet")
    compare_outputs(one, two, stage_outs("pretrain_leaner", arch=arch), TOL_DROPOUT if dropout else TOL)
    val = f"reports/pretrain/{arch}-leaner/plots/metrics/val_loss.tsv"
    assert tsv(one / val)[2][0] == 0 and abs(tsv(one / val)[2][1] - tsv(two / val)[2][1]) <= TOL  # step 0
    m1, m2 = (json.loads((ws / f"reports/pretrain/{arch}-leaner.json").read_text()) for ws in (one, two))
    assert (m1["processes"], m2["processes"]) == (1, 2) and m1["tokens_seen"] == m2["tokens_seen"]


def test_glue(tmp_path, prepared, scratch):
    params = {"seed": 3, "models": {"preset": "tiny"}, "glue": GLUE}
    links = {"data/leaner/glue": prepared / "glue", "data/models/pretrain/llama-scratch/final": scratch}
    one, two = single_and_double(tmp_path, params, links, "glue", arch="llama", init="scratch")
    compare_outputs(one, two, stage_outs("glue", arch="llama", init="scratch"), TOL)
    assert not (two / "data/glue_work/llama-scratch").exists(), "the work directory of the finished runs is removed"


def test_instruct_tune(tmp_path, pretrained, instruct_dir):  # noqa: F811
    params = {"seed": 5, "instruct": {"tune": TUNE}}
    links = {"data/models/pretrain/llama-leaner/final": pretrained["leaner"], "data/instruct": instruct_dir}
    one, two = single_and_double(tmp_path, params, links, "instruct_tune", pretrain="leaner", tune="ori")
    compare_outputs(one, two, stage_outs("instruct_tune", pretrain="leaner", tune="ori"), TOL)


def test_exp3_reference_lm(tmp_path, units_dir, tokenizers):  # noqa: F811
    links = {"data/curriculum/units": units_dir, "data/tokenizers/leaner": tokenizers["leaner"]}
    one, two = single_and_double(tmp_path, {"exp3": EXP3}, links, "exp3_reference_lm")
    compare_outputs(one, two, stage_outs("exp3_reference_lm"), TOL)


def test_exp3_train(exp3_train_runs):
    one, two = exp3_train_runs
    compare_outputs(one, two, stage_outs("exp3_train", strategy="selfloss", seed=0), TOL)
    assert (one / "data/curriculum/runs/selfloss-s0/checkpoint-6/model.safetensors").exists()


def test_exp3_glue(tmp_path, prepared, tokenizers, exp3_train_runs):
    params = {"seed": 3, "glue": GLUE, "exp3": EXP3}
    links = {"data/curriculum/runs": exp3_train_runs[0] / "data/curriculum/runs",
             "data/tokenizers/leaner": tokenizers["leaner"], "data/leaner/glue": prepared / "glue"}
    one, two = single_and_double(tmp_path, params, links, "exp3_glue")
    compare_outputs(one, two, stage_outs("exp3_glue"), TOL)


# ------------------------------------------------------------------------------------------ resuming
RESUME = {"seed": 3, "models": {"preset": "tiny"}, "pretrain": {**_PRETRAIN, "token_budget": 5 * 32 * 6}}


def resume_workspace(root: Path, prepared: Path, tokenizers: dict[str, Path]) -> Path:
    links = {"data/leaner/corpus": prepared / "corpus" / "leaner", "data/tokenizers/leaner": tokenizers["leaner"]}
    return workspace(root, RESUME, links)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared, tokenizers) -> dict:
    ws = resume_workspace(tmp_path_factory.mktemp("uninterrupted") / "ws", prepared, tokenizers)
    launch(ws, 1, [sys.executable, str(REPO / "tests" / "dist_pretrain.py"), "run", "0"], "pretraining")
    return json.loads((ws / "run.json").read_text())


@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_a_run_resumes_at_another_number_of_processes(tmp_path, prepared, tokenizers, uninterrupted, first, then):
    """A run checkpointed with ``first`` processes and resumed with ``then`` gives the uninterrupted result
    (the checkpoint's state is global: data order, optimizer, rows so far; the random state of a process the
    checkpoint has no file for stays its own, which dropout-free LLaMA does not use)."""
    ws = resume_workspace(tmp_path / "ws", prepared, tokenizers)
    script = [sys.executable, str(REPO / "tests" / "dist_pretrain.py"), "run"]
    launch(ws, first, [*script, "2"], "pretraining stopped after 2 steps")
    assert not json.loads((ws / "run.json").read_text())["final"]["finished"]
    out = launch(ws, then, [*script, "0"], "the resumed pretraining", log="INFO")
    assert "resumed from" in out and "step-0000002" in out
    close(uninterrupted, json.loads((ws / "run.json").read_text()), TOL, "run.json")
